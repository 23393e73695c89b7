"""SDK: "Annotate by few-shot examples": proposals similar to a few exemplars become labels.

Example::

    samtext.compute_mask_proposals(dataset, out_field="proposals")
    samtext.compute_proposal_map(dataset, field="proposals")          # clusters + the Embeddings panel map
    # pick exemplars: label ids (a lasso or a selection in the App), a label tag, whole clusters, or masks
    summary = samtext.annotate_by_examples(
        dataset,
        {"car": samtext.Exemplars(label_ids=[...], negative_ids=[...]), "wheel": samtext.Exemplars(clusters=[3])},
        proposals_field="proposals", out_field="cars",
    )

Each target's stored proposals (and their stored embeddings) are scored against each class's exemplars; the
matched ones are written as a multi-class ``fo.Segmentation`` (``mask_targets`` ``{1: "car", 2: "wheel"}``) and
as ``fo.Detections`` instances. No model runs on the targets and no target image is read: the work was done by
the proposals run (exemplars given as masks are embedded once, as the proposals were).
The run itself (targets, resume, errors, writes, records) is :func:`samtext.run.driver.iter_run`'s.
"""

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

import fiftyone as fo

from ..images import InputError
from ..models import sam_record
from ..names import EXAMPLES_FIELD
from ..pipelines.examples import ExampleClass, ExampleMatcher, ImageProposals
from ..run import driver
from ..run import fields as sds
from ..run import records
from ..run.store import EmbeddingStore
from ..settings import ExamplesSettings, ProposalSettings, RunOptions, signature_with
from .exemplars import mask_exemplar_vectors, proposals_embedder
from .mask_proposals import ACTION as PROPOSALS_ACTION
from ..errors import SamtextError

logger = logging.getLogger(__name__)

ACTION = ExamplesSettings.action


@dataclass
class Exemplars:
    """The exemplars of one class: proposals (labels of the proposals field) given by id, by label tag or by
    cluster, or masks in another field; and negatives (look-alikes not to label) the same ways.

    Attributes:
        label_ids: ids of proposals that show the class (e.g. ``ctx.selected_labels`` or a lasso's ids).
        tag: proposals carrying this label tag show the class.
        clusters: every proposal of these clusters (from :func:`samtext.compute_proposal_map`) shows it.
        mask_field: a ``fo.Segmentation`` or ``fo.Detections`` field whose masks of the class (its pixels in a
            segmentation, split into connected instances; its detections so labelled) are exemplars, embedded
            as the proposals were (see :mod:`samtext.actions.exemplars`).
        mask_samples: the ids of the samples whose ``mask_field`` to use (default: every sample where it is set).
        mask_class: the class's name in ``mask_field`` (a label, a mask-targets name, or a pixel value), when it
            is not the class's own name.
        negative_ids, negative_tag, negative_clusters, negative_mask_field, negative_mask_samples,
        negative_mask_class: the same, for look-alikes not to label.
    """

    label_ids: Sequence[str] = ()
    tag: Optional[str] = None
    clusters: Sequence[int] = ()
    mask_field: Optional[str] = None
    mask_samples: Sequence[str] = ()
    mask_class: Optional[Union[str, int]] = None
    negative_ids: Sequence[str] = ()
    negative_tag: Optional[str] = None
    negative_clusters: Sequence[int] = field(default_factory=tuple)
    negative_mask_field: Optional[str] = None
    negative_mask_samples: Sequence[str] = ()
    negative_mask_class: Optional[Union[str, int]] = None

    @classmethod
    def of(cls, value) -> "Exemplars":
        """``value`` as Exemplars: an Exemplars, a dict of its fields, a label id, or a list of label ids."""
        if isinstance(value, Exemplars):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise SamtextError("unknown exemplar key %r; use %s" % (unknown[0], ", ".join(cls.__dataclass_fields__)))
            return cls(**value)
        if isinstance(value, str):
            return cls(label_ids=[value])
        return cls(label_ids=list(value or ()))

    def record(self) -> dict:
        return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in vars(self).items() if v}


def _proposal_ids(dataset: fo.Dataset, field: str, ids=(), tag=None, clusters=(), cluster_attribute="cluster",
                  what="exemplar") -> List[str]:
    """The ids of the proposals of ``dataset`` in ``field`` given by ids, a label tag and cluster numbers.

    Raises:
        ValueError: an id that is no proposal of the field (another dataset or field, or proposals recomputed
            since it was picked), a tag no proposal carries, a cluster that does not exist.
    """
    from bson import ObjectId

    from fiftyone import ViewField as F

    out = []
    ids = [ids] if isinstance(ids, str) else list(ids)
    if ids:
        bad = [i for i in ids if not isinstance(i, str) or not ObjectId.is_valid(i)]
        if bad:
            raise SamtextError("%s %r is not a label id (a 24-character hex ObjectId)" % (what, bad[0]))
        found = set(dataset.select_labels(ids=ids, fields=field).values(field + ".detections.id", unwind=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise SamtextError(
                "%s %r is not a proposal in field %r of dataset %r (%d of %d ids are not): picked in another "
                "dataset or field, or the proposals were recomputed since; pick the exemplars again"
                % (what, missing[0], field, dataset.name, len(missing), len(ids)))
        out += ids
    if tag:
        tagged = dataset.select_labels(tags=tag, fields=field).values(field + ".detections.id", unwind=True)
        if not tagged:
            raise SamtextError("no proposal in field %r carries the label tag %r" % (field, tag))
        out += tagged
    if clusters:
        wanted = []
        for c in clusters:
            try:
                if isinstance(c, bool) or not float(c).is_integer():
                    raise ValueError
                wanted.append(int(float(c)))
            except (TypeError, ValueError):
                raise SamtextError("clusters: %r is not a cluster id (a whole number such as 3, as the map's "
                                   "'cluster' attribute shows)" % (c,)) from None
        path = "%s.detections.%s" % (field, cluster_attribute)
        existing = sorted({c for c in dataset.values(path, unwind=True) if c is not None})
        if not existing:
            raise SamtextError("the proposals in %r have no clusters: run samtext.compute_proposal_map first" % field)
        missing = [c for c in wanted if c not in existing]
        if missing:
            raise SamtextError("cluster %r does not exist in field %r; its clusters are %s"
                             % (missing[0], field, existing))
        view = dataset.filter_labels(field, F(cluster_attribute).is_in(wanted))
        out += view.values(field + ".detections.id", unwind=True)
    return list(dict.fromkeys(out))


def _proposals_record(dataset: fo.Dataset, field: str) -> dict:
    record = records.read_run(dataset, records.run_key_for(field))
    if not record or record.get("action") != PROPOSALS_ACTION:
        raise SamtextError("field %r holds no proposals of samtext.compute_mask_proposals; run it first" % field)
    if not (record.get("learnt") or {}).get("embeddings_dir"):
        raise SamtextError("the proposals in %r were computed without embeddings (embedder=None); recompute them "
                         "with an embedder" % field)
    return record


def _vectors(store: EmbeddingStore, ids: List[str], field: str, what: str) -> np.ndarray:
    found, vectors = store.load(ids)
    if len(found) < len(ids):
        raise SamtextError("%d %s proposals of %r have no stored embedding (the store at %s lacks them)"
                         % (len(ids) - len(found), what, field, store.root))
    return vectors


def _exemplar_vectors(dataset, field, name, store, ids, tag, clusters, mask_field, mask_samples, mask_class,
                      masks_embedder, what) -> Optional[np.ndarray]:
    """The vectors of one class's exemplars (or negatives) given every way, or None when none is given."""
    parts = []
    chosen = _proposal_ids(dataset, field, ids, tag, clusters, what="%s of %r" % (what, name))
    if chosen:
        parts.append(_vectors(store, chosen, field, what))
    if mask_field:
        if mask_field == field:
            raise SamtextError("mask_field %r is the proposals field: give its proposals as label ids, a tag or "
                             "clusters" % mask_field)
        embed, min_area = masks_embedder()
        parts.append(mask_exemplar_vectors(dataset, mask_field, name, embed, mask_samples, mask_class, min_area,
                                           what=what))
    elif mask_samples:
        raise SamtextError("%s mask samples of %r are given without a mask field" % (what, name))
    return np.concatenate(parts) if parts else None


def _class_examples(dataset, field, name, spec: Exemplars, store, masks_embedder) -> ExampleClass:
    pos = _exemplar_vectors(dataset, field, name, store, spec.label_ids, spec.tag, spec.clusters, spec.mask_field,
                            spec.mask_samples, spec.mask_class, masks_embedder, "exemplar")
    if pos is None:
        raise SamtextError("class %r has no exemplars: give label ids, a label tag, clusters or a mask field" % name)
    neg = _exemplar_vectors(dataset, field, name, store, spec.negative_ids, spec.negative_tag,
                            spec.negative_clusters, spec.negative_mask_field, spec.negative_mask_samples,
                            spec.negative_mask_class, masks_embedder, "negative exemplar")
    return ExampleClass(name, pos, neg)


class ProposalReader:
    """The labeller's input for one sample: its stored proposals (masks pasted back at the image's size) and
    their stored embeddings, as :class:`samtext.pipelines.examples.ImageProposals`.

    The proposals are read from the database ``PREFETCH`` samples at a time, in the order of ``sample_ids`` (the
    run's samples, in the order the driver labels them), not one query per sample."""

    PREFETCH = 64

    def __init__(self, dataset: fo.Dataset, field: str, store: EmbeddingStore, sample_ids: Sequence[str] = ()):
        self.dataset, self.field, self.store = dataset, field, store
        self.order = list(sample_ids)
        self.position = {sid: i for i, sid in enumerate(self.order)}
        self.cache: Dict[str, object] = {}

    def _proposals(self, sample_id: str):
        if sample_id not in self.cache:
            start = self.position.get(sample_id)
            chunk = [sample_id] if start is None else self.order[start:start + self.PREFETCH]
            ids, labels = self.dataset.select(chunk).values(["id", self.field])
            self.cache = dict(zip(ids, labels))
        return self.cache.pop(sample_id, None)

    def __call__(self, sample_id: str, filepath: str) -> ImageProposals:
        dets = self._proposals(sample_id)
        if dets is None:
            raise InputError("no proposals in field %r: run compute_mask_proposals on this sample first" % self.field)
        h, w = getattr(dets, "image_height", None), getattr(dets, "image_width", None)
        if not h or not w:
            raise InputError("the proposals in %r do not say the image's size; recompute them" % self.field)
        items = [d for d in dets.detections if d.has_mask]
        wanted = [d.id for d in items]
        ids, vectors = self.store.load(wanted)
        if len(ids) < len(wanted):  # written since the store was indexed (another shard), or not at all
            self.store.refresh()
            ids, vectors = self.store.load(wanted)
        if len(ids) < len(wanted):
            raise InputError("%d of its %d proposals in %r have no stored embedding in %s (computed elsewhere, or "
                             "the folder was moved); recompute them or point the run at their folder"
                             % (len(wanted) - len(ids), len(wanted), self.field, self.store.root))
        by_id = dict(zip(ids, vectors))
        masks, boxes, rows, scores = [], [], [], []
        for det in items:
            mask, box = sds.detection_mask(det, (h, w), with_box=True)
            masks.append(mask)
            boxes.append(box)
            rows.append(by_id[det.id])
            scores.append({k: float(getattr(det, k)) for k in ("predicted_iou", "stability_score")
                           if getattr(det, k, None) is not None})
        vectors = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
        return ImageProposals((int(h), int(w)), masks, vectors, scores, np.array(boxes, dtype=np.int64).reshape(-1, 4))


def examples_action(
    dataset: fo.Dataset,
    examples: Dict[str, Union[Exemplars, dict, Sequence[str]]],
    samples=None,
    settings: Optional[ExamplesSettings] = None,
) -> driver.Action:
    """Checks every argument and reads (or, for mask exemplars, computes) the exemplars' embeddings; returns the
    :class:`samtext.run.driver.Action` for ``samples`` (default: the dataset). Raises ValueError naming the
    problem; creates nothing. The model options serve mask exemplars only, which are embedded as the proposals
    were."""
    samples = dataset if samples is None else samples
    settings = (settings or ExamplesSettings()).check()
    proposals_field = settings.proposals_field
    if not isinstance(examples, dict) or not examples:
        raise SamtextError("examples must map each class name to its exemplars, e.g. {'car': [label ids]}")
    names = [n.strip() if isinstance(n, str) else "" for n in examples]
    if not all(names):
        raise SamtextError("every class needs a non-empty name, got %r" % (list(examples),))
    if len(set(names)) < len(names):
        raise SamtextError("class names repeat once spaces are trimmed: %r" % (list(examples),))
    sds.check_label_field(dataset, proposals_field, fo.Detections)
    if not dataset.has_field(proposals_field):
        raise SamtextError("dataset %r has no field %r: run samtext.compute_mask_proposals first"
                         % (dataset.name, proposals_field))
    specs = {name: Exemplars.of(value) for name, value in zip(names, examples.values())}
    if settings.method == "sam3":  # SAM 3 reads the exemplars' pixels: the proposals' embeddings are not needed
        return _sam3_action(dataset, samples, specs, settings)
    record = _proposals_record(dataset, proposals_field)
    store = EmbeddingStore(record["learnt"]["embeddings_dir"])
    built = {}

    def masks_embedder():
        if "embed" not in built:
            proposal_settings = record.get("settings") or {}
            built["embed"] = (proposals_embedder(proposal_settings, settings),
                              int(proposal_settings.get("min_area", ProposalSettings.min_area)))
        return built["embed"]

    classes = [_class_examples(dataset, proposals_field, name, spec, store, masks_embedder)
               for name, spec in specs.items()]
    matcher = ExampleMatcher(classes, threshold=settings.threshold, scoring=settings.scoring, top_k=settings.top_k)
    sample_ids = samples.values("id")
    recorded = dict(settings.record(), examples={name: spec.record() for name, spec in specs.items()})

    def info(labeller):
        return dict(exemplars={c.name: dict(positives=len(c.positives), negatives=len(c.negatives))
                               for c in classes})

    mask_fields = [f for spec in specs.values() for f in (spec.mask_field, spec.negative_mask_field) if f]
    return driver.Action(ACTION, names, recorded, lambda: matcher, info,
                         input_fields=list(dict.fromkeys([proposals_field] + mask_fields)),
                         loader=ProposalReader(dataset, proposals_field, store, sample_ids),
                         exclude_ids=without_proposals(dataset, sample_ids, proposals_field),
                         exclude_what="samples without proposals in %r" % proposals_field,
                         empty_hint="no proposal reached threshold=%s of similarity to the exemplars; lower 'threshold' "
                                    "or pick more exemplars" % settings.threshold)


def _shots(dataset: fo.Dataset, field: str, ids: Sequence[str], most: int):
    """The :class:`samtext.pipelines.examples_sam3.Shot` of at most ``most`` of the proposals ``ids`` (taken evenly
    through them: a lasso of thousands reads a dozen images)."""
    from ..images import load_image
    from ..pipelines.examples_sam3 import _evenly, shot_from

    wanted = set(_evenly(list(ids), most))
    shots = []
    for sample in dataset.select_labels(ids=list(wanted), fields=field):
        try:
            image = load_image(sample.filepath)
        except (InputError, OSError, ValueError) as e:
            raise SamtextError("exemplar image of sample %s (%s): %s" % (sample.id, sample.filepath, e)) from e
        for det in sample[field].detections:
            if det.id in wanted:
                _, box = sds.detection_mask(det, image.shape[:2], with_box=True)
                shots.append(shot_from(image, box))
    return shots


def _sam3_action(dataset, samples, specs: Dict[str, Exemplars], settings: ExamplesSettings) -> driver.Action:
    """The action of ``method="sam3"``: each class's exemplars (proposals by id, tag or cluster) on a collage beside
    every target, read by SAM 3 (:mod:`samtext.pipelines.examples_sam3`)."""
    from ..pipelines.examples_sam3 import MAX_SHOWN, ShotClass, ShotMatcher

    field = settings.proposals_field
    classes = []
    for name, spec in specs.items():
        if spec.mask_field or spec.negative_mask_field:
            raise SamtextError("method='sam3' takes exemplars as proposals (label ids, a tag or clusters), not "
                               "mask fields (class %r)" % name)
        pos = _proposal_ids(dataset, field, spec.label_ids, spec.tag, spec.clusters, what="exemplar of %r" % name)
        if not pos:
            raise SamtextError("class %r has no exemplars: give label ids, a label tag or clusters" % name)
        neg = _proposal_ids(dataset, field, spec.negative_ids, spec.negative_tag, spec.negative_clusters,
                            what="negative exemplar of %r" % name)
        classes.append(ShotClass(name, _shots(dataset, field, pos, MAX_SHOWN),
                                 _shots(dataset, field, neg, MAX_SHOWN // 3)))
    names = [c.name for c in classes]
    recorded = dict(settings.record(), examples={name: spec.record() for name, spec in specs.items()})

    def build():
        from ..models.sam3_concepts import load_sam3_concepts

        concepts = load_sam3_concepts(settings.sam3_model, settings.sam_checkpoint, settings.device,
                                      settings.precision)
        return ShotMatcher(concepts, classes, threshold=settings.sam3_threshold, top_k=settings.top_k)

    def info(labeller):
        return dict(exemplars={c.name: dict(positives=len(c.positives), negatives=len(c.negatives))
                               for c in classes}, models=sam_record(labeller.segmenter))

    return driver.Action(ACTION, names, recorded, build, info, input_fields=[field],
                         empty_hint="SAM 3 scored nothing like the exemplars at sam3_threshold=%s; lower it or pick "
                                    "other exemplars" % settings.sam3_threshold)


def without_proposals(dataset: fo.Dataset, sample_ids: Sequence[str], field: str) -> List[str]:
    """The ids among ``sample_ids`` whose sample has nothing in ``field``: not targets (a proposals run on a view,
    then few-shot labelling of the whole dataset, is the usual case), logged rather than counted as failures.
    Read from the dataset, since the caller's view may hide the field."""
    have = set(dataset.exists(field).values("id"))
    ids = [sid for sid in sample_ids if sid not in have]
    if ids:
        logger.info("samtext: %d samples have no proposals in %r and are not labelled", len(ids), field)
    return ids


def _action(samples, examples, kwargs):
    run, options = driver.split_run_options(kwargs, out_field=EXAMPLES_FIELD)
    settings = ExamplesSettings.from_kwargs(options, "annotate_by_examples")
    dataset, samples = driver.sample_collection(samples)
    return examples_action(dataset, examples, samples=samples, settings=settings), run


def iter_annotate_by_examples(samples, examples, **kwargs) -> driver.Progress:
    """The work of :func:`annotate_by_examples`, as a generator of ``(done, total)`` progress that returns the
    :class:`samtext.run.driver.RunSummary`."""
    action, run = _action(samples, examples, kwargs)
    return (yield from driver.iter_run(samples, action, **run))


def prepare_annotate_by_examples(samples, examples, **kwargs) -> int:
    """Checks a run of :func:`annotate_by_examples` and creates its fields and record, labelling nothing (before
    a run split into shards is queued). Returns the number of samples to label."""
    action, run = _action(samples, examples, kwargs)
    return driver.prepare_outputs(samples, action, **run)


def annotate_by_examples(
    samples,
    examples: Dict[str, Union[Exemplars, dict, Sequence[str]]],
    progress: Union[bool, Callable[[int, int], None], None] = None,
    **kwargs,
) -> driver.RunSummary:
    """Labels every sample of ``samples`` from a few exemplars per class, among its stored mask proposals.

    Arguments:
        samples: a dataset or view whose samples have proposals (:func:`samtext.compute_mask_proposals`).
        examples: ``{class name: exemplars}``; the exemplars an :class:`Exemplars` (proposals by id, tag or
            cluster, or masks in another field), a dict of its fields, or a list of proposal label ids. Several
            classes give a multi-class mask.
        progress: True for a progress bar, or a callable ``(done, total)``.
        **kwargs: the settings (:class:`samtext.settings.ExamplesSettings`: ``proposals_field``,
            ``threshold``, ``scoring``, ``top_k``, and for mask exemplars the proposals' weights files,
            ``device``, ``precision``) and the run options (:class:`samtext.settings.RunOptions`; ``out_field``
            defaults to "samtext_examples").

    Returns:
        a :class:`samtext.run.driver.RunSummary`.
    """
    return driver.run_with_progress_option(iter_annotate_by_examples(samples, examples, **kwargs), progress)


signature_with(annotate_by_examples, ExamplesSettings, RunOptions)
