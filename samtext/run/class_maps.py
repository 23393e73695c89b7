"""Label fields read as class maps: what evaluation, review, training and the review loop all need.

A *class map* is an ``(H, W)`` uint8 array at the image's own size whose values index a list of class names:
0 is background, ``k`` is ``names[k - 1]``. Fields are matched **by class name**, never by raw pixel value, so
a ground truth stored as 0/255 and a samtext field ``{1: "cat"}`` compare once the 255 is named "cat".

- ``fo.Segmentation``: its values are named by ``targets`` (an override such as ``{255: "cat"}``, else the
  field's ``mask_targets``, else the dataset's ``default_mask_targets``). A field with no names at all is read
  as *binary* (every nonzero value is the one class) when exactly one class is asked for.
- ``fo.Detections`` with instance masks: each detection's mask is pasted at its box under its label's class
  (rasterised); detections of other labels and boxes without masks are ignored.

Values a field names "void" or "ignore" become :data:`IGNORE` (255), left out by evaluation and training. A
field's pixel value 0 is background unless its ``mask_targets`` give 0 a class name (CamVid names 0 "Sky"):
then it is that class like any other.
A mask of another resolution than its image (same aspect ratio) is resized by nearest neighbour; another
aspect ratio is an error naming the sizes.
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import fiftyone as fo

from ..images import InputError, fit_mask, image_size, read_mask_values
from . import fields as sds
from ..errors import SamtextError

LABEL_TYPES = (fo.Segmentation, fo.Detections)


def field_type(dataset: fo.Dataset, field: str, what: str = "field"):
    """``fo.Segmentation`` or ``fo.Detections``: the label type of ``field``.

    Raises:
        ValueError: the field does not exist, or holds another type (named).
    """
    schema = dataset.get_field_schema()
    if field not in schema:
        raise SamtextError("%s %r is not a field of dataset %r" % (what, field, dataset.name))
    doc_type = getattr(schema[field], "document_type", None)
    if doc_type not in LABEL_TYPES:
        found = doc_type.__name__ if doc_type else type(schema[field]).__name__
        raise SamtextError("%s %r holds %s; samtext reads fo.Segmentation or fo.Detections (with instance masks)"
                         % (what, field, found))
    return doc_type


def segmentation_targets(dataset: fo.Dataset, field: str, override: Optional[Mapping] = None) -> Dict[int, str]:
    """``{pixel value: class name}`` of a Segmentation field (value 0 left out when it is unnamed or named as
    background; a class named at 0, such as CamVid's "Sky", is kept): ``override``, else
    the field's ``mask_targets``, else the dataset's ``default_mask_targets``; ``{}`` when nothing names them.

    Raises:
        ValueError: the targets are RGB colours, or a value is not a whole number in 0..255.
    """
    targets = override if override is not None else (dataset.mask_targets.get(field)
                                                      or dataset.default_mask_targets or {})
    out = {}
    for value, name in dict(targets).items():
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise SamtextError("field %r names its classes by RGB colour or by %r; samtext reads class-value masks "
                             "(give targets such as {255: 'cat'})" % (field, value)) from None
        if not 0 <= number <= 255:
            raise SamtextError("field %r: mask value %r is outside 0..255" % (field, value))
        if number or not is_background_name(name):  # 0 is background unless it names a class (CamVid's "Sky")
            out[number] = str(name)
    return out


def detection_classes(samples, field: str) -> List[str]:
    """The distinct labels of a Detections field's detections, sorted."""
    return sorted({v for v in samples.values(field + ".detections.label", unwind=True) if v is not None})


def field_classes(samples, field: str, targets: Optional[Mapping] = None) -> List[str]:
    """The class names a field labels (background names such as "background" left out), in value order for
    a segmentation."""
    dataset = samples._root_dataset
    if field_type(dataset, field) is fo.Detections:
        return [n for n in detection_classes(samples, field) if not is_background_name(n)]
    named = segmentation_targets(dataset, field, targets)
    return list(dict.fromkeys(n for _, n in sorted(named.items()) if not is_background_name(n)))


BACKGROUND_NAMES = ("background", "bg", "_background_")
IGNORE_NAMES = ("ignore", "void", "unlabeled", "unlabelled", "don't care")
IGNORE = 255  # the class map value of pixels to leave out (a "void" class): not scored, not trained


def is_background_name(name: str) -> bool:
    """Whether a class name means "no class": background (read as 0) or void/ignore (read as :data:`IGNORE`)."""
    name = str(name).strip().lower()
    return name in BACKGROUND_NAMES or name in IGNORE_NAMES


def is_ignore_name(name: str) -> bool:
    return str(name).strip().lower() in IGNORE_NAMES


def mask_source(label: fo.Segmentation):
    """What a Segmentation's mask is read from: its array in the database, else its PNG file's path (None when
    it has neither)."""
    return label.mask if label.mask is not None else label.mask_path


def frame_size(filepath: str, metadata=None, *labels) -> Optional[Tuple[int, int]]:
    """``(H, W)`` to read a sample's labels at: the image's (:func:`sample_size`), else, when the image cannot
    be read, the first of ``labels`` that says its own (a Segmentation's mask, Detections' ``image_height`` /
    ``image_width``); None when nothing does."""
    try:
        return sample_size(filepath, metadata)
    except InputError:
        pass
    for label in labels:
        if isinstance(label, fo.Segmentation) and mask_source(label) is not None:
            try:
                return tuple(read_mask_values(mask_source(label)).shape[:2])
            except InputError:
                continue
        elif isinstance(label, fo.Detections):
            h, w = label.get_field("image_height") if label.has_field("image_height") else None, \
                label.get_field("image_width") if label.has_field("image_width") else None
            if h and w:
                return int(h), int(w)
    return None


def sample_size(filepath: str, metadata=None) -> Tuple[int, int]:
    """``(H, W)`` of a sample's image: from its FiftyOne ``metadata`` when computed, else from the file's header.

    Raises:
        InputError: no metadata and the file cannot be read.
    """
    w, h = getattr(metadata, "width", None), getattr(metadata, "height", None)
    if w and h:
        return int(h), int(w)
    return image_size(filepath)


class ClassMapReader:
    """Reads the labels of one field as class maps over ``names`` (see the module's docstring).

    Arguments:
        dataset: the dataset that holds ``field``.
        field: a ``fo.Segmentation`` or ``fo.Detections`` field.
        names: the class names to read, in order (class map value ``k`` is ``names[k - 1]``).
        targets: ``{value: name}`` overriding the Segmentation field's own ``mask_targets``.

    Values named "background" read as 0; values named "void"/"ignore" read as :data:`IGNORE` (left out of
    evaluation and training); values of other classes than ``names`` read as 0.
    """

    def __init__(self, dataset: fo.Dataset, field: str, names: Sequence[str], targets: Optional[Mapping] = None):
        self.field = field
        self.names = list(names)
        self.kind = field_type(dataset, field)
        index = {n: k for k, n in enumerate(self.names, 1)}
        self.lut = None
        self.binary = False
        if self.kind is fo.Segmentation:
            named = segmentation_targets(dataset, field, targets)
            if not named and len(self.names) == 1:
                self.binary = True  # unnamed 0/255 (or 0/1) masks: nonzero is the one class
            else:
                self.lut = np.zeros(256, np.uint8)
                for value, name in named.items():
                    self.lut[value] = IGNORE if is_ignore_name(name) else index.get(name, 0)
        self.index = index

    def __call__(self, label, size: Tuple[int, int]) -> Optional[np.ndarray]:
        """The ``(H, W)`` uint8 class map of ``label`` for an image of ``size = (H, W)``; None when the sample
        has no label.

        Raises:
            InputError: a mask that cannot be read, has colour values, or another aspect ratio than its image.
        """
        if label is None:
            return None
        if self.kind is fo.Detections:
            return self._detections(label, size)
        source = mask_source(label)
        if source is None:
            raise InputError("the Segmentation in field %r has no mask" % self.field)
        values = read_mask_values(source)
        if values.max(initial=0) > 255:
            raise InputError("the mask in field %r has colour values; samtext reads class-value masks" % self.field)
        if self.binary:
            out = (values != 0).astype(np.uint8)
        else:
            out = self.lut[values.astype(np.int64)]
        try:
            return fit_mask(out, size)
        except InputError as e:
            raise InputError("field %r: %s" % (self.field, e)) from None

    def _detections(self, label, size) -> np.ndarray:
        if label.detections and not any(d.has_mask for d in label.detections):
            raise InputError("the %d detections in field %r are boxes without instance masks; samtext compares and "
                             "trains on masks" % (len(label.detections), self.field))
        out = np.zeros(size, np.uint8)
        for det in sorted(label.detections, key=lambda d: d.confidence or 0.0):
            value = self.index.get(det.label)
            if value is None or not det.has_mask:
                continue
            out[sds.detection_mask(det, size)] = value
        return out


def class_names_to_match(pred_names: Sequence[str], gt_names: Sequence[str], pred_field: str,
                         gt_field: str) -> List[str]:
    """The classes two fields share, in the ground truth's order. Two single-class fields with different names
    are *not* matched silently.

    Raises:
        ValueError: they share no class (both lists are named, so the user can fix the names).
    """
    shared = [n for n in gt_names if n in set(pred_names)]
    if not shared:
        example = (list(pred_names) or list(gt_names) or ["cat"])[0]
        if not pred_names or not gt_names:
            fix = "name the values of the field without names (e.g. %s={255: %r})" % (
                "gt_targets" if not gt_names else "pred_targets", example)
        else:
            fix = "name them alike (gt_targets / pred_targets override a Segmentation field's names, e.g. " \
                  "gt_targets={1: %r})" % example
        raise SamtextError("fields %r (classes %s) and %r (classes %s) share no class name; %s" % (
            pred_field, list(pred_names) or "unnamed", gt_field, list(gt_names) or "unnamed", fix))
    return shared


def match_classes(samples, pred_field: str, gt_field: str, classes: Optional[Sequence[str]] = None,
                  gt_targets: Optional[Mapping] = None, pred_targets: Optional[Mapping] = None) -> List[str]:
    """The class names two fields are compared on, in the ground truth's order (or ``classes``' order).

    A Segmentation field with no names at all takes the other field's class when that field has exactly one
    (or when ``classes`` names exactly one): its nonzero values are that class (binary).

    Raises:
        ValueError: a field is missing or of another type; the fields share no class (also: a field without
            names that cannot be read as binary); a class of ``classes`` is not named by both fields.
    """
    dataset = samples._root_dataset
    gt_kind = field_type(dataset, gt_field, "gt_field")
    pred_kind = field_type(dataset, pred_field, "pred_field")
    gt_names = field_classes(samples, gt_field, gt_targets)  # [] for a Segmentation field without names
    pred_names = field_classes(samples, pred_field, pred_targets)
    wanted = None if classes is None else list(dict.fromkeys(str(c) for c in classes))
    if wanted is not None and not wanted:
        raise SamtextError("classes is empty; give at least one class name, or None for every shared class")

    def unnamed(name, kind, targets):
        return kind is fo.Segmentation and not segmentation_targets(dataset, name, targets)

    for field_, kind, targets, names, other in ((gt_field, gt_kind, gt_targets, gt_names, pred_names),
                                                (pred_field, pred_kind, pred_targets, pred_names, gt_names)):
        if unnamed(field_, kind, targets):
            single = wanted if wanted is not None and len(wanted) == 1 else (other if len(other) == 1 else None)
            if single:
                names[:] = single  # binary: every nonzero value is this class (label_masks.ClassMapReader)
    shared = class_names_to_match(pred_names, gt_names, pred_field, gt_field)
    if wanted is None:
        return shared
    for name in wanted:
        lacking = [f for f, names in ((gt_field, gt_names), (pred_field, pred_names)) if name not in names]
        if lacking:
            raise SamtextError("class %r is not a class of field %s (ground truth classes %s, prediction classes %s)"
                             % (name, " or ".join(repr(f) for f in lacking), gt_names, pred_names))
    return wanted


def class_value_from_targets(dataset: fo.Dataset, field: str, class_name: str) -> Optional[int]:
    """The mask value that ``field``'s ``mask_targets`` (else the dataset's default ones) give ``class_name``, or
    None."""
    targets = dataset.mask_targets.get(field) or dataset.default_mask_targets or {}
    for value, name in targets.items():
        if str(name) == class_name:
            return int(value)
    return None
