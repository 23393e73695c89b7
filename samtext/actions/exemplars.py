"""Exemplars given as masks: the instances of a class in a Segmentation or Detections field of a few samples
(drawn by hand, ground truth, or labels approved in an earlier review), embedded as the proposals were.

A proposal and a mask exemplar are only comparable when the same embedder (model, weights, crop context) made
their vectors, so the embedder is rebuilt from the proposals run's record; only weights given as a file path
cannot be found again from the record and must be passed.
"""

import os
from typing import Callable, List, Optional, Sequence

import numpy as np

import fiftyone as fo

from ..images import InputError, fit_mask, load_image, read_mask_values
from ..pipelines.geometry import components
from ..run import fields as sds
from ..run.class_maps import class_value_from_targets
from ..run.fields import samples_by_id
from ..settings import ExamplesSettings, ProposalSettings, check_class_value
from ..errors import SamtextError

Embedder = Callable[[np.ndarray, List[np.ndarray]], np.ndarray]


def proposals_embedder(settings: dict, given: Optional[ExamplesSettings] = None) -> Embedder:
    """``(image, masks) -> (N, D) vectors`` made as the proposals run with ``settings`` (its record) made them, on
    the device and with the weights files of ``given`` (the few-shot run's settings).

    Raises:
        ValueError: the proposals were embedded with a weights file that is not passed again (or another one
            is), or were not embedded at all.
    """
    from ..models import load_clip, load_sam
    from ..pipelines.embeddings import clip_mask_embeddings, sam_mask_embeddings

    given = given or ExamplesSettings()
    device, precision = given.device, given.precision
    embedder = settings.get("embedder")
    if embedder not in ("clip", "sam"):
        raise SamtextError("the proposals were computed without embeddings (embedder=%r)" % (embedder,))

    def weights(kind: str, given: Optional[str]) -> Optional[str]:
        recorded = settings.get(kind + "_checkpoint")
        if recorded and not given:
            raise SamtextError("the proposals were embedded with the weights file %r: pass its path as %s_checkpoint "
                             "so that mask exemplars are embedded the same way" % (recorded, kind))
        if given and os.path.basename(given) != (recorded or os.path.basename(given)):
            raise SamtextError("%s_checkpoint %r is not the weights file the proposals were embedded with (%r)"
                             % (kind, given, recorded))
        return given

    if embedder == "clip":
        clip = load_clip(settings.get("clip_model"), settings.get("clip_pretrained"), device, precision,
                         weights("clip", given.clip_checkpoint))
        context = float(settings.get("crop_context", ProposalSettings.crop_context))
        return lambda image, masks: clip_mask_embeddings(clip, image, masks, context)
    seg = load_sam(settings.get("sam_model"), weights("sam", given.sam_checkpoint), device, precision)
    return lambda image, masks: sam_mask_embeddings(seg, seg.embed(image), masks)


def instance_masks(label, size, mask_class, field: str, targets_value: Optional[int],
                   min_area: int) -> List[np.ndarray]:
    """The ``(H, W)`` bool masks of the instances of ``mask_class`` in ``label``: a Detections' masked detections
    labelled so, or the connected parts (of at least ``min_area`` pixels) of a Segmentation's pixels of that
    class (its value in the field's mask targets, or a pixel value)."""
    if isinstance(label, fo.Segmentation):
        value = targets_value
        if value is None:
            try:
                value = check_class_value(mask_class)
            except ValueError:
                value = None
        if value is None:
            raise InputError("class %r is not in the mask targets of field %r; give its pixel value as mask_class"
                             % (mask_class, field))
        source = label.mask if label.mask is not None else label.mask_path
        if source is None:
            raise InputError("the Segmentation in field %r has no mask" % field)
        return components(fit_mask(read_mask_values(source) == value, size), min_area)  # absent: no instances
    if isinstance(label, fo.Detections):
        dets = [d for d in label.detections if d.has_mask and d.label == str(mask_class)]
        if not dets:
            raise InputError("field %r has no detection labelled %r with a mask (labels here: %s)"
                             % (field, mask_class, sorted({str(d.label) for d in label.detections}) or "none"))
        return [m for m in (sds.detection_mask(d, size) for d in dets) if m.sum() >= max(1, min_area)]
    raise InputError("field %r holds %s; exemplar masks must be fo.Segmentation or fo.Detections"
                     % (field, type(label).__name__))


def mask_exemplar_vectors(dataset: fo.Dataset, field: str, class_name: str, embed: Embedder,
                          samples: Sequence[str] = (), mask_class=None, min_area: int = 100,
                          what: str = "exemplar") -> np.ndarray:
    """``(N, D)`` vectors of the instances of a class in ``field`` of ``samples`` (ids of ``dataset``; default:
    every sample where the field is set).

    Raises:
        ValueError: the field is missing or of the wrong type, no sample has it, a sample's label or image
            cannot be used (the message names the sample), or no instance is found.
    """
    schema = dataset.get_field_schema()
    if field not in schema:
        raise SamtextError("mask_field %r is not a field of dataset %r" % (field, dataset.name))
    kind = getattr(schema[field], "document_type", None)
    if kind not in (fo.Segmentation, fo.Detections):
        raise SamtextError("mask_field %r holds %s; exemplar masks must be in a fo.Segmentation or fo.Detections "
                         "field" % (field, getattr(kind, "__name__", type(schema[field]).__name__)))
    mask_class = class_name if mask_class is None or mask_class == "" else mask_class
    chosen = samples_by_id(dataset, list(samples), what="mask_samples") if samples else list(dataset.exists(field))
    if not chosen:
        raise SamtextError("no sample of dataset %r has masks in field %r" % (dataset.name, field))
    targets_value = class_value_from_targets(dataset, field, str(mask_class))
    vectors = []
    for sample in chosen:
        try:
            label = sample[field] if sample.has_field(field) else None
            if label is None:
                raise InputError("field %r is empty" % field)
            image = load_image(sample.filepath)
            masks = instance_masks(label, image.shape[:2], mask_class, field, targets_value, min_area)
            if masks:
                vectors.append(embed(image, masks))
        except (InputError, ValueError, OSError) as e:
            raise SamtextError("%s masks of %r, sample %s (%s): %s" % (what, class_name, sample.id, sample.filepath, e))
    if not vectors:
        raise SamtextError("no %s of %r found in field %r of %d samples (instances of at least %d pixels)"
                         % (what, mask_class, field, len(chosen), min_area))
    return np.concatenate(vectors).astype(np.float32)
