"""Annotate by few-shot examples with SAM 3 (``method="sam3"``): the chosen exemplars, from any images, as SAM 3's
visual exemplars on each target.

SAM 3 reads exemplar boxes only in the image they are drawn in. Here the exemplars come from many images (a lasso
on the proposal map), so each target is put on a canvas (as one-shot's, :mod:`samtext.pipelines.reference_sam3`)
whose left cell is a collage of the class's exemplars: each exemplar's crop (its box with a margin) in a slot of a
grid, its box there a positive exemplar; the negatives' crops in further slots, their boxes negative exemplars.
The class name is the text. SAM 3's instances with most of their mask in the target's cell, scoring at least
``threshold``, are the class's labels in the target.

Coordinates: boxes ``XYXY`` pixels; masks ``(H, W)`` of the target. Nothing here imports FiftyOne.
"""

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..models.sam3_concepts import Exemplars
from .geometry import grow_box, repeats
from .reference_sam3 import FILL, MASK_IOU, CanvasReader, _letterbox
from .result import Instance, MaskResult, PreparesImages

MAX_SHOWN = 12  # exemplars of a class on one collage (positives first); more are taken evenly
CROP_MARGIN = 0.25  # an exemplar's crop: its box grown by this fraction of its size on each side


@dataclass
class Shot:
    """One exemplar: an ``(h, w, 3)`` uint8 crop around the object and the object's ``(4,)`` XYXY box in it."""

    crop: np.ndarray
    box: np.ndarray


def shot_from(image: np.ndarray, box, margin: float = CROP_MARGIN) -> Shot:
    """The :class:`Shot` of the object in ``box`` (XYXY pixels of ``image``)."""
    x0, y0, x1, y1 = [float(v) for v in box]
    cx0, cy0, cx1, cy1 = grow_box((x0, y0, x1, y1), image.shape[:2], margin)
    return Shot(image[cy0:cy1, cx0:cx1].copy(), np.array([x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0], np.float32))


@dataclass
class ShotClass:
    """A class's exemplars as SAM 3 sees them: its name (the text) and its positive and negative shots."""

    name: str
    positives: List[Shot]
    negatives: List[Shot] = field(default_factory=list)


def _evenly(items: Sequence, most: int) -> list:
    if len(items) <= most:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, most).round()]


def collage(shots: Sequence[Shot], labels: Sequence[int], width: int, height: int) -> Tuple[np.ndarray, Exemplars]:
    """``(height, width, 3)`` uint8 collage of the shots in a grid (near-square slots), and their boxes on it as
    SAM 3's exemplars with ``labels``."""
    n = len(shots)
    cols = max(1, int(math.ceil(math.sqrt(n * width / height))))
    rows = int(math.ceil(n / cols))
    sw, sh = width // cols, height // rows
    out = np.full((height, width, 3), FILL, np.uint8)
    boxes = []
    for i, shot in enumerate(shots):
        r, c = divmod(i, cols)
        tile, cell = _letterbox(shot.crop, sw, sh, c * sw)
        cell.y0 += r * sh
        out[cell.y0:cell.y0 + cell.h, cell.x0:cell.x0 + cell.w] = tile
        boxes.append(cell.box_to_canvas(shot.box))
    return out, Exemplars(np.array(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64))


class ShotMatcher(PreparesImages):
    """``image -> MaskResult`` by SAM 3 with each class's exemplars on a collage beside the target.

    Arguments:
        concepts: a :class:`samtext.models.sam3_concepts.Sam3Concepts` (or a double).
        classes: the :class:`ShotClass` of each class.
        threshold: the least SAM 3 score of an instance.
        top_k: the most objects per class and image (None: all).
    """

    def __init__(self, concepts, classes: Sequence[ShotClass], threshold: float = 0.5, top_k: Optional[int] = None):
        self.segmenter = concepts
        self.classes = list(classes)
        self.threshold = float(threshold)
        self.top_k = top_k
        self.reader = CanvasReader(concepts)
        self.collages = []
        for c in self.classes:
            neg = _evenly(c.negatives, min(len(c.negatives), MAX_SHOWN // 3))  # a third of the slots at most
            pos = _evenly(c.positives, MAX_SHOWN - len(neg))
            self.collages.append(collage(pos + neg, [1] * len(pos) + [0] * len(neg), self.reader.split,
                                         self.reader.side))

    def __call__(self, image: np.ndarray) -> MaskResult:
        shape = tuple(image.shape[:2])
        instances: List[Instance] = []
        best = 0.0
        for c, (left, exemplars) in zip(self.classes, self.collages):
            found, cell = self.reader.find(left, image, c.name, exemplars)
            kept: List[np.ndarray] = []
            for score, mask in self.reader.instances(found, cell, shape, self.threshold):
                if self.top_k is not None and len(kept) >= self.top_k:
                    break
                if any(repeats(mask, other, MASK_IOU) for other in kept):
                    continue
                kept.append(mask)
                instances.append(Instance(mask, score, label=c.name, scores={"sam3_score": score}))
            best = max(best, self.reader.last_best)
        if not instances:
            return MaskResult.empty(shape, "SAM 3 found nothing like the exemplars (best %.2f < threshold %.2f)"
                                    % (best, self.threshold), confidence=1.0 - best, best_score=best)
        instances.sort(key=lambda inst: -inst.confidence)
        return MaskResult(shape, instances, np.zeros((0, 2), np.float32), np.zeros((0,), int),
                          scores={"best_score": best})
