"""SDK: "Annotate by reference mask" on a FiftyOne dataset or view.

Example::

    import fiftyone as fo
    import samtext

    dataset = fo.load_dataset("pets")
    ref = dataset.match({"filepath": {"$regex": "cat_000"}}).first()
    summary = samtext.annotate_by_reference(
        dataset, "cat", reference=ref, reference_field="ground_truth", out_field="cat_masks"
    )
    print(summary.labelled, summary.failed)
"""

import logging
import os
import time
from typing import Callable, Generator, List, Optional, Sequence, Tuple, Union

import numpy as np

import fiftyone as fo

from . import dataset as sds
from .images import InputError, load_image, load_mask
from .models import DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED, DEFAULT_SAM, load_clip, load_sam
from .pipelines.reference import METHODS, ClipCheck, PriorMatcher, Reference, StitchMatcher

logger = logging.getLogger(__name__)

SampleRef = Union[str, fo.Sample]


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


def _mask_from_label(label, size: Tuple[int, int], class_name: str, class_value, targets_value) -> np.ndarray:
    """The bool object mask ``(H, W)`` held by a Segmentation or Detections label."""
    h, w = size
    if isinstance(label, fo.Segmentation):
        # read the stored array or file ourselves: FiftyOne's get_mask() turns palette PNGs into colours
        source = label.mask if label.mask is not None else label.mask_path
        if source is None:
            raise InputError("the Segmentation has no mask")
        return load_mask(source, class_value if class_value is not None else targets_value, size)
    if isinstance(label, fo.Detections):
        dets = [d for d in label.detections if d.mask is not None or d.mask_path]
        named = [d for d in dets if d.label == class_name]
        mask = np.zeros((h, w), dtype=bool)
        for det in named or dets:
            mask |= det.to_segmentation(frame_size=(w, h), target=1).get_mask() > 0
        return mask
    raise InputError("a reference field must hold fo.Segmentation or fo.Detections, not %s" % type(label).__name__)


def load_references(
    dataset: fo.Dataset,
    reference: Union[SampleRef, Sequence[SampleRef]],
    class_name: str,
    reference_field: Optional[str] = None,
    reference_mask=None,
    reference_class_value: Optional[int] = None,
) -> Tuple[List[Reference], List[str]]:
    """Reads the reference images and masks: ``(references, their sample ids)``.

    Each reference is a sample (or its id in ``dataset``) whose mask is either in ``reference_field``
    (a ``fo.Segmentation`` or ``fo.Detections`` field) or given as ``reference_mask`` (a path or an
    array, for a single reference sample).

    Raises:
        ValueError: no reference, a missing field, an unusable mask; the message names the sample.
    """
    samples = [dataset[s] if isinstance(s, str) else s for s in _as_list(reference)]
    if not samples:
        raise ValueError("no reference sample given")
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
                mask = load_mask(reference_mask, reference_class_value, size=image.shape[:2])
            else:
                label = sample[reference_field] if sample.has_field(reference_field) else None
                if label is None:
                    raise InputError("field %r is empty" % reference_field)
                mask = _mask_from_label(label, image.shape[:2], class_name, reference_class_value, targets_value)
        except (InputError, ValueError) as e:
            raise ValueError("%s: %s" % (where, e)) from e
        refs.append(Reference(image, mask, name=where))  # its own errors already name the sample
        if mask.all():
            logger.warning("%s: the mask covers the whole image; there is no background to contrast", where)
    return refs, [s.id for s in samples]


def build_matcher(
    method: str,
    references: List[Reference],
    class_name: str,
    sam_model: str = DEFAULT_SAM,
    sam_checkpoint: Optional[str] = None,
    clip_model: str = DEFAULT_CLIP,
    clip_pretrained: Optional[str] = DEFAULT_CLIP_PRETRAINED,
    device: str = "auto",
    precision: str = "auto",
    clip_threshold: Optional[float] = None,
    refine: bool = True,
    min_similarity: Optional[float] = None,
    num_prompt_sets: int = 4,
    seed: int = 0,
):
    """Loads the models the method needs and builds its ``image -> MaskResult`` callable."""
    if method not in METHODS:
        raise ValueError("unknown method %r; choose one of %s" % (method, sorted(METHODS)))
    sam = load_sam(sam_model, sam_checkpoint, device, precision)
    needs_clip = method == "stitch" or clip_threshold is not None
    clip = load_clip(clip_model, clip_pretrained, device, precision) if needs_clip else None
    check = ClipCheck(clip, class_name, clip_threshold) if clip_threshold is not None else None
    if method == "prior":
        return PriorMatcher(sam, references, refine=refine, min_similarity=min_similarity, clip_check=check)
    return StitchMatcher(sam, clip, references, class_name, num_prompt_sets=num_prompt_sets, seed=seed,
                         clip_check=check)


def iter_annotate_by_reference(
    samples,
    class_name: str,
    reference=None,
    reference_field: Optional[str] = None,
    reference_mask=None,
    reference_class_value: Optional[int] = None,
    out_field: str = "samtext_reference",
    method: str = "prior",
    sam_model: str = DEFAULT_SAM,
    sam_checkpoint: Optional[str] = None,
    clip_model: str = DEFAULT_CLIP,
    clip_pretrained: Optional[str] = DEFAULT_CLIP_PRETRAINED,
    device: str = "auto",
    precision: str = "auto",
    refine: bool = True,
    min_similarity: Optional[float] = None,
    clip_threshold: Optional[float] = None,
    num_prompt_sets: int = 4,
    save_prompts: bool = False,
    overwrite: bool = False,
    mask_dir: Optional[str] = None,
    batch_size: int = 16,
) -> Generator[Tuple[int, int], None, sds.RunSummary]:
    """The work of :func:`annotate_by_reference`, as a generator of ``(done, total)`` progress that
    returns the :class:`samtext.dataset.RunSummary` (operators iterate it to report progress)."""
    start = time.time()
    class_name = (class_name or "").strip()
    if not class_name:
        raise ValueError("class_name must be a non-empty name of the object, e.g. 'cat'")
    dataset = samples._dataset
    sds.check_field_name(out_field)
    prompts_field = out_field + "_prompts" if save_prompts else None
    sds.check_label_field(dataset, out_field, fo.Segmentation)
    if prompts_field:
        sds.check_label_field(dataset, prompts_field, fo.Keypoints)
    run_key = sds.run_key_for(out_field)
    summary = sds.RunSummary(field=out_field, run_key=run_key)

    references, ref_ids = load_references(
        dataset, reference, class_name, reference_field, reference_mask, reference_class_value
    )
    ids, paths, summary.skipped_existing = sds.targets_to_label(samples, out_field, overwrite, ref_ids)
    summary.targets = len(ids)
    if not ids:
        logger.info("Nothing to label in %r: %d samples already have it", out_field, summary.skipped_existing)
        return summary

    sds.ensure_label_field(dataset, out_field, fo.Segmentation)
    if prompts_field:
        sds.ensure_label_field(dataset, prompts_field, fo.Keypoints)
    options = dict(
        sam_model=sam_model, sam_checkpoint=sam_checkpoint, clip_model=clip_model, clip_pretrained=clip_pretrained,
        device=device, precision=precision, refine=refine, min_similarity=min_similarity,
        clip_threshold=clip_threshold, num_prompt_sets=num_prompt_sets,
    )
    matcher = build_matcher(method, references, class_name, **options)
    sds.set_mask_targets(dataset, out_field, {1: class_name})
    sds.record_run(
        dataset, run_key, action="annotate_by_reference", method=method, class_name=class_name,
        out_field=out_field, reference_ids=ref_ids, reference_field=reference_field, **options,
    )

    yield 0, len(ids)
    with sds.LabelWriter(dataset, batch_size) as writer:
        for done, (sid, path) in enumerate(zip(ids, paths), 1):
            try:
                image = load_image(path)
                result = matcher(image)
            except Exception as e:  # one bad sample must not stop the run
                err = sds.SampleError(sid, path, str(e) if isinstance(e, InputError) else "%s: %s" % (type(e).__name__, e))
                logger.warning("samtext: %s", err)
                summary.errors.append(err)
                summary.failed += 1
            else:
                attrs = {"confidence": result.confidence, **result.scores}
                if result.empty_reason:
                    attrs["empty_reason"] = result.empty_reason
                mask_path = os.path.join(mask_dir, out_field, sid + ".png") if mask_dir else None
                labels = {out_field: sds.segmentation_label(result.mask, 1, mask_path, **attrs)}
                if prompts_field:
                    labels[prompts_field] = sds.keypoints_label(result.points, result.point_labels, image.shape[:2])
                writer.add(sid, labels)
                summary.labelled += 1
                summary.empty += int(result.is_empty)
            yield done, len(ids)
    summary.seconds = time.time() - start
    return summary


def annotate_by_reference(
    samples,
    class_name: str,
    reference=None,
    reference_field: Optional[str] = None,
    progress: Union[bool, Callable[[int, int], None], None] = None,
    **kwargs,
) -> sds.RunSummary:
    """Labels every sample of ``samples`` (a dataset or view) with a ``fo.Segmentation`` of
    ``class_name``, learnt from one or more reference samples with masks.

    Arguments:
        samples: the target ``fo.Dataset`` or ``fo.DatasetView``. References in it are not relabelled.
        class_name: the object's name (``mask_targets`` of the output field become ``{1: class_name}``).
        reference: a sample, a sample id, or a list of them (several references average their features).
        reference_field: the field holding each reference's mask (``fo.Segmentation`` or
            ``fo.Detections``). Multi-class masks need ``reference_class_value``, unless the field's
            ``mask_targets`` name ``class_name``.
        progress: True for a progress bar, or a callable ``(done, total)``.
        **kwargs: ``reference_mask`` (path or array instead of ``reference_field``),
            ``reference_class_value``, ``out_field`` ("samtext_reference"), ``method`` ("prior" or
            "stitch"), ``sam_model`` ("vit_b", "vit_l", "vit_h", "tiny"), ``sam_checkpoint``,
            ``clip_model`` ("ViT-B-32" or "tiny"), ``clip_pretrained`` ("openai"), ``device``,
            ``precision`` ("auto", "fp32", "bf16"), ``refine``, ``min_similarity``, ``clip_threshold``
            (None: no CLIP check), ``num_prompt_sets`` (stitch), ``save_prompts`` (also write the
            prompt points to ``<out_field>_prompts``), ``overwrite`` (relabel samples that already
            have the field), ``mask_dir`` (write masks as PNGs there instead of into the database),
            ``batch_size`` (labels per database write).

    Returns:
        a :class:`samtext.dataset.RunSummary` with counts, per-sample errors and the run key.
    """
    gen = iter_annotate_by_reference(samples, class_name, reference, reference_field, **kwargs)
    if progress is not True:
        return sds.run_with_progress(gen, progress or None)
    from tqdm.auto import tqdm

    with tqdm(desc="samtext", unit="image") as bar:

        def show(done, total):
            bar.total, bar.n = total, done
            bar.refresh()

        return sds.run_with_progress(gen, show)
