"""Annotate by reference mask: one (or a few) reference images with masks label other images.

Two methods, both ``image -> MaskResult`` callables built once per run:

- :class:`PriorMatcher` ("prior", the default): PerSAM-style. The reference's SAM features under its mask
  give a prototype vector; on each target the cosine map between the prototype and SAM's features puts
  a positive point on the most similar location and a negative one on the least similar; SAM decodes a
  mask, then refines it once, prompted with that mask's box and logits. One SAM encoding per target.
- :class:`StitchMatcher` ("stitch"): the seed project's method with its bugs fixed. Reference and target
  side by side on one canvas (the target at its own resolution), foreground/background points from the
  reference mask, CLIP-located points on the target from the class text, several prompt sets decoded in
  one batch, the mask chosen by its confidence on the target half, and the target half cut back out
  without any resizing.

Both may run a CLIP check of the class text on the masked region, so that a target without the object
comes out empty instead of wrong. Nothing here imports FiftyOne.
"""

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..masks import crop_with_context, mask_to_box, sample_points


@dataclass
class Reference:
    """A reference example: an ``(H, W, 3)`` uint8 RGB image and its ``(H, W)`` bool object mask."""

    image: np.ndarray
    mask: np.ndarray
    name: str = "reference"

    def __post_init__(self):
        if self.mask.shape != self.image.shape[:2]:
            raise ValueError(
                "%s: mask %s and image %s differ in size" % (self.name, self.mask.shape, self.image.shape[:2])
            )
        if not self.mask.any():
            raise ValueError("%s: the reference mask is empty; it must mark the object" % self.name)


@dataclass
class MaskResult:
    """The outcome for one target image.

    Attributes:
        mask: ``(H, W)`` bool mask at the target's size (all False when the object is absent).
        confidence: in [0, 1]; SAM's predicted IoU of the mask (stitch: times the mask's mean probability
            on the target), or for an empty result the confidence that the object is absent when a check
            decided it, else 0.
        points: ``(K, 2)`` prompt points as ``(x, y)`` pixels of the target.
        point_labels: ``(K,)`` 1 = foreground, 0 = background.
        box: ``XYXY`` box prompt of the refinement pass, if any.
        empty_reason: why the mask is empty, or None.
        scores: named diagnostics (``sam_score``, ``similarity``, ``clip_score``...).
    """

    mask: np.ndarray
    confidence: float
    points: np.ndarray
    point_labels: np.ndarray
    box: Optional[np.ndarray] = None
    empty_reason: Optional[str] = None
    scores: Dict[str, float] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.mask.any()


def _empty(shape, reason, points, labels, confidence=0.0, **scores) -> MaskResult:
    return MaskResult(np.zeros(shape, dtype=bool), confidence, points, labels, None, reason, dict(scores))


class ClipCheck:
    """Decides whether a masked region shows ``class_name``, with CLIP against background prompts.

    Arguments:
        clip: a :class:`samtext.models.ClipModel` (or a double with ``encode_images`` and
            ``class_probability``).
        class_name: the object's name, e.g. "cat".
        threshold: minimum probability of the class for the region to count as the object.
    """

    def __init__(self, clip, class_name: str, threshold: float = 0.5):
        self.clip, self.class_name, self.threshold = clip, class_name, threshold

    def probability(self, image: np.ndarray, mask: np.ndarray) -> float:
        crop = crop_with_context(image, mask_to_box(mask))
        emb = self.clip.encode_images([crop])
        return float(self.clip.class_probability(emb, self.class_name)[0])

    def apply(self, image: np.ndarray, result: MaskResult) -> MaskResult:
        """Returns ``result`` with its CLIP score, emptied when the class probability is too low."""
        if result.is_empty:
            return result
        p = self.probability(image, result.mask)
        result.scores["clip_score"] = p
        if p < self.threshold:
            reason = "CLIP sees no %s in the region (p=%.2f < %.2f)" % (self.class_name, p, self.threshold)
            return _empty(result.mask.shape, reason, result.points, result.point_labels, 1.0 - p, **result.scores)
        return result


class PriorMatcher:
    """The "prior" method (see the module docstring).

    Arguments:
        segmenter: a :class:`samtext.models.SamSegmenter` (or a double with the same methods).
        references: one or more :class:`Reference`; their prototypes are averaged.
        refine: run the box+mask refinement pass.
        min_similarity: a target whose best cosine to the prototype is below this comes out empty
            (None: never).
        clip_check: an optional :class:`ClipCheck`.
    """

    def __init__(
        self,
        segmenter,
        references: Sequence[Reference],
        refine: bool = True,
        min_similarity: Optional[float] = None,
        clip_check: Optional[ClipCheck] = None,
    ):
        if not references:
            raise ValueError("at least one reference is needed")
        self.segmenter = segmenter
        self.refine = refine
        self.min_similarity = min_similarity
        self.clip_check = clip_check
        self.prototype = self._prototype(references)

    def _prototype(self, references: Sequence[Reference]) -> torch.Tensor:
        """``(C,)`` unit vector: the mean of the references' mask-weighted mean SAM features."""
        protos = []
        for ref in references:
            emb = self.segmenter.embed(ref.image)
            weights = self.segmenter.mask_to_grid(ref.mask, emb)  # (h, w)
            feats = emb.features[0]  # (C, h, w)
            proto = (feats * weights).sum(dim=(1, 2)) / weights.sum().clamp(min=1e-6)
            protos.append(F.normalize(proto, dim=0))
        return F.normalize(torch.stack(protos).mean(0), dim=0)

    def similarity(self, embedding) -> torch.Tensor:
        """``(h, w)`` cosine between the prototype and each feature cell that covers the image."""
        h, w = self.segmenter.valid_grid(embedding)
        feats = F.normalize(embedding.features[0, :, :h, :w], dim=0)
        return torch.einsum("c,chw->hw", self.prototype, feats)

    def __call__(self, image: np.ndarray) -> MaskResult:
        seg = self.segmenter
        emb = seg.embed(image)
        sim = self.similarity(emb)
        w = sim.shape[1]
        best, worst = int(sim.argmax()), int(sim.argmin())
        peak = float(sim.flatten()[best])
        points = np.array([seg.grid_to_point(best // w, best % w, emb), seg.grid_to_point(worst // w, worst % w, emb)],
                          dtype=np.float32)
        labels = np.array([1, 0])
        shape = image.shape[:2]
        if self.min_similarity is not None and peak < self.min_similarity:
            reason = "nothing resembles the reference (peak similarity %.2f < %.2f)" % (peak, self.min_similarity)
            return _empty(shape, reason, points, labels, similarity=peak)

        pred = seg.predict(emb, points[None], labels[None], multimask=True)
        k = int(np.argmax(pred.scores[0]))
        mask, score, box = pred.masks[0, k], float(pred.scores[0, k]), None
        if self.refine and mask.any():
            box = mask_to_box(mask)
            pred = seg.predict(
                emb, points[None], labels[None], boxes=box[None], mask_logits=pred.low_res_logits[:, k : k + 1]
            )
            if pred.masks[0, 0].any():
                mask, score = pred.masks[0, 0], float(pred.scores[0, 0])
        if not mask.any():
            return _empty(shape, "SAM returned an empty mask", points, labels, similarity=peak)
        result = MaskResult(mask, float(np.clip(score, 0, 1)), points, labels, box, None,
                            {"sam_score": score, "similarity": peak})
        return self.clip_check.apply(image, result) if self.clip_check else result


def clip_window_scores(clip, image: np.ndarray, class_name: str, window: int, stride: int):
    """Scores overlapping square windows of ``image`` for ``class_name`` in one batched CLIP pass.

    Returns:
        centres: ``(N, 2)`` window centres as ``(x, y)`` pixels.
        probs: ``(N,)`` probability of the class against background prompts.
    """
    h, w = image.shape[:2]
    win_h, win_w = min(window, h), min(window, w)
    ys = sorted(set(list(range(0, h - win_h + 1, stride)) + [h - win_h]))
    xs = sorted(set(list(range(0, w - win_w + 1, stride)) + [w - win_w]))
    crops = [image[y : y + win_h, x : x + win_w] for y in ys for x in xs]
    centres = np.array([(x + win_w / 2, y + win_h / 2) for y in ys for x in xs], dtype=np.float32)
    probs = clip.class_probability(clip.encode_images(crops), class_name)
    return centres, probs.cpu().numpy()


class StitchMatcher:
    """The "stitch" method (see the module docstring).

    Arguments:
        segmenter: a :class:`samtext.models.SamSegmenter` (or a double).
        clip: a :class:`samtext.models.ClipModel` (or a double) to locate the class on the target.
        references: the first reference is stitched beside every target.
        class_name: the object's name; really used for the CLIP points (the seed's prompt bug, fixed).
        num_ref_points: foreground and background points sampled from the reference mask, each.
        num_target_points: positive and negative CLIP points on the target, each.
        num_prompt_sets: prompt sets with different reference samples, decoded in one batch.
        window_fraction: CLIP window side as a fraction of the target's short side (stride: half a window).
        seed: seed of the reference point sampling.
        clip_check: an optional :class:`ClipCheck`.
    """

    def __init__(
        self,
        segmenter,
        clip,
        references: Sequence[Reference],
        class_name: str,
        num_ref_points: int = 5,
        num_target_points: int = 5,
        num_prompt_sets: int = 4,
        window_fraction: float = 1 / 3,
        seed: int = 0,
        clip_check: Optional[ClipCheck] = None,
    ):
        if not references:
            raise ValueError("at least one reference is needed")
        self.segmenter, self.clip, self.reference = segmenter, clip, references[0]
        self.class_name = class_name
        self.num_ref_points, self.num_target_points = num_ref_points, num_target_points
        self.num_prompt_sets, self.window_fraction, self.seed = num_prompt_sets, window_fraction, seed
        self.clip_check = clip_check

    def stitch(self, image: np.ndarray):
        """Builds the ``(H, W_r + W, 3)`` canvas [reference scaled to the target's height | target].

        Returns:
            canvas, the reference mask on the canvas's left part ``(H, W_r)``, and the offset ``W_r``.
        """
        ref = self.reference
        h = image.shape[0]
        rh, rw = ref.mask.shape
        new_w = max(1, round(rw * h / rh))
        ref_img = F.interpolate(
            torch.from_numpy(ref.image).permute(2, 0, 1)[None].float(), size=(h, new_w), mode="bilinear",
            antialias=True, align_corners=False,
        )[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
        rows = np.minimum((np.arange(h) + 0.5) * rh / h, rh - 1).astype(int)
        cols = np.minimum((np.arange(new_w) + 0.5) * rw / new_w, rw - 1).astype(int)
        ref_mask = ref.mask[rows[:, None], cols[None, :]]
        return np.concatenate([ref_img, image], axis=1), ref_mask, new_w

    def target_points(self, image: np.ndarray):
        """CLIP-located points on the target: ``(2k, 2)`` ``(x, y)`` and labels ``(2k,)``, the k best
        windows' centres positive, the k worst that lie at least a window away from them negative."""
        h, w = image.shape[:2]
        window = max(16, int(round(min(h, w) * self.window_fraction)))
        centres, probs = clip_window_scores(self.clip, image, self.class_name, window, max(8, window // 2))
        order = np.argsort(-probs)
        pos = centres[order[: self.num_target_points]]
        neg = []
        for i in order[::-1]:
            if len(neg) == self.num_target_points:
                break
            if np.min(np.abs(pos - centres[i]).max(axis=1)) >= window:
                neg.append(centres[i])
        neg = np.array(neg, dtype=np.float32).reshape(-1, 2)
        points = np.concatenate([pos, neg])
        labels = np.array([1] * len(pos) + [0] * len(neg))
        return points, labels, float(probs[order[0]])

    def __call__(self, image: np.ndarray) -> MaskResult:
        canvas, ref_mask, offset = self.stitch(image)
        tgt_points, tgt_labels, best_prob = self.target_points(image)
        rng = np.random.default_rng(self.seed)
        sets = []
        for _ in range(self.num_prompt_sets):
            fg = sample_points(ref_mask, self.num_ref_points, rng)
            bg = sample_points(~ref_mask, self.num_ref_points, rng)
            pts = np.concatenate([fg, bg, tgt_points + [offset, 0]])
            lbl = np.concatenate([np.ones(len(fg), int), np.zeros(len(bg), int), tgt_labels])
            sets.append((pts, lbl))
        coords = np.stack([p for p, _ in sets])  # every set has the same point counts: one batch
        labels = np.stack([lbl for _, lbl in sets])

        emb = self.segmenter.embed(canvas)
        pred = self.segmenter.predict(emb, coords, labels, multimask=False)
        target_logits = pred.logits[:, 0, :, offset:]  # (P, H, W)
        target_masks = target_logits > 0
        probs = torch.sigmoid(target_logits)
        area = target_masks.flatten(1).sum(1)
        confidence = (probs * target_masks).flatten(1).sum(1) / area.clamp(min=1)
        ranking = torch.as_tensor(pred.scores[:, 0], device=confidence.device).clamp(0, 1) * confidence * (area > 0)
        k = int(ranking.argmax())
        if area[k] == 0:
            return _empty(image.shape[:2], "SAM's masks leave the target half empty", tgt_points, tgt_labels,
                          clip_window=best_prob)
        mask = target_masks[k].cpu().numpy()
        score = float(pred.scores[k, 0])
        result = MaskResult(mask, float(ranking[k]), tgt_points, tgt_labels, None, None,
                            {"sam_score": score, "target_confidence": float(confidence[k]),
                             "clip_window": best_prob})
        return self.clip_check.apply(image, result) if self.clip_check else result


METHODS = {"prior": PriorMatcher, "stitch": StitchMatcher}
