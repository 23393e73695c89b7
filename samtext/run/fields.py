"""FiftyOne primitives shared by every action: field checks, class values, label conversion, batched writes.
The run driver (:mod:`samtext.run.driver`) puts them together.

Conventions: a field's existing class names (``mask_targets``) are never renamed; "already labelled" is read
from the dataset, never from a view (a view may hide the field); masks written to files get absolute paths.
"""

import logging
import os
import re
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

import fiftyone as fo

from .. import names
from ..pipelines.result import MaskResult, semantic_mask
from ..errors import SamtextError

logger = logging.getLogger(__name__)

MAX_CLASS_VALUE = 255  # masks are written as uint8


def check_field_name(name: str, what: str = "output field") -> str:
    """``name`` once it is a valid FiftyOne field name (``what``: how the message calls it)."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise SamtextError("%s %r is not a valid name (letters, digits and _, not starting with a digit)"
                           % (what, name))
    return name


def check_label_field(dataset: fo.Dataset, name: str, label_cls) -> bool:
    """Whether ``name`` exists (as a ``label_cls`` field); creates nothing.

    Raises:
        ValueError: the field exists with another type.
    """
    check_field_name(name)
    schema = dataset.get_field_schema()
    if name not in schema:
        return False
    f = schema[name]
    doc_type = getattr(f, "document_type", None)
    if not isinstance(f, fo.EmbeddedDocumentField) or doc_type is not label_cls:
        found = doc_type.__name__ if doc_type else type(f).__name__
        raise SamtextError(
            "field %r already exists with type %s, not %s; choose another output field" % (name, found, label_cls.__name__)
        )
    return True


def ensure_label_field(dataset: fo.Dataset, name: str, label_cls) -> bool:
    """Declares ``name`` as a ``label_cls`` field, or checks that the existing one has that type. Returns whether
    it was created.

    Raises:
        ValueError: the field exists with another type (it is left untouched).
    """
    if check_label_field(dataset, name, label_cls):
        return False
    dataset.add_sample_field(name, fo.EmbeddedDocumentField, embedded_doc_type=label_cls)
    return True


def hide_in_grid(dataset: fo.Dataset, name: str) -> None:
    """Leaves the field ``name`` unticked in the App's sidebar by default (the dataset's
    ``app_config.active_fields``), as FiftyOne leaves dense labels. For mask proposals: dozens of masks on every
    grid tile made Chromium's page grow past 10 GB while the Embeddings panel recoloured the grid (12,000
    proposals on 200 photos). A user ticks it to see them.

    A list of ticked fields (the user's, or FiftyOne's default: the label fields that are not dense) loses
    ``name``; the App reads an empty one as "not set", so when nothing would be left the list becomes one of
    unticked paths (every path of the schema but those the list ticked, plus ``name``). A list of unticked paths
    gains ``name``. Bookkeeping: a failure is logged, not raised."""
    try:
        config = dataset.app_config
        active = config.active_fields or fo.DatasetAppConfig.default_active_fields(dataset)
        if not active.exclude:  # a list of the ticked fields
            ticked = [path for path in active.paths if path != name and not path.startswith(name + ".")]
            if ticked:
                active = fo.ActiveFields(paths=ticked)
            else:
                unticked = [path for path in dataset.get_field_schema(flat=True) if path not in active.paths]
                active = fo.ActiveFields(exclude=True, paths=["_label_tags"] + unticked)
        if active.exclude and name not in active.paths:
            active.paths = list(active.paths) + [name]
        config.active_fields = active
        dataset.save()
    except Exception:
        logger.exception("samtext: could not leave %s unticked in the App", name)


def declare_attributes(dataset: fo.Dataset, names: Iterable[str]) -> None:
    """Adds the attributes written on the labels of ``names`` (``confidence`` is declared already; a proposal's
    ``predicted_iou``, ``cluster``, ...) to the dataset's schema, so that the App's sidebar filters them and the
    Embeddings panel colours by them. Bookkeeping: a failure is logged, not raised."""
    try:
        dataset.add_dynamic_sample_fields(fields=list(names))
    except Exception:
        logger.exception("samtext: could not declare the label attributes of %s", list(names))


def set_detection_attribute(dataset: fo.Dataset, field: str, attribute: str, values: Mapping[str, object]) -> int:
    """Sets ``attribute`` of the detections in the ``fo.Detections`` field ``field`` to ``values[label id]``, and
    to None on every other detection that has it (a new fit replaces the old one whole). Returns the number of
    samples written.

    One server-side update per sample that changes, sent in bulk: FiftyOne's ``set_label_values`` updates once
    per label, rewriting the sample's document, masks included, each time (70 s for 3,072 proposals on 4 photos);
    reading and saving the samples would decode every mask.
    """
    import pymongo
    from bson import ObjectId

    from fiftyone import ViewField as F

    values = {str(k): v for k, v in values.items()}
    had = set(dataset.match(F(field + ".detections").filter(F(attribute).exists()).length() > 0).values("id"))
    ops = []
    for sid, lids in zip(*dataset.values(["id", field + ".detections.id"])):
        lids = lids or []
        if sid not in had and not any(i in values for i in lids):
            continue
        new = [values.get(i) for i in lids]
        item = {"$mergeObjects": [{"$arrayElemAt": ["$%s.detections" % field, "$$i"]},
                                  {attribute: {"$arrayElemAt": [new, "$$i"]}}]}
        ops.append(pymongo.UpdateOne({"_id": ObjectId(sid)}, [
            {"$set": {field + ".detections": {"$map": {"input": {"$range": [0, len(lids)]}, "as": "i", "in": item}}}}]))
    for start in range(0, len(ops), 1000):
        dataset._sample_collection.bulk_write(ops[start:start + 1000], ordered=False)
    if ops:
        dataset.reload()
    return len(ops)


def has_labels(dataset: fo.Dataset, name: str) -> bool:
    """Whether any sample of the *dataset* (not of some view) has ``name`` set."""
    return dataset.has_field(name) and len(dataset.exists(name).limit(1)) > 0


def labelled_ids(dataset: fo.Dataset, name: str) -> set:
    """IDs of the dataset's samples whose ``name`` is set."""
    return set(dataset.exists(name).values("id")) if dataset.has_field(name) else set()


def class_values(dataset: fo.Dataset, name: str, classes: Iterable[str], overwrite: bool = False) -> Dict[str, int]:
    """The mask value of each class for the Segmentation field ``name``.

    A class the field already names (its ``mask_targets``, else the dataset's ``default_mask_targets``) keeps
    its value; a new class gets the next free value, so the field becomes multi-class and no existing mask
    changes meaning. Creates nothing.

    Raises:
        ValueError: the field's targets are RGB colours; more than 255 classes; or the field holds masks whose
            values have no names at all (a new class could clash with them) and ``overwrite`` is off.
    """
    targets = dict(dataset.mask_targets.get(name) or dataset.default_mask_targets or {})
    if any(not isinstance(k, (int, np.integer)) and not str(k).isdigit() for k in targets):
        raise SamtextError("field %r names its classes by RGB colour (%s); samtext writes class-value masks: choose "
                         "another output field" % (name, sorted(targets)[:3]))
    targets = {int(k): str(v) for k, v in targets.items()}
    from .class_maps import is_background_name

    if 0 in targets and not is_background_name(targets[0]):
        raise SamtextError("field %r names its pixel value 0 %r, but samtext writes background as 0: choose another "
                           "output field" % (name, targets[0]))
    if not targets and not overwrite and has_labels(dataset, name):
        raise SamtextError(
            "field %r already holds masks whose values have no class names (no mask_targets), so a new class "
            "could clash with them; name them first (dataset.mask_targets[%r] = {1: 'name', ...}; "
            "dataset.save()), or choose another output field, or pass overwrite=True" % (name, name))
    by_name = {v: k for k, v in sorted(targets.items(), reverse=True)}  # the lowest value of a repeated name
    values, top = {}, max(targets, default=0)
    for cls in classes:
        if cls in by_name:
            values[cls] = by_name[cls]
        elif cls not in values:
            top += 1
            values[cls] = top
    if top > MAX_CLASS_VALUE:
        raise SamtextError("field %r would need mask value %d; masks hold at most %d classes" % (name, top,
                                                                                          MAX_CLASS_VALUE))
    return values


def set_mask_targets(dataset: fo.Dataset, name: str, values: Mapping[str, int]) -> None:
    """Adds ``{value: class}`` to ``dataset.mask_targets[name]``, keeping every class already there (taken
    from ``default_mask_targets`` when the field has none of its own). Saves only if something changed."""
    base = dataset.mask_targets.get(name) or dataset.default_mask_targets or {}
    current = {int(k): str(v) for k, v in base.items()}
    merged = dict(current)
    merged.update({v: k for k, v in values.items() if v not in current})
    if merged != dataset.mask_targets.get(name):
        dataset.mask_targets[name] = merged
        dataset.save()


class LabelWriter:
    """Buffers ``{sample_id: label}`` per field and writes each batch with one ``set_values`` call per field.

    Arguments:
        dataset: the dataset to write to.
        batch_size: samples per write.
        before_flush: called before each write (to put what belongs to the labels elsewhere first).
    """

    def __init__(self, dataset: fo.Dataset, batch_size: int = 16, before_flush=None):
        self.dataset = dataset
        self.batch_size = batch_size
        self.before_flush = before_flush
        self._pending: Dict[str, Dict[str, object]] = {}
        self._stats: Dict[str, object] = {}
        self._count = 0
        self.dropped: List[object] = []  # the ``stats`` of samples deleted from the dataset before their write

    def add(self, sample_id: str, labels: Dict[str, object], stats=None) -> None:
        """Queues ``{field: label}`` for one sample (``stats``: what the caller counted for it, returned in
        :attr:`dropped` if the sample is gone when the batch is written); writes when the batch is full."""
        for name, label in labels.items():
            self._pending.setdefault(name, {})[sample_id] = label
        self._stats[sample_id] = stats
        self._count += 1
        if self._count >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self.before_flush is not None and self._count:
            self.before_flush()
        if self._stats:  # samples deleted while the run labelled them: their labels are dropped, not counted
            present = set(self.dataset.select(list(self._stats)).values("id"))
            for sid in [s for s in self._stats if s not in present]:
                self.dropped.append(self._stats[sid])
                for values in self._pending.values():
                    values.pop(sid, None)
        # the main field last: a sample counts as labelled once it is written, so its side fields go first
        for name, values in sorted(self._pending.items(), key=lambda kv: -len(kv[0])):
            if values:
                self.dataset.set_values(name, values, key_field="id", validate=False)
        self._pending = {}
        self._stats = {}
        self._count = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.flush()


def _save_png(array: np.ndarray, path: str) -> str:
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def segmentation_label(mask: np.ndarray, mask_path: Optional[str] = None, **attributes) -> fo.Segmentation:
    """A ``fo.Segmentation`` of the uint8 class-value ``mask``, stored in the database or, when ``mask_path``
    (absolute) is given, as a PNG there."""
    if mask_path:
        return fo.Segmentation(mask_path=_save_png(mask, mask_path), **attributes)
    return fo.Segmentation(mask=mask, **attributes)


def detections_label(result: MaskResult, default_label: str, mask_stem: Optional[str] = None) -> fo.Detections:
    """The instances of ``result`` as ``fo.Detections`` (box and mask cropped to it, confidence, scores).
    With ``mask_stem`` (an absolute path without extension) each instance mask is a PNG ``<stem>_<k>.png``."""
    dets = []
    for k, inst in enumerate(result.instances):
        det = fo.Detection.from_mask(inst.mask, label=inst.label or default_label, confidence=inst.confidence,
                                     **{n: float(v) for n, v in inst.scores.items() if v is not None})
        if mask_stem:
            det.mask_path = _save_png(det.mask.astype(np.uint8) * 255, "%s_%d.png" % (mask_stem, k))
            det.mask = None
        dets.append(det)
    return fo.Detections(detections=dets)


def detection_box(det: fo.Detection, size: Tuple[int, int], mask_shape: Optional[Tuple[int, int]] = None):
    """``(x0, y0, x1, y1)`` whole pixels (x1, y1 exclusive) of a ``fo.Detection``'s box in an image of
    ``size = (H, W)``: the corner rounded to the nearest pixel, the extent that of its instance mask
    (``mask_shape``) when given, else of the box; clipped to the image."""
    h, w = size
    bx, by, bw, bh = det.bounding_box
    x0, y0 = min(max(int(round(bx * w)), 0), w), min(max(int(round(by * h)), 0), h)
    mh, mw = mask_shape if mask_shape is not None else (int(round(bh * h)), int(round(bw * w)))
    return x0, y0, min(w, x0 + mw), min(h, y0 + mh)


def detection_mask(det: fo.Detection, size: Tuple[int, int], with_box: bool = False):
    """The ``(H, W)`` bool mask of a ``fo.Detection`` with an instance mask (in the database or a file), pasted at
    its box in an image of ``size = (H, W)`` (see :func:`detection_box`), so that a mask made with
    ``fo.Detection.from_mask`` comes back pixel for pixel. With ``with_box``: ``(mask, (x0, y0, x1, y1))``.

    Raises:
        ValueError: the detection has no instance mask.
    """
    crop = det.get_mask() if det.has_mask else None
    if crop is None:
        raise SamtextError("detection %s has no instance mask" % det.id)
    crop = np.asarray(crop) > 0
    x0, y0, x1, y1 = detection_box(det, size, crop.shape[:2])
    out = np.zeros(size, dtype=bool)
    out[y0:y1, x0:x1] = crop[: y1 - y0, : x1 - x0]
    return (out, (x0, y0, x1, y1)) if with_box else out


def keypoints_label(points: np.ndarray, labels: np.ndarray, size: Tuple[int, int]) -> fo.Keypoints:
    """Prompt points ``(K, 2)`` ``(x, y)`` pixels and labels ``(K,)`` as ``fo.Keypoints`` named
    "positive" and "negative", in FiftyOne's relative coordinates for an image of ``size = (H, W)``."""
    h, w = size
    kps = []
    for value, name in ((1, "positive"), (0, "negative")):
        pts = [(float(x) / w, float(y) / h) for (x, y), lbl in zip(points, labels) if lbl == value]
        if pts:
            kps.append(fo.Keypoint(label=name, points=pts))
    return fo.Keypoints(keypoints=kps)


def labels_for(result: MaskResult, fields: "OutputFields", values: Mapping[str, int], default_label: str,
               sample_id: str) -> Dict[str, object]:
    """``{field: label}`` for one image's result: the semantic Segmentation (and, as configured, the instance
    Detections and the prompt Keypoints); for a ``detections`` output, the instances as the main field."""
    out = {}
    if fields.kind == "detections":
        dets = detections_label(result, default_label, fields.mask_path(fields.out, sample_id, ext=""))
        dets["image_height"], dets["image_width"] = (int(v) for v in result.shape)  # to paste the masks back
        if result.empty_reason:
            dets["empty_reason"] = result.empty_reason
        out[fields.out] = dets
    else:
        attrs = {"confidence": result.confidence, "num_instances": len(result.instances)}
        attrs.update({k: float(v) for k, v in result.scores.items() if v is not None})
        if result.empty_reason:
            attrs["empty_reason"] = result.empty_reason
        path = fields.mask_path(fields.out, sample_id)
        out[fields.out] = segmentation_label(semantic_mask(result, values, default_label), path, **attrs)
    if fields.instances:
        stem = fields.mask_path(fields.instances, sample_id, ext="")
        out[fields.instances] = detections_label(result, default_label, stem)
    if fields.prompts:
        out[fields.prompts] = keypoints_label(result.points, result.point_labels, result.shape)
    return out


OUTPUT_KINDS = {"segmentation": fo.Segmentation, "detections": fo.Detections}


class OutputFields:
    """The fields a run writes: ``out`` (``fo.Segmentation``, or ``fo.Detections`` for ``kind="detections"``),
    ``<out>_instances`` (``fo.Detections``, segmentation kind only) and ``<out>_prompts`` (``fo.Keypoints``) when
    asked for, and where mask files go (``mask_dir``, made absolute).
    """

    def __init__(self, out: str, instances: bool = True, prompts: bool = False, mask_dir: Optional[str] = None,
                 kind: str = "segmentation"):
        if kind not in OUTPUT_KINDS:
            raise SamtextError("unknown output kind %r; choose one of %s" % (kind, sorted(OUTPUT_KINDS)))
        self.kind = kind
        self.out = check_field_name(out)
        self.instances = out + names.INSTANCES_SUFFIX if instances and kind == "segmentation" else None
        self.prompts = out + "_prompts" if prompts else None
        self.mask_dir = os.path.abspath(os.path.expanduser(mask_dir)) if mask_dir else None

    @property
    def has_classes(self) -> bool:
        """Whether the main field maps mask values to class names (``mask_targets``)."""
        return self.kind == "segmentation"

    def types(self) -> List[Tuple[str, type]]:
        pairs = [(self.out, OUTPUT_KINDS[self.kind]), (self.instances, fo.Detections),
                 (self.prompts, fo.Keypoints)]
        return [(name, cls) for name, cls in pairs if name]

    def names(self) -> List[str]:
        return [name for name, _ in self.types()]

    def mask_path(self, field: str, sample_id: str, ext: str = ".png") -> Optional[str]:
        return os.path.join(self.mask_dir, field, sample_id + ext) if self.mask_dir else None

    def check(self, dataset: fo.Dataset, inputs: Iterable[str] = ()) -> None:
        """Checks names and types of the output fields, and that none of them is a field the action reads or
        a field that holds what must not change (:func:`protected_fields`).

        Raises:
            ValueError: what is wrong, naming the field.
        """
        inputs = {f for f in inputs if f}
        protected = protected_fields(dataset, self.out)
        for name, cls in self.types():
            if name in inputs:
                raise SamtextError(
                    "the output field %r is a field the run reads (its reference, ground truth, exemplar masks or "
                    "proposals); machine labels would land among them: choose another output field" % name)
            if name in protected:
                raise SamtextError("the output field %r is %s; machine labels would land among them: choose another "
                                 "output field" % (name, protected[name]))
            check_label_field(dataset, name, cls)

    def ensure(self, dataset: fo.Dataset) -> None:
        """Declares the output fields; a new field of many masks per image (``kind="detections"``: proposals) is
        left unticked in the App's grid (:func:`hide_in_grid`)."""
        for name, cls in self.types():
            if ensure_label_field(dataset, name, cls) and name == self.out and self.kind in UNTICKED_KINDS:
                hide_in_grid(dataset, name)


UNTICKED_KINDS = ("detections",)  # outputs of many masks per image (proposals): left unticked in the App's grid


def protected_fields(dataset: fo.Dataset, out_field: str) -> Dict[str, str]:
    """``{field: what it holds}`` of the fields a run into ``out_field`` must never write: the inputs of every
    samtext run (references, ground truth, exemplar masks, proposals), the side fields (instances, prompts) and
    outputs of samtext runs of other fields, and the ground truth of the dataset's evaluations."""
    from ..settings import ProposalSettings
    from . import records

    out: Dict[str, str] = {}
    by_key = records.samtext_records(dataset)
    for key, record in by_key.items():
        owner = record.get("out_field")
        for name in record.get("input_fields") or ():
            if by_key.get(records.run_key_for(name), {}).get("action") == ProposalSettings.action:
                continue  # proposals are read by few-shot, and recomputed at will
            out.setdefault(name, "an input of the samtext run of %r (%s)" % (owner, record.get("action")))
        if owner == out_field:
            continue
        for what in ("instances_field", "prompts_field"):
            if record.get(what):
                out.setdefault(record[what], "the %s of samtext field %r" % (what.split("_")[0], owner))
        out.setdefault(owner, "the output of another samtext run (%s)" % record.get("action"))
    for key in dataset.list_evaluations():
        try:
            gt = dataset.get_evaluation_info(key).config.gt_field
        except Exception:  # an evaluation of a kind without a ground-truth field
            continue
        if gt:
            out.setdefault(gt, "the ground truth of evaluation %r" % key)
    return out


def samples_by_id(dataset: fo.Dataset, samples, what: str = "reference") -> List[fo.Sample]:
    """The samples a caller named: ``fo.Sample`` objects as given, sample IDs looked up in ``dataset``.

    Arguments:
        samples: a sample, a sample ID, or a list of them.
        what: the parameter's name, for messages ("reference", "mask_samples").

    Raises:
        ValueError: none given; an ID that is not an ObjectId, or names no sample of the dataset.
    """
    from bson import ObjectId

    given = [] if samples is None else list(samples) if isinstance(samples, (list, tuple)) else [samples]
    if not given:
        raise SamtextError("no %s sample given: pass %s=<sample, sample ID, or a list of them>" % (what, what))
    is_sample = lambda r: isinstance(r, (fo.Sample, fo.core.sample.SampleView))  # noqa: E731
    ids = [r for r in given if not is_sample(r)]
    bad = [r for r in ids if not isinstance(r, str) or not ObjectId.is_valid(r)]
    if bad:
        raise SamtextError("%s %r is not a sample ID (a 24-character hex ObjectId) or a fo.Sample" % (what, bad[0]))
    found = {s.id: s for s in dataset.select(ids)} if ids else {}
    missing = [r for r in ids if r not in found]
    if missing:
        raise SamtextError("%s %r: no sample with this ID in dataset %r" % (what, missing[0], dataset.name))
    return [r if is_sample(r) else found[r] for r in given]
