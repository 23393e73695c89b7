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

import os
from typing import Callable, Optional, Union

from ..run import fields as sds

from ..run import records
from ..run import driver
from ..models import (DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED, DEFAULT_SAM, check_model_options, checkpoint_name,
                     load_clip, load_sam, sam_record)
from ..pipelines.embeddings import EMBEDDERS, EmbeddedProposals
from ..pipelines.proposals import PROPOSAL_LABEL, ProposalGenerator, ProposalSettings
from ..run.store import EmbeddingSidecar, EmbeddingStore, default_root

ACTION = "compute_mask_proposals"
DEFAULT_FIELD = "samtext_proposals"


def proposals_action(
    sam_model: str = DEFAULT_SAM,
    sam_checkpoint: Optional[str] = None,
    embedder: Optional[str] = "clip",
    clip_model: str = DEFAULT_CLIP,
    clip_pretrained: Optional[str] = DEFAULT_CLIP_PRETRAINED,
    clip_checkpoint: Optional[str] = None,
    crop_context: float = 0.1,
    embeddings_dir: Optional[str] = None,
    device: str = "auto",
    precision: str = "auto",
    **knobs,
) -> driver.Action:
    """Checks the arguments and returns the :class:`samtext.run.driver.Action` (the models load only when the
    driver builds it). ``knobs`` are :class:`samtext.pipelines.proposals.ProposalSettings`' fields.

    Raises:
        ValueError: an unknown knob, model, embedder, device or precision, or a knob out of range; creates
            nothing.
    """
    unknown = sorted(set(knobs) - set(ProposalSettings.__dataclass_fields__))
    if unknown:
        raise ValueError("unknown option %r for mask proposals; the options are %s"
                         % (unknown[0], ", ".join(sorted(ProposalSettings.__dataclass_fields__))))
    settings = ProposalSettings(**knobs).check()
    if embedder not in EMBEDDERS + (None,):
        raise ValueError("unknown embedder %r; choose one of %s, or None" % (embedder, ", ".join(EMBEDDERS)))
    if not 0.0 <= float(crop_context) <= 1.0:
        raise ValueError("crop_context must be between 0 and 1 (a fraction of the box), got %r" % (crop_context,))
    check_model_options(sam_model, clip_model if embedder == "clip" else None, device, precision)
    record = dict({k: v for k, v in vars(settings).items() if k != "points_per_batch"},  # speed, not results
                  sam_model=sam_model, embedder=embedder,
                  sam_checkpoint=checkpoint_name(sam_checkpoint),
                  embeddings_dir=os.path.abspath(os.path.expanduser(embeddings_dir)) if embeddings_dir else None)
    if embedder == "clip":
        record.update(clip_model=clip_model, clip_pretrained=clip_pretrained, crop_context=float(crop_context),
                      clip_checkpoint=checkpoint_name(clip_checkpoint))
    built = {}

    def build():
        generator = ProposalGenerator(load_sam(sam_model, sam_checkpoint, device, precision), settings)
        clip = None
        if embedder == "clip":
            clip = load_clip(clip_model, clip_pretrained, device, precision, clip_checkpoint)
        built["labeller"] = EmbeddedProposals(generator, embedder, clip, crop_context) if embedder else generator
        return built["labeller"]

    def info():
        learnt = {}
        generator = getattr(built.get("labeller"), "generator", built.get("labeller"))
        if isinstance(generator, ProposalGenerator):
            learnt.update(points_per_side=generator.side, points_per_batch=generator.batch,
                          models=sam_record(generator.segmenter))
        if "store" in built:
            learnt["embeddings_dir"] = built["store"].root
        return learnt

    def sidecar(dataset, fields):
        built["store"] = EmbeddingStore(embeddings_dir or default_root(dataset.name, fields.out))
        return EmbeddingSidecar(built["store"], fields.out)

    return driver.Action(ACTION, [PROPOSAL_LABEL], record, build, info, output="detections",
                         sidecar=sidecar if embedder else None)


def proposal_embeddings(samples, field: str = DEFAULT_FIELD):
    """``(label_ids, (N, D) float32 vectors)`` of the proposals of ``samples`` in ``field`` that have an
    embedding, in the view's order, read from the store the run that wrote ``field`` recorded.

    Raises:
        ValueError: ``field`` was not written by a proposals run with embeddings.
    """
    dataset, samples = driver.sample_collection(samples)
    record = records.read_run(dataset, records.run_key_for(field))
    if not record or record.get("action") != ACTION:
        raise ValueError("field %r was not written by compute_mask_proposals; run it first" % field)
    root = (record.get("learnt") or {}).get("embeddings_dir")
    if not root:
        raise ValueError("the proposals in %r were computed without embeddings (embedder=None)" % field)
    ids = [i for ids in samples.values(field + ".detections.id") for i in (ids or [])]
    return EmbeddingStore(root).load(ids)


def _action(samples, kwargs):
    run, options = driver.split_run_options(kwargs, out_field=DEFAULT_FIELD, save_instances=False)
    if options.get("embedder", "clip") and not options.get("embeddings_dir"):
        # resolved once, here, so that every shard of a run (and its record) names the same folder
        dataset, _ = driver.sample_collection(samples)
        options["embeddings_dir"] = default_root(dataset.name, run["out_field"])
    return proposals_action(**options), run


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
        **kwargs: ``out_field`` ("samtext_proposals"), ``sam_model`` ("vit_b", "vit_l", "vit_h", "mobile_sam",
            "tiny"), ``sam_checkpoint``, ``device``, ``precision``; ``embedder`` ("clip": CLIP on each masked crop;
            "sam": SAM's features under the mask, free; None: no embeddings), ``clip_model``,
            ``clip_pretrained``, ``clip_checkpoint``, ``crop_context`` (0.1 of the box around each crop),
            ``embeddings_dir`` (default ``~/.samtext/embeddings/<dataset>/<field>``); the proposal knobs
            ``points_per_side`` (None: 16 on CPU, 32 on CUDA), ``points_per_batch`` (None: 2 on CPU, 64 on
            CUDA), ``pred_iou_thresh`` (0.88), ``stability_score_thresh`` (0.95), ``stability_score_offset``
            (1.0), ``box_nms_thresh`` (0.7), ``min_area`` (100 px), ``max_proposals`` (200 per image; None:
            all); and the run options ``overwrite``, ``mask_dir`` (instance masks as PNG files there, absolute
            paths stored), ``batch_size``, ``fail_fast``, ``shard`` (see :func:`samtext.annotate_by_reference`).

    Returns:
        a :class:`samtext.run.driver.RunSummary`; ``instances`` counts the proposals written.
    """
    return driver.run_with_progress_option(iter_compute_mask_proposals(samples, **kwargs), progress)
