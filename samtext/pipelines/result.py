"""What every action returns for one image: the instances it found, or why there are none.

The dataset layer turns a :class:`MaskResult` into a semantic ``fo.Segmentation`` (one class value per
pixel, overlaps resolved by score) and the instances as ``fo.Detections``. Nothing here imports FiftyOne.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np


@dataclass
class Instance:
    """One object found in an image.

    Attributes:
        mask: ``(H, W)`` bool mask at the image's size.
        confidence: in [0, 1]; how sure the action is of this mask (SAM's predicted IoU unless said).
        label: the class name, or None for the action's single class.
        scores: named diagnostics (``sam_score``, ``similarity``, ``clip_score``, ...).
        embedding: an optional ``(D,)`` float32 unit vector describing the object (mask proposals carry one).
    """

    mask: np.ndarray
    confidence: float
    label: Optional[str] = None
    scores: Dict[str, float] = field(default_factory=dict)
    embedding: Optional[np.ndarray] = None

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class MaskResult:
    """The outcome for one image.

    Attributes:
        shape: ``(H, W)`` of the image.
        instances: the objects found, best first; empty when the object is absent.
        points: ``(K, 2)`` prompt points as ``(x, y)`` pixels of the image.
        point_labels: ``(K,)`` 1 = foreground, 0 = background.
        empty_reason: why nothing was found, or None.
        absent_confidence: for an empty result, how sure the action is that the object is absent.
        scores: image-level diagnostics (``similarity``, ``gate``, ...).
    """

    shape: Tuple[int, int]
    instances: List[Instance]
    points: np.ndarray
    point_labels: np.ndarray
    empty_reason: Optional[str] = None
    absent_confidence: float = 0.0
    scores: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def empty(cls, shape, reason: str, points=None, point_labels=None, confidence: float = 0.0,
              **scores) -> "MaskResult":
        points = np.zeros((0, 2), np.float32) if points is None else points
        point_labels = np.zeros((0,), int) if point_labels is None else point_labels
        return cls(tuple(shape), [], points, point_labels, reason, float(confidence), dict(scores))

    @property
    def is_empty(self) -> bool:
        return not any(inst.mask.any() for inst in self.instances)

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool union of the instances."""
        out = np.zeros(self.shape, dtype=bool)
        for inst in self.instances:
            out |= inst.mask
        return out

    @property
    def confidence(self) -> float:
        """The mean confidence of the instances; for an empty result, the confidence of absence."""
        if not self.instances:
            return self.absent_confidence
        return float(np.mean([inst.confidence for inst in self.instances]))


def semantic_mask(result: MaskResult, values: Mapping[str, int], default_label: str) -> np.ndarray:
    """``(H, W)`` uint8 mask with ``values[label]`` on each instance's pixels (0 elsewhere). Where instances
    overlap, the more confident one wins."""
    out = np.zeros(result.shape, dtype=np.uint8)
    for inst in sorted(result.instances, key=lambda i: i.confidence):
        out[inst.mask] = values[inst.label or default_label]
    return out


class PreparesImages:
    """For labellers whose first step is ``self.segmenter.embed(image)``: the run driver's loader thread hands
    them upcoming images first, so that SAM's preprocessing (and on CUDA a batched encoder pass) of the next
    images overlaps the labelling of this one (:meth:`samtext.models.SamSegmenter.prepare`). A segmenter without
    ``prepare`` (a test double) is left alone."""

    segmenter = None

    @property
    def prepare_batch(self) -> int:
        return int(getattr(self.segmenter, "encoder_batch", 1))

    def prepare(self, images) -> None:
        prepare = getattr(self.segmenter, "prepare", None)
        if prepare is not None:
            prepare(images)

    def discard_prepared(self) -> None:
        discard = getattr(self.segmenter, "discard_prepared", None)
        if discard is not None:
            discard()
