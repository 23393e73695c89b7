"""SDK: "Compute mask proposals": SAM's automatic masks for every sample, as ``fo.Detections``.

Example::

    import samtext

    summary = samtext.compute_mask_proposals(dataset, out_field="proposals")
    patches = dataset.to_patches("proposals")  # one patch per proposal, for the App and the Embeddings panel

Each proposal is a ``fo.Detection`` labelled "proposal" with its box, its mask cropped to the box, a
``confidence`` (SAM's predicted IoU), ``predicted_iou``, ``stability_score`` and ``area`` (pixels). Each also gets
an embedding (CLIP on its masked crop, or SAM's features under it), kept out of the database in an
:class:`samtext.run.store.EmbeddingStore` keyed by the detection's id; :func:`proposal_embeddings` reads them. The
run itself (targets, resume, errors, writes, records) is :func:`samtext.run.driver.iter_run`'s.
"""

from typing import Callable, Optional, Union

from .. import names
from ..models import load_clip, load_sam, sam_record
from ..pipelines.embeddings import EmbeddedProposals
from ..pipelines.proposals import PROPOSAL_LABEL, ProposalGenerator
from ..run import driver, records
from ..run.store import EmbeddingSidecar, EmbeddingStore, default_root
from ..settings import ProposalSettings, RunOptions, signature_with
from ..errors import SamtextError

ACTION = ProposalSettings.action
DEFAULT_FIELD = names.PROPOSALS_FIELD


def proposals_action(settings: Optional[ProposalSettings] = None) -> driver.Action:
    """Checks the settings and returns the :class:`samtext.run.driver.Action` (the models load only when the
    driver builds it).

    Raises:
        ValueError: a bad model, embedder, device, precision or knob; creates nothing.
    """
    s = settings = (settings or ProposalSettings()).check()
    record = settings.record()
    stores = []  # the run's embedding store, once the driver has opened it

    def build():
        generator = ProposalGenerator(load_sam(s.sam_model, s.sam_checkpoint, s.device, s.precision), settings)
        clip = None
        if s.uses_clip():
            clip = load_clip(s.clip_model, s.clip_pretrained, s.device, s.precision, s.clip_checkpoint)
        return EmbeddedProposals(generator, s.embedder, clip, s.crop_context) if s.embedder else generator

    def info(labeller):
        learnt = {}
        generator = getattr(labeller, "generator", labeller)
        if isinstance(generator, ProposalGenerator):
            learnt.update(points_per_side=generator.side, points_per_batch=generator.batch,
                          models=sam_record(generator.segmenter))
        return learnt

    def local_info():  # the store is this process's (the run's sidecar), also when actors run the models
        return {"embeddings_dir": stores[0].root} if stores else {}

    def sidecar(dataset, fields):
        stores.append(EmbeddingStore(s.embeddings_dir or default_root(dataset.name, fields.out)))
        return EmbeddingSidecar(stores[0], fields.out)

    hint = ("every SAM mask fell below pred_iou_thresh=%s or stability_score_thresh=%s (or min_area=%s); lower them, "
            "e.g. 0.7 and 0.8, or raise points_per_side" % (s.pred_iou_thresh, s.stability_score_thresh, s.min_area))
    return driver.Action(ACTION, [PROPOSAL_LABEL], record, build, info, output="detections",
                         sidecar=sidecar if s.embedder else None, empty_hint=hint, local_info=local_info)


def proposal_embeddings(samples, field: str = DEFAULT_FIELD):
    """``(label_ids, (N, D) float32 vectors)`` of the proposals of ``samples`` in ``field`` that have an
    embedding, in the view's order, read from the store the run that wrote ``field`` recorded.

    Raises:
        ValueError: ``field`` was not written by a proposals run with embeddings.
    """
    dataset, samples = driver.sample_collection(samples)
    record = records.read_run(dataset, records.run_key_for(field))
    if not record or record.get("action") != ACTION:
        raise SamtextError("field %r was not written by compute_mask_proposals; run it first" % field)
    root = (record.get("learnt") or {}).get("embeddings_dir")
    if not root:
        raise SamtextError("the proposals in %r were computed without embeddings (embedder=None)" % field)
    ids = [i for ids in samples.values(field + ".detections.id") for i in (ids or [])]
    return EmbeddingStore(root).load(ids)


def _action(samples, kwargs):
    run, options = driver.split_run_options(kwargs, out_field=DEFAULT_FIELD, save_instances=False)
    if options.get("embedder", "clip") and not options.get("embeddings_dir"):
        # resolved once, here, so that every shard of a run (and its record) names the same folder
        dataset, _ = driver.sample_collection(samples)
        record = records.read_run(dataset, records.run_key_for(run["out_field"])) or {}
        recorded = (record.get("settings") or {}).get("embeddings_dir") if record.get("action") == ACTION else None
        # a resumed run (on a clone too) keeps writing where its record says; a new one goes beside the dataset
        options["embeddings_dir"] = recorded or default_root(dataset.name, run["out_field"])
    return proposals_action(ProposalSettings.from_kwargs(options, "compute_mask_proposals")), run


def iter_compute_mask_proposals(samples, **kwargs) -> driver.Progress:
    """The work of :func:`compute_mask_proposals`, as a generator of ``(done, total)`` progress that returns
    the :class:`samtext.run.driver.RunSummary`."""
    action, run = _action(samples, kwargs)
    return (yield from driver.iter_run(samples, action, **run))


def prepare_compute_mask_proposals(samples, **kwargs) -> int:
    """Checks a run of :func:`compute_mask_proposals` and creates its field and run record without running
    SAM (before a run split into shards is queued). Returns the number of samples to process."""
    action, run = _action(samples, kwargs)
    return driver.prepare_outputs(samples, action, **run)


def compute_mask_proposals(
    samples,
    progress: Union[bool, Callable[[int, int], None], None] = None,
    **kwargs,
) -> driver.RunSummary:
    """Writes SAM's automatic mask proposals of every sample of ``samples`` to a ``fo.Detections`` field.

    One SAM image encoding per image; a grid of point prompts decoded in batches at low resolution; SAM's
    predicted-IoU and stability filters; box NMS; a minimum area; only the kept masks are upscaled.

    Arguments:
        samples: a ``fo.Dataset`` or view (a patches view stands for its images).
        progress: True for a progress bar, or a callable ``(done, total)``.
        **kwargs: the settings (:class:`samtext.settings.ProposalSettings`: SAM's automatic mask generator's
            knobs, ``embedder`` ("clip", "sam" or None), ``embeddings_dir`` (default
            ``~/.samtext/embeddings/<dataset>/<field>``), the models) and the run options
            (:class:`samtext.settings.RunOptions`; ``out_field`` defaults to "samtext_proposals"; ``mask_dir``
            writes the instance masks as PNG files there).

    Returns:
        a :class:`samtext.run.driver.RunSummary`; ``instances`` counts the proposals written.
    """
    return driver.run_with_progress_option(iter_compute_mask_proposals(samples, **kwargs), progress)


signature_with(compute_mask_proposals, ProposalSettings, RunOptions)
