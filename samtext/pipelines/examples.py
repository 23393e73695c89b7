"""Labelling from exemplars: each mask proposal is scored by the similarity of its embedding to the
exemplars of each class, and the proposals close enough become that class.

A class has positive exemplars (proposals, or masks, that show it) and optional negative ones (look-alikes that
must not be labelled). A proposal's score for a class is its cosine similarity to the positives (the best one,
``scoring="max"``, or their normalised mean, ``"prototype"``); when it is at least as similar to one of the
class's negatives, its score for that class is void. Each proposal goes to its best class; those at or above
``threshold`` are kept (or the ``top_k`` best per class and image). Proposals are nested (SAM proposes wholes
and their parts): a proposal that mostly lies on pixels already given to its class by a better one is dropped,
and one that mostly covers a kept proposal of its class with a score nearly as good (within ``margin``)
replaces it (the whole wins over its part, unless the exemplars match the part clearly better). Where two
classes' masks overlap, the semantic mask gives the pixel to the higher score.

Nothing here imports FiftyOne.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..settings import EXAMPLE_SCORINGS, ExamplesSettings
from .geometry import mask_to_box
from .result import Instance, MaskResult
from ..errors import SamtextError


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class ExampleClass:
    """One class and its exemplars.

    Attributes:
        name: the class name.
        positives: ``(P, D)`` embeddings of exemplars of the class (P >= 1).
        negatives: ``(Q, D)`` embeddings of look-alikes not to label (Q may be 0).
    """

    name: str
    positives: np.ndarray
    negatives: Optional[np.ndarray] = None

    def __post_init__(self):
        self.positives = _unit(np.atleast_2d(self.positives))
        if not len(self.positives):
            raise SamtextError("class %r has no positive exemplar" % self.name)
        dim = self.positives.shape[1]
        neg = np.zeros((0, dim), np.float32) if self.negatives is None else _unit(np.atleast_2d(self.negatives))
        if neg.size and neg.shape[1] != dim:
            raise SamtextError("class %r: negative exemplars have %d dimensions, positives %d"
                             % (self.name, neg.shape[1], dim))
        self.negatives = neg.reshape(-1, dim)


@dataclass
class ImageProposals:
    """The stored proposals of one image.

    Attributes:
        shape: ``(H, W)`` of the image.
        masks: ``N`` ``(H, W)`` bool masks.
        vectors: ``(N, D)`` embeddings (rows in the order of ``masks``).
        scores: per proposal, diagnostics to carry over (``predicted_iou``, ...).
        boxes: ``(N, 4)`` int ``XYXY`` pixel boxes (x1, y1 exclusive) that hold each mask, or None (computed
            from the masks when needed).
    """

    shape: Tuple[int, int]
    masks: List[np.ndarray]
    vectors: np.ndarray
    scores: List[Dict[str, float]] = field(default_factory=list)
    boxes: Optional[np.ndarray] = None

    def box(self, i: int) -> Tuple[int, int, int, int]:
        if self.boxes is not None:
            return tuple(int(v) for v in self.boxes[i])
        b = mask_to_box(self.masks[i])
        return (0, 0, 0, 0) if b is None else tuple(int(v) for v in b)

    @classmethod
    def from_result(cls, result: MaskResult) -> "ImageProposals":
        """The proposals of a :class:`MaskResult` whose instances carry embeddings (``EmbeddedProposals``)."""
        insts = [i for i in result.instances if i.embedding is not None]
        vectors = np.stack([i.embedding for i in insts]) if insts else np.zeros((0, 0), np.float32)
        return cls(tuple(result.shape), [i.mask for i in insts], vectors, [dict(i.scores) for i in insts])


def _shares_more(mask_a: np.ndarray, box_a, mask_b: np.ndarray, box_b, pixels: float) -> bool:
    """Whether two masks share more than ``pixels`` pixels, counted only where their boxes overlap (and not at
    all when that overlap is too small to hold them)."""
    x0, y0 = max(box_a[0], box_b[0]), max(box_a[1], box_b[1])
    x1, y1 = min(box_a[2], box_b[2]), min(box_a[3], box_b[3])
    if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) <= pixels:
        return False
    return np.count_nonzero(mask_a[y0:y1, x0:x1] & mask_b[y0:y1, x0:x1]) > pixels  # (count_nonzero: 10x sum)


class ExampleMatcher:
    """``ImageProposals -> MaskResult`` (see the module docstring).

    Arguments:
        classes: the :class:`ExampleClass` es, all with embeddings of one dimension.
        threshold: the least score a proposal needs (cosine similarity, in [-1, 1]).
        scoring: "max" (the best positive) or "prototype" (the normalised mean of the positives).
        top_k: keep at most this many proposals per class and image (None: all above the threshold).
        overlap: a proposal whose pixels lie on its class's better proposals for more than this fraction of its
            area is dropped.
        margin: how much lower a proposal's score may be than that of a kept proposal it covers, for it to
            replace that one.
    """

    def __init__(self, classes: Sequence[ExampleClass], threshold: float = ExamplesSettings.threshold,
                 scoring: str = ExamplesSettings.scoring, top_k: Optional[int] = ExamplesSettings.top_k,
                 overlap: float = 0.8, margin: float = 0.02):
        if not classes:
            raise SamtextError("no class to label: give at least one class with exemplars")
        if scoring not in EXAMPLE_SCORINGS:
            raise SamtextError("unknown scoring %r; choose one of %s" % (scoring, ", ".join(EXAMPLE_SCORINGS)))
        if not -1.0 <= float(threshold) <= 1.0:
            raise SamtextError("threshold is a cosine similarity between -1 and 1, got %r" % (threshold,))
        if top_k is not None and int(top_k) < 1:
            raise SamtextError("top_k must be at least 1 (or None: every proposal above the threshold), got %r"
                             % (top_k,))
        dims = {c.positives.shape[1] for c in classes}
        if len(dims) != 1:
            raise SamtextError("the classes' exemplars have embeddings of different sizes %s" % sorted(dims))
        names = [c.name for c in classes]
        if len(set(names)) != len(names):
            raise SamtextError("class names repeat: %s" % names)
        self.classes, self.threshold, self.scoring = list(classes), float(threshold), scoring
        self.top_k, self.overlap, self.margin = top_k, float(overlap), float(margin)
        self.dim = dims.pop()

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """``(N, C)`` score of each of ``N`` embeddings for each class; ``-inf`` where a negative exemplar of
        that class is at least as similar as its positives."""
        v = _unit(np.atleast_2d(vectors))
        if v.shape[1] != self.dim:
            raise SamtextError("proposal embeddings have %d dimensions, the exemplars %d: were they made by the "
                             "same embedder?" % (v.shape[1], self.dim))
        out = np.empty((len(v), len(self.classes)), np.float32)
        for c, cls in enumerate(self.classes):
            sims = v @ cls.positives.T
            pos = sims.max(1) if self.scoring == "max" else v @ _unit(cls.positives.mean(0))
            if len(cls.negatives):
                neg = (v @ cls.negatives.T).max(1)
                pos = np.where(neg >= sims.max(1), -np.inf, pos)
            out[:, c] = pos
        return out

    def __call__(self, proposals: ImageProposals) -> MaskResult:
        shape = tuple(proposals.shape)
        if not len(proposals.masks):
            return MaskResult.empty(shape, "the image has no proposals")
        table = self.scores(proposals.vectors)
        best_class = table.argmax(1)
        best = table[np.arange(len(table)), best_class]
        order = [i for i in np.argsort(-best, kind="stable") if best[i] >= self.threshold]
        kept: List[Instance] = []
        boxes: List[Tuple[int, int, int, int]] = []  # of the kept instances
        areas: List[int] = []
        covered = {c.name: np.zeros(shape, bool) for c in self.classes}  # pixels of each class's kept ones
        for i in order:
            name = self.classes[best_class[i]].name
            mask, box = proposals.masks[i], proposals.box(i)
            x0, y0, x1, y1 = box
            area = np.count_nonzero(mask[y0:y1, x0:x1])
            mine = [k for k, inst in enumerate(kept) if inst.label == name]
            if area == 0 or np.count_nonzero(mask[y0:y1, x0:x1] & covered[name][y0:y1, x0:x1]) > self.overlap * area:
                continue  # empty, or a part of (or the same as) an object of this class already kept
            covers = [k for k in mine if _shares_more(kept[k].mask, boxes[k], mask, box, self.overlap * areas[k])]
            if any(best[i] < kept[k].scores["similarity"] - self.margin for k in covers):
                continue  # it holds a part that the exemplars match clearly better: the part wins
            parts = covers  # kept parts it covers with a score nearly as good: the whole replaces them
            if not parts and self.top_k is not None and len(mine) >= self.top_k:
                continue
            if parts:  # the whole replaces its parts
                kept = [inst for k, inst in enumerate(kept) if k not in parts]
                boxes = [b for k, b in enumerate(boxes) if k not in parts]
                areas = [a for k, a in enumerate(areas) if k not in parts]
                covered[name][:] = False
                for inst in kept:
                    if inst.label == name:
                        covered[name] |= inst.mask
            covered[name][y0:y1, x0:x1] |= mask[y0:y1, x0:x1]
            extra = proposals.scores[i] if i < len(proposals.scores) else {}
            kept.append(Instance(mask, float(np.clip(best[i], 0, 1)), name, dict(extra, similarity=float(best[i]))))
            boxes.append(box)
            areas.append(area)
        if not kept:
            top = float(best.max()) if np.isfinite(best).any() else float("nan")
            return MaskResult.empty(shape, "no proposal is similar enough to the exemplars (best %.2f < %.2f)"
                                    % (top, self.threshold), similarity=top)
        return MaskResult(shape, kept, np.zeros((0, 2), np.float32), np.zeros(0, np.int64))
