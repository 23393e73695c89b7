"""Annotate by reference mask with SAM 3 (``method="sam3"``): the reference and the target on one canvas, the
reference's object as SAM 3's visual exemplar.

SAM 3 segments every instance of an exemplar box, but only within the image the box was drawn in. The canvas puts
both images in one (the construction of few-shot segmentation with a frozen SAM 3): a square of the model's input
side, the reference letterboxed in a left cell, the target in the right cell (two thirds of the width, the seam
on a multiple of the encoder's attention window, so windowed attention stays inside one image). The reference
mask's box is a positive exemplar and the class name the text; SAM 3 then finds the instances on the whole canvas,
and those with most of their mask in the target's cell, cut to the cell and mapped back to the target's pixels,
are the target's.

The gate: an instance is kept when its SAM 3 score reaches ``min_similarity`` ("auto": :data:`AUTO_SCORE`,
SAM 3's own instance threshold; None: the best instance is always kept). SAM 3's presence factor is the canvas's
(the exemplar is always present there), so the absent decision rests on the target's instances' scores.

Several references: one canvas each; their instances pooled, a mask repeating a better one dropped, best first.

Coordinates: boxes ``XYXY`` pixels; masks ``(H, W)`` of the target. Nothing here imports FiftyOne.
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..models.sam3_concepts import MASK_THRESHOLD, Exemplars
from .geometry import mask_to_box, repeats
from .reference import Reference
from .result import Instance, MaskResult, PreparesImages

AUTO_SCORE = 0.5  # SAM 3's instance threshold (its processor's documented default for instances)
MASK_IOU = 0.6  # instances of two canvases overlapping this much are one
TARGET_SHARE = 0.5  # an instance is the target's when this much of its mask lies in the target's cell
FILL = 128  # the canvas's empty pixels (0 after SAM 3's normalisation)


@dataclass
class Cell:
    """Where an image sits on the canvas: ``scale`` (canvas pixels per image pixel), ``x0, y0`` (its top-left on the
    canvas) and its size there ``w, h``."""

    scale: float
    x0: int
    y0: int
    w: int
    h: int

    def box_to_canvas(self, box: np.ndarray) -> np.ndarray:
        return np.asarray(box, np.float32) * self.scale + np.array([self.x0, self.y0, self.x0, self.y0], np.float32)


def _letterbox(image: np.ndarray, width: int, height: int, x_offset: int) -> Tuple[np.ndarray, Cell]:
    """``image`` resized (aspect kept) to fit ``width`` x ``height``, centred, and its :class:`Cell`."""
    import cv2

    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    return resized, Cell(scale, x_offset + x0, y0, nw, nh)


def canvas_split(side: int, window: int) -> int:
    """The reference cell's width: a third of the canvas rounded to the attention window (at least one)."""
    return int(max(1, round(side / 3 / window)) * window)


def make_canvas(reference: np.ndarray, target: np.ndarray, side: int, split: int) -> Tuple[np.ndarray, Cell, Cell]:
    """``(side, side, 3)`` uint8 canvas with ``reference`` in ``[0, split)`` and ``target`` in ``[split, side)``, and
    the two cells."""
    canvas = np.full((side, side, 3), FILL, np.uint8)
    ref, ref_cell = _letterbox(reference, split, side, 0)
    tgt, tgt_cell = _letterbox(target, side - split, side, split)
    for img, cell in ((ref, ref_cell), (tgt, tgt_cell)):
        canvas[cell.y0:cell.y0 + cell.h, cell.x0:cell.x0 + cell.w] = img
    return canvas, ref_cell, tgt_cell


class CanvasReader:
    """SAM 3 on canvases: a left picture (a reference, or a collage of exemplars) beside each target (the canvas of
    the module docstring). Shared by one-shot (:class:`ConceptMatcher`) and few-shot
    (:class:`samtext.pipelines.examples_sam3.ShotMatcher`).

    Arguments:
        concepts: a :class:`samtext.models.sam3_concepts.Sam3Concepts` (or a double).
    """

    def __init__(self, concepts):
        self.concepts = concepts
        self.side = int(concepts.image_size)
        self.split = canvas_split(self.side, concepts.window_pixels)
        self.last_best = 0.0  # the best score of a target instance in the last :meth:`instances`

    def find(self, left: np.ndarray, target: np.ndarray, text: str, exemplars):
        """SAM 3's answer on the canvas of ``left`` and ``target`` for ``text`` with ``exemplars`` (boxes in
        ``left``'s pixels), and the target's :class:`Cell`."""
        canvas, left_cell, target_cell = make_canvas(left, target, self.side, self.split)
        shown = Exemplars(np.stack([left_cell.box_to_canvas(b) for b in exemplars.boxes]), exemplars.labels)
        found = self.concepts.find(self.concepts.embed(canvas), [text], [shown])[0]
        return found, target_cell

    def instances(self, found, cell: Cell, shape, gate) -> List[Tuple[float, np.ndarray]]:
        """``(score, mask)`` of the target's instances (most of their mask in ``cell``), best first, at ``gate`` or
        above; with ``gate`` None, only the best one (from any query reaching into the cell, if none lies mostly
        in it). Masks ``(H, W)`` = ``shape``, cut to the cell and resized."""
        share = self._target_share(found.mask_logits, cell)
        in_target = share >= TARGET_SHARE
        if gate is None and not in_target.any():
            in_target = share > 0  # gate off: the best match, even one mostly outside the target
        self.last_best = float(found.scores[in_target].max()) if in_target.any() else 0.0
        out = []
        for q in np.flatnonzero(in_target)[np.argsort(-found.scores[in_target], kind="stable")]:
            if gate is not None and found.scores[q] < gate:
                break
            mask = self._to_target(found.mask_logits[q:q + 1], cell, shape)[0]
            if mask.any():
                out.append((float(found.scores[q]), mask))
                if gate is None:
                    break
        return out

    def _target_share(self, mask_logits: torch.Tensor, cell: Cell) -> np.ndarray:
        """``(Q,)`` share of each query's low-res mask (logit > 0) that lies in ``cell`` (0 for an empty mask)."""
        _, h, w = mask_logits.shape
        fy, fx = h / self.side, w / self.side
        inside = torch.zeros((h, w), dtype=torch.bool, device=mask_logits.device)
        inside[int(cell.y0 * fy):int(np.ceil((cell.y0 + cell.h) * fy)),
               int(cell.x0 * fx):int(np.ceil((cell.x0 + cell.w) * fx))] = True
        on = mask_logits > 0
        total = on.flatten(1).sum(1).float()
        return ((on & inside).flatten(1).sum(1).float() / total.clamp(min=1)).cpu().numpy()

    def _to_target(self, mask_logits: torch.Tensor, cell: Cell, shape) -> np.ndarray:
        """Canvas-frame logits ``(K, h_m, w_m)`` -> ``(K, H, W)`` bool masks of the target (its cell, resized)."""
        prob = self.concepts.probabilities(mask_logits, (self.side, self.side))
        prob = prob[:, cell.y0:cell.y0 + cell.h, cell.x0:cell.x0 + cell.w]
        prob = F.interpolate(prob[:, None], size=tuple(shape), mode="bilinear", align_corners=False)[:, 0]
        return (prob > MASK_THRESHOLD).cpu().numpy()


class ConceptMatcher(PreparesImages):
    """``image -> MaskResult`` by SAM 3 with the references as visual exemplars (see the module docstring).

    Arguments:
        concepts: a :class:`samtext.models.sam3_concepts.Sam3Concepts` (or a double).
        references: the reference examples.
        class_name: the object's name, read with the exemplar ("cat").
        min_similarity: the gate on SAM 3's score ("auto", a number in [0, 1], or None).
        max_instances: the most objects per image.
        clip_check: an optional :class:`samtext.pipelines.reference.ClipCheck`.
    """

    def __init__(self, concepts, references: Sequence[Reference], class_name: str, min_similarity="auto",
                 max_instances: int = 10, clip_check=None):
        self.segmenter = concepts
        self.reader = CanvasReader(concepts)
        self.references = list(references)
        self.exemplars = [Exemplars(mask_to_box(r.mask)[None].astype(np.float32), np.array([1]))
                          for r in self.references]
        self.class_name = class_name
        self.gate = AUTO_SCORE if min_similarity == "auto" else min_similarity
        self.max_instances = int(max_instances)
        self.clip_check = clip_check

    def info(self) -> Dict[str, float]:
        return dict(gate_in_use=self.gate, canvas=self.reader.side, reference_cell=self.reader.split)

    def __call__(self, image: np.ndarray) -> MaskResult:
        shape = tuple(image.shape[:2])
        candidates: List[Tuple[float, np.ndarray]] = []
        best = 0.0
        for ref, exemplars in zip(self.references, self.exemplars):
            found, cell = self.reader.find(ref.image, image, self.class_name, exemplars)
            candidates += self.reader.instances(found, cell, shape, self.gate)
            best = max(best, self.reader.last_best)
        candidates.sort(key=lambda c: -c[0])
        instances: List[Instance] = []
        for score, mask in candidates:
            if len(instances) >= self.max_instances:
                break
            if any(repeats(mask, inst.mask, MASK_IOU) for inst in instances):
                continue
            instances.append(Instance(mask, score, scores={"sam3_score": score}))
        if not instances:
            return MaskResult.empty(shape, "SAM 3 found no instance like the reference in the target (best %.2f < "
                                    "gate %.2f)" % (best, self.gate or 0.0), confidence=1.0 - best, best_score=best)
        result = MaskResult(shape, instances, np.zeros((0, 2), np.float32), np.zeros((0,), int),
                            scores={"best_score": best})
        return self.clip_check.apply(image, result) if self.clip_check else result
