"""SDK: "Annotate by reference mask" on a FiftyOne dataset or view.

Example::

    import fiftyone as fo
    import samtext

    dataset = fo.load_dataset("pets")
    ref = dataset.match({"filepath": {"$regex": "cat_000"}}).first()
    summary = samtext.annotate_by_reference(
        dataset, "cat", reference=ref, reference_field="ground_truth", out_field="cat_masks"
    )
    print(summary.labelled, summary.instances, summary.failed)

This module only says what the action is (its settings, its references, its models, its labeller); the run
itself (targets, resume, errors, writes, records) is :func:`samtext.run.driver.iter_run`'s.
"""

import hashlib
import logging
import os
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

import fiftyone as fo

from ..run import driver
from ..images import InputError, load_image, load_mask
from ..models import (DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED, DEFAULT_SAM, check_model_options, checkpoint_name,
                     load_clip, load_sam, sam_record)
from ..pipelines.reference import METHODS, ClipCheck, PriorMatcher, Reference, StitchMatcher, check_gate

logger = logging.getLogger(__name__)

SampleRef = Union[str, fo.Sample, fo.core.sample.SampleView]
ACTION = "annotate_by_reference"
DEFAULT_STITCH_CLIP_THRESHOLD = 0.5


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _class_value_from_targets(dataset, field: str, class_name: str) -> Optional[int]:
    targets = dataset.mask_targets.get(field) or dataset.default_mask_targets or {}
    for value, name in targets.items():
        if str(name) == class_name:
            return int(value)
    return None


def check_class_value(value) -> Optional[int]:
    """``reference_class_value`` as an int (a string that spells a number is accepted), or None.

    Raises:
        ValueError: not an integer pixel value.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, bool) or number is None or not number.is_integer() or number < 0:
        raise ValueError("reference_class_value must be a non-negative whole pixel value such as 255, got %r" % (value,))
    return int(number)


def _mask_from_label(label, size: Tuple[int, int], class_name: str, class_value, targets_value, field: str):
    """The bool object mask ``(H, W)`` held by a Segmentation or Detections label."""
    h, w = size
    if isinstance(label, fo.Segmentation):
        # read the stored array or file ourselves: FiftyOne's get_mask() turns palette PNGs into colours
        source = label.mask if label.mask is not None else label.mask_path
        if source is None:
            raise InputError("the Segmentation in field %r has no mask" % field)
        return load_mask(source, class_value if class_value is not None else targets_value, size)
    if isinstance(label, fo.Detections):
        dets = [d for d in label.detections if d.mask is not None or d.mask_path]
        if not dets:
            raise InputError(
                "the Detections in field %r carry no instance masks (boxes only: %d detections); give a field "
                "with masks, or the mask itself as reference_mask" % (field, len(label.detections)))
        named = [d for d in dets if d.label == class_name]
        mask = np.zeros((h, w), dtype=bool)
        for det in named or dets:
            mask |= det.to_segmentation(frame_size=(w, h), target=1).get_mask() > 0
        return mask
    raise InputError("field %r holds %s; a reference field must hold fo.Segmentation or fo.Detections"
                     % (field, type(label).__name__))


def _reference_samples(dataset: fo.Dataset, reference) -> List[fo.Sample]:
    """The reference samples: ``fo.Sample`` objects as given, IDs looked up in ``dataset``.

    Raises:
        ValueError: no reference; an ID that is not an ObjectId, or names no sample of the dataset.
    """
    from bson import ObjectId

    refs = _as_list(reference)
    if not refs:
        raise ValueError("no reference sample given: pass reference=<sample, sample ID, or a list of them>")
    is_sample = lambda r: isinstance(r, (fo.Sample, fo.core.sample.SampleView))  # noqa: E731
    ids = [r for r in refs if not is_sample(r)]
    bad = [r for r in ids if not isinstance(r, str) or not ObjectId.is_valid(r)]
    if bad:
        raise ValueError("reference %r is not a sample ID (a 24-character hex ObjectId) or a fo.Sample" % (bad[0],))
    found = {s.id: s for s in dataset.select(ids)} if ids else {}
    missing = [r for r in ids if r not in found]
    if missing:
        raise ValueError("reference %r: no sample with this ID in dataset %r" % (missing[0], dataset.name))
    return [r if is_sample(r) else found[r] for r in refs]


def load_references(
    dataset: fo.Dataset,
    reference: Union[SampleRef, Sequence[SampleRef]],
    class_name: str,
    reference_field: Optional[str] = None,
    reference_mask=None,
    reference_class_value=None,
) -> Tuple[List[Reference], List[str]]:
    """Reads the reference images and masks: ``(references, their sample ids)``.

    Each reference is a sample (or its id in ``dataset``) whose mask is either in ``reference_field``
    (a ``fo.Segmentation`` or ``fo.Detections`` field) or given as ``reference_mask`` (a path, file bytes
    or an array, for a single reference sample).

    Raises:
        ValueError: no reference, an unknown ID, a missing field, an unusable mask (empty, covering the whole
            image, boxes only); the message names the sample.
    """
    class_value = check_class_value(reference_class_value)
    samples = _reference_samples(dataset, reference)
    if reference_mask is not None and len(samples) != 1:
        raise ValueError("an uploaded reference_mask goes with exactly one reference sample")
    if reference_mask is None and not reference_field:
        raise ValueError("give reference_field (the field holding the reference mask) or reference_mask")
    targets_value = _class_value_from_targets(dataset, reference_field, class_name) if reference_field else None
    refs = []
    for sample in samples:
        where = "reference sample %s (%s)" % (sample.id, sample.filepath)
        try:
            image = load_image(sample.filepath)
            if reference_mask is not None:
                mask = load_mask(reference_mask, class_value, size=image.shape[:2])
            else:
                if not sample.has_field(reference_field):
                    raise InputError("reference_field %r is not a field of its dataset" % reference_field)
                label = sample[reference_field]
                if label is None:
                    raise InputError("field %r is empty" % reference_field)
                mask = _mask_from_label(label, image.shape[:2], class_name, class_value, targets_value,
                                        reference_field)
        except (InputError, ValueError) as e:
            raise ValueError("%s: %s" % (where, e)) from e
        refs.append(Reference(image, mask, name=where))  # its own errors already name the sample
    return refs, [s.id for s in samples]


def build_matcher(
    method: str,
    references: List[Reference],
    class_name: str,
    sam_model: str = DEFAULT_SAM,
    sam_checkpoint: Optional[str] = None,
    clip_model: str = DEFAULT_CLIP,
    clip_pretrained: Optional[str] = DEFAULT_CLIP_PRETRAINED,
    clip_checkpoint: Optional[str] = None,
    device: str = "auto",
    precision: str = "auto",
    clip_threshold: Optional[float] = None,
    refine: bool = True,
    min_similarity="auto",
    max_instances: int = 10,
    num_prompt_sets: int = 4,
    seed: int = 0,
):
    """Loads the models the method needs and builds its ``image -> MaskResult`` callable."""
    if method not in METHODS:
        raise ValueError("unknown method %r; choose one of %s" % (method, sorted(METHODS)))
    sam = load_sam(sam_model, sam_checkpoint, device, precision)
    needs_clip = method == "stitch" or clip_threshold is not None
    clip = load_clip(clip_model, clip_pretrained, device, precision, clip_checkpoint) if needs_clip else None
    check = ClipCheck(clip, class_name, clip_threshold, references) if clip_threshold is not None else None
    if method == "prior":
        return PriorMatcher(sam, references, refine=refine, min_similarity=min_similarity,
                            max_instances=max_instances, clip_check=check)
    return StitchMatcher(sam, clip, references, class_name, num_prompt_sets=num_prompt_sets, seed=seed,
                         min_similarity=min_similarity, max_instances=max_instances, clip_check=check)


def _mask_digest(mask) -> Optional[str]:
    """A short fingerprint of an uploaded or given mask, for the run record."""
    if mask is None:
        return None
    if isinstance(mask, str):
        return os.path.abspath(mask)
    data = mask.tobytes() if isinstance(mask, np.ndarray) else bytes(mask)
    return "sha1:" + hashlib.sha1(data).hexdigest()[:16]


def reference_action(
    dataset: fo.Dataset,
    class_name: str,
    reference=None,
    reference_field: Optional[str] = None,
    reference_mask=None,
    reference_class_value=None,
    method: str = "prior",
    sam_model: str = DEFAULT_SAM,
    sam_checkpoint: Optional[str] = None,
    clip_model: str = DEFAULT_CLIP,
    clip_pretrained: Optional[str] = DEFAULT_CLIP_PRETRAINED,
    clip_checkpoint: Optional[str] = None,
    device: str = "auto",
    precision: str = "auto",
    refine: bool = True,
    min_similarity="auto",
    max_instances: int = 10,
    clip_threshold="auto",
    num_prompt_sets: int = 4,
) -> driver.Action:
    """Checks every argument and reads the references; returns the :class:`samtext.run.driver.Action` (models
    load only when the driver builds it). Raises ValueError naming the problem; creates nothing."""
    class_name = class_name.strip() if isinstance(class_name, str) else ""
    if not class_name:
        raise ValueError("class_name must be a non-empty name of the object, e.g. 'cat'")
    if method not in METHODS:
        raise ValueError("unknown method %r; choose one of %s" % (method, ", ".join(sorted(METHODS))))
    if clip_threshold == "auto":  # stitch runs CLIP anyway, and its window gate alone lets look-alikes through
        clip_threshold = DEFAULT_STITCH_CLIP_THRESHOLD if method == "stitch" else None
    needs_clip = method == "stitch" or clip_threshold is not None
    check_model_options(sam_model, clip_model if needs_clip else None, device, precision)
    min_similarity = check_gate(min_similarity)
    if clip_threshold is not None and not 0.0 <= float(clip_threshold) <= 1.0:
        raise ValueError("clip_threshold must be between 0 and 1 (a fraction of the reference's own CLIP score), "
                         "got %r" % (clip_threshold,))
    if int(max_instances) < 1:
        raise ValueError("max_instances must be at least 1, got %r" % (max_instances,))
    references, ref_ids = load_references(
        dataset, reference, class_name, reference_field, reference_mask, reference_class_value)
    settings = dict(
        method=method, class_name=class_name, reference_ids=ref_ids, reference_field=reference_field,
        reference_mask=_mask_digest(reference_mask), reference_class_value=check_class_value(reference_class_value),
        sam_model=sam_model, sam_checkpoint=checkpoint_name(sam_checkpoint),
        refine=bool(refine), min_similarity=min_similarity, max_instances=int(max_instances),
        clip_threshold=None if clip_threshold is None else float(clip_threshold),
    )
    if needs_clip:
        settings.update(clip_model=clip_model, clip_pretrained=clip_pretrained,
                        clip_checkpoint=checkpoint_name(clip_checkpoint))
    if method == "stitch":
        settings.update(num_prompt_sets=int(num_prompt_sets))
    built = {}

    def build():
        built["matcher"] = build_matcher(
            method, references, class_name, sam_model=sam_model, sam_checkpoint=sam_checkpoint,
            clip_model=clip_model, clip_pretrained=clip_pretrained, clip_checkpoint=clip_checkpoint, device=device,
            precision=precision, clip_threshold=clip_threshold, refine=refine, min_similarity=min_similarity,
            max_instances=max_instances, num_prompt_sets=num_prompt_sets)
        return built["matcher"]

    def info():
        matcher = built["matcher"]
        learnt = dict(matcher.info(), models=sam_record(matcher.segmenter))
        if matcher.clip_check is not None:
            learnt.update(matcher.clip_check.info())
        return learnt

    return driver.Action(ACTION, [class_name], settings, build, info,
                         input_fields=[reference_field] if reference_field else [], exclude_ids=ref_ids)


def iter_annotate_by_reference(samples, class_name: str, reference=None, reference_field: Optional[str] = None,
                               **kwargs) -> driver.Progress:
    """The work of :func:`annotate_by_reference`, as a generator of ``(done, total)`` progress that
    returns the :class:`samtext.run.driver.RunSummary` (operators iterate it to report progress)."""
    action, run = _action(samples, class_name, reference, reference_field, kwargs)
    return (yield from driver.iter_run(samples, action, **run))


def prepare_annotate_by_reference(samples, class_name: str, reference=None, reference_field: Optional[str] = None,
                                  **kwargs) -> int:
    """Checks a run of :func:`annotate_by_reference` and creates its output fields and run record, labelling
    nothing: what the operator does once before it queues a run split into shards. Returns the number of
    samples to label."""
    action, run = _action(samples, class_name, reference, reference_field, kwargs)
    return driver.prepare_outputs(samples, action, **run)


def _action(samples, class_name, reference, reference_field, kwargs):
    run, options = driver.split_run_options(kwargs, out_field="samtext_reference")
    dataset, _ = driver.sample_collection(samples)
    return reference_action(dataset, class_name, reference, reference_field, **options), run


def annotate_by_reference(
    samples,
    class_name: str,
    reference=None,
    reference_field: Optional[str] = None,
    progress: Union[bool, Callable[[int, int], None], None] = None,
    **kwargs,
) -> driver.RunSummary:
    """Labels every sample of ``samples`` (a dataset or view) with a ``fo.Segmentation`` of
    ``class_name`` (and its instances as ``fo.Detections``), learnt from one or more reference samples
    with masks.

    Arguments:
        samples: the target ``fo.Dataset`` or ``fo.DatasetView``. References in it are not relabelled.
        class_name: the object's name. It gets a mask value in the output field's ``mask_targets`` (1 in a
            new field; an existing field keeps its classes and the new one gets the next free value).
        reference: a sample, a sample id, or a list of them (several references average their features).
        reference_field: the field holding each reference's mask (``fo.Segmentation`` or
            ``fo.Detections`` with instance masks). Multi-class masks need ``reference_class_value``, unless
            the field's ``mask_targets`` name ``class_name``.
        progress: True for a progress bar, or a callable ``(done, total)``.
        **kwargs: ``reference_mask`` (path, file bytes or array instead of ``reference_field``),
            ``reference_class_value`` (the object's pixel value; "255" works too), ``out_field``
            ("samtext_reference"), ``method`` ("prior" or "stitch"), ``sam_model`` ("vit_b", "vit_l",
            "vit_h", "mobile_sam", "tiny"), ``sam_checkpoint``, ``clip_model`` ("ViT-B-32" or "tiny"),
            ``clip_pretrained`` ("openai", or a weights file), ``clip_checkpoint`` (a local file of that tag),
            ``device``, ``precision`` ("auto", "fp32", "bf16"), ``refine``, ``min_similarity`` ("auto": a gate
            calibrated on the references, so that images without the object come out empty; a number; or
            None: always label the best match), ``max_instances`` (10), ``clip_threshold`` (the CLIP check:
            the fraction of the reference's own CLIP score that each instance's masked crop must reach;
            None: no check; "auto": 0.5 for stitch, none for prior),
            ``num_prompt_sets`` (stitch), ``save_prompts`` (also write the prompt points to
            ``<out_field>_prompts``), ``save_instances`` (True: the instances in ``<out_field>_instances``),
            ``overwrite`` (relabel samples that already have the field, and allow settings other than those
            of the run that wrote it), ``mask_dir`` (write masks as PNGs there, stored with absolute paths,
            instead of into the database), ``batch_size`` (samples per database write), ``fail_fast`` (stop
            when the first this many samples all fail; 0: never), ``shard`` (``(index, count)``: only that
            shard of the samples).

    Returns:
        a :class:`samtext.run.driver.RunSummary` with counts, per-sample errors and the run key.
    """
    events = iter_annotate_by_reference(samples, class_name, reference, reference_field, **kwargs)
    return driver.run_with_progress_option(events, progress)
