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

from .. import names
from ..images import InputError, load_image, load_mask
from ..models import load_clip, load_sam, sam_record
from ..pipelines.reference import ClipCheck, PriorMatcher, Reference, StitchMatcher
from ..run import driver
from ..run.class_maps import class_value_from_targets
from ..run.fields import samples_by_id
from ..settings import ReferenceSettings, RunOptions, check_class_value, signature_with
from ..errors import SamtextError

logger = logging.getLogger(__name__)

SampleRef = Union[str, fo.Sample, fo.core.sample.SampleView]
ACTION = ReferenceSettings.action


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
    samples = samples_by_id(dataset, reference, what="reference")
    if reference_mask is not None and len(samples) != 1:
        raise SamtextError("an uploaded reference_mask goes with exactly one reference sample")
    if reference_mask is None and not reference_field:
        raise SamtextError("give reference_field (the field holding the reference mask) or reference_mask")
    targets_value = class_value_from_targets(dataset, reference_field, class_name) if reference_field else None
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
            raise SamtextError("%s: %s" % (where, e)) from e
        refs.append(Reference(image, mask, name=where))  # its own errors already name the sample
    return refs, [s.id for s in samples]


def build_matcher(references: List[Reference], class_name: str, settings: ReferenceSettings, seed: int = 0):
    """Loads the models ``settings`` name and builds the method's ``image -> MaskResult`` callable."""
    s = settings
    clip = load_clip(s.clip_model, s.clip_pretrained, s.device, s.precision,
                     s.clip_checkpoint) if s.uses_clip() else None
    check = ClipCheck(clip, class_name, s.clip_threshold, references) if s.clip_threshold is not None else None
    if s.method == "sam3":
        from ..models.sam3_concepts import load_sam3_concepts
        from ..pipelines.reference_sam3 import ConceptMatcher

        concepts = load_sam3_concepts(s.sam_model, s.sam_checkpoint, s.device, s.precision)
        return ConceptMatcher(concepts, references, class_name, min_similarity=s.min_similarity,
                              max_instances=s.max_instances, clip_check=check)
    sam = load_sam(s.sam_model, s.sam_checkpoint, s.device, s.precision)
    if s.method == "prior":
        return PriorMatcher(sam, references, refine=s.refine, min_similarity=s.min_similarity,
                            max_instances=s.max_instances, clip_check=check)
    return StitchMatcher(sam, clip, references, class_name, num_prompt_sets=s.num_prompt_sets, seed=seed,
                         min_similarity=s.min_similarity, max_instances=s.max_instances, clip_check=check)


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
    settings: Optional[ReferenceSettings] = None,
) -> driver.Action:
    """Checks every argument and reads the references; returns the :class:`samtext.run.driver.Action` (models
    load only when the driver builds it). Raises ValueError naming the problem; creates nothing."""
    settings = (settings or ReferenceSettings()).check()
    class_name = class_name.strip() if isinstance(class_name, str) else ""
    if not class_name:
        raise SamtextError("class_name must be a non-empty name of the object, e.g. 'cat'")
    references, ref_ids = load_references(
        dataset, reference, class_name, reference_field, reference_mask, settings.reference_class_value)
    recorded = dict(settings.record(), class_name=class_name, reference_ids=ref_ids, reference_field=reference_field,
                    reference_mask=_mask_digest(reference_mask))
    def info(matcher):
        learnt = dict(matcher.info(), models=sam_record(matcher.segmenter))
        if matcher.clip_check is not None:
            learnt.update(matcher.clip_check.info())
        return learnt

    hint = ("no target reached the absent-object gate (min_similarity=%r, 'auto' = calibrated on the reference); "
            "lower min_similarity or set it to None to always label the best match (the form's 'Absent-object gate')"
            % (settings.min_similarity,))
    if settings.clip_threshold is not None:
        hint += ", or lower clip_threshold / set it to None (the form's 'CLIP check')"
    return driver.Action(ACTION, [class_name], recorded, lambda: build_matcher(references, class_name, settings), info,
                         input_fields=[reference_field] if reference_field else [], exclude_ids=ref_ids,
                         exclude_what="the reference", empty_hint=hint)


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
    run, options = driver.split_run_options(kwargs, out_field=names.REFERENCE_FIELD)
    reference_mask = options.pop("reference_mask", None)
    settings = ReferenceSettings.from_kwargs(options, "annotate_by_reference")
    dataset, _ = driver.sample_collection(samples)
    return reference_action(dataset, class_name, reference, reference_field, reference_mask, settings), run


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
        **kwargs: ``reference_mask`` (a path, file bytes or an array, instead of ``reference_field``), the
            action's settings (:class:`samtext.settings.ReferenceSettings`: ``method``, ``min_similarity``,
            ``max_instances``, ``clip_threshold``, the models, ...) and the run options
            (:class:`samtext.settings.RunOptions`: ``out_field`` ("samtext_reference"), ``overwrite``,
            ``save_prompts``, ``save_instances``, ``mask_dir``, ``batch_size``, ``fail_fast``, ``shard``).

    Returns:
        a :class:`samtext.run.driver.RunSummary` with counts, per-sample errors and the run key.
    """
    events = iter_annotate_by_reference(samples, class_name, reference, reference_field, **kwargs)
    return driver.run_with_progress_option(events, progress)


signature_with(annotate_by_reference, ReferenceSettings, RunOptions)
