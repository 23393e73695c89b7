"""Annotate by reference mask: one (or a few) reference images with masks label other images.

Two methods, both ``image -> MaskResult`` callables built once per run:

- :class:`PriorMatcher` ("prior", the default): PerSAM-style. The reference's SAM features under its mask
  give a prototype vector; on each target the cosine map between the prototype and SAM's features is the
  location prior. Every peak of that map above a gate becomes a positive point (with a negative one on the
  least similar location); the peaks are decoded best first in small batches, and a peak that falls on an
  object already found, or whose mask mostly repeats one or is not like the reference, is dropped, so each
  instance is found once. Each instance is refined with its own box and logits. The gate is calibrated on the
  references themselves (their own similarity inside versus outside their masks), so a target without the
  object comes out empty. One SAM encoding per target.
- :class:`StitchMatcher` ("stitch"): the seed project's method with its bugs fixed. Reference and target
  side by side on one canvas (the target at its own resolution), foreground/background points from the
  reference mask, positive points on the target from the CLIP windows that score close to the best (each
  refined to a smaller window), several prompt sets decoded in one batch, the mask chosen by its confidence
  on the target half, cut back out without any resizing and split into its connected instances. A target
  whose best window scores below a gate calibrated on the reference comes out empty.

Both may run a CLIP check of the class text on each instance's own masked crop, relative to the score of
the reference's masked crop. Nothing here imports FiftyOne.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..settings import STITCH_CLIP_THRESHOLD, Gate, ReferenceSettings, check_gate
from .embeddings import pool_features
from .geometry import components, iou, mask_to_box, masked_crop, repeats, sample_points
from .result import Instance, MaskResult, PreparesImages
from ..errors import SamtextError

# The calibrated gate sits this far from the references' outside level towards their inside level.
GATE_FRACTION = 0.5

# A reference mask must leave at least this fraction of its image as background.
MIN_BACKGROUND_FRACTION = 0.01



def _holds_centre(outer, box) -> bool:
    """Whether the centre of ``box`` lies inside ``outer`` (both ``XYXY``)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return bool(outer[0] <= cx < outer[2] and outer[1] <= cy < outer[3])


def _without_unlabelled_instances(sim: torch.Tensor, outside: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """The ``(h, w)`` bool ``outside`` cells of a reference, less those that look like another instance of the
    class the user did not mask (a reference photo often shows several; one is masked): cells outside as similar
    to the prototype as the masked object's own lower quartile, with a one-cell margin. Left as given when that
    would remove most of the outside (then the whole image looks like the object and the gate should say so)."""
    like = (sim >= torch.quantile(inside.float(), 0.25)) & outside
    if not bool(like.any()):
        return outside
    grown = F.max_pool2d(like[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    rest = outside & ~grown
    return rest if float(rest.sum()) >= 0.5 * float(outside.sum()) else outside


@dataclass
class Reference:
    """A reference example: an ``(H, W, 3)`` uint8 RGB image and its ``(H, W)`` bool object mask."""

    image: np.ndarray
    mask: np.ndarray
    name: str = "reference"

    def __post_init__(self):
        if self.mask.shape != self.image.shape[:2]:
            raise SamtextError(
                "%s: mask %s and image %s differ in size" % (self.name, self.mask.shape, self.image.shape[:2])
            )
        if not self.mask.any():
            raise SamtextError("%s: the reference mask is empty; it must mark the object" % self.name)
        background = 1.0 - float(self.mask.mean())
        if background < MIN_BACKGROUND_FRACTION:
            raise SamtextError(
                "%s: the reference mask covers %s of the image; it must leave some background (at least %d%%) "
                "so that the object can be told from its surroundings"
                % (self.name, "all" if background == 0 else "%.1f%%" % (100 * (1 - background)),
                   round(100 * MIN_BACKGROUND_FRACTION))
            )


class ClipCheck:
    """Decides whether each instance shows ``class_name``, with CLIP on the instance's own masked crop
    against background prompts.

    Arguments:
        clip: a :class:`samtext.models.ClipModel` (or a double with ``encode_images`` and
            ``class_probability``).
        class_name: the object's name, e.g. "cat".
        threshold: with ``references``, the fraction of the references' own score (their masked crops' class
            probability) that an instance must reach; without, an absolute class probability.
        references: the reference examples that calibrate the threshold.
    """

    def __init__(self, clip, class_name: str, threshold: float = STITCH_CLIP_THRESHOLD,
                 references: Sequence[Reference] = ()):
        self.clip, self.class_name, self.threshold = clip, class_name, float(threshold)
        self.reference_score = None
        if references:
            self.reference_score = float(self.probabilities(*zip(*((r.image, r.mask) for r in references))).mean())
        self.min_probability = self.threshold * (self.reference_score if references else 1.0)

    def probabilities(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> np.ndarray:
        """``(N,)`` class probability of each ``(image, mask)`` pair's masked crop, in one CLIP batch."""
        crops = [masked_crop(image, mask) for image, mask in zip(images, masks)]
        emb = self.clip.encode_images(crops)
        return np.asarray(self.clip.class_probability(emb, self.class_name).cpu(), dtype=np.float64)

    def apply(self, image: np.ndarray, result: MaskResult) -> MaskResult:
        """Drops the instances of ``result`` that CLIP does not see as the class (each gets a ``clip_score``);
        empties the result when none is left."""
        if not result.instances:
            return result
        probs = self.probabilities([image] * len(result.instances), [inst.mask for inst in result.instances])
        for inst, p in zip(result.instances, probs):
            inst.scores["clip_score"] = float(p)
        kept = [inst for inst, p in zip(result.instances, probs) if p >= self.min_probability]
        if kept:
            result.instances = kept
            return result
        best = float(probs.max())
        reason = "CLIP sees no %s in the %d region(s) found (best p=%.2f < %.2f)" % (
            self.class_name, len(probs), best, self.min_probability)
        return MaskResult.empty(result.shape, reason, result.points, result.point_labels, 1.0 - best,
                                **dict(result.scores, clip_score=best))

    def info(self) -> Dict[str, float]:
        return dict(clip_threshold=self.threshold, clip_reference_score=self.reference_score,
                    clip_min_probability=self.min_probability)


class PriorMatcher(PreparesImages):
    """The "prior" method (see the module docstring).

    Arguments:
        segmenter: a :class:`samtext.models.SamSegmenter` (or a double with the same methods).
        references: one or more :class:`Reference`; their prototypes are averaged.
        refine: run the box+mask refinement pass on each instance.
        min_similarity: the gate on the peak cosine similarity: "auto" (calibrated on the references), a
            number, or None (no gate: always label the best match).
        max_instances: the most instances kept per image.
        instance_ratio: a further peak must reach this fraction of the first peak's height above the
            references' outside level to be tried as another instance.
        clip_check: an optional :class:`ClipCheck`.
    """

    per_round = 4  # peaks decoded per batch; after each batch the cells its kept masks cover are suppressed
    max_rounds = 4  # batches per image at most

    def __init__(
        self,
        segmenter,
        references: Sequence[Reference],
        refine: bool = ReferenceSettings.refine,
        min_similarity: Gate = ReferenceSettings.min_similarity,
        max_instances: int = ReferenceSettings.max_instances,
        instance_ratio: float = 0.5,
        clip_check: Optional[ClipCheck] = None,
    ):
        if not references:
            raise SamtextError("at least one reference is needed")
        if int(max_instances) < 1:
            raise SamtextError("max_instances must be at least 1, got %r" % (max_instances,))
        self.segmenter = segmenter
        self.refine = refine
        self.max_instances = int(max_instances)
        self.instance_ratio = float(instance_ratio)
        self.clip_check = clip_check
        min_similarity = check_gate(min_similarity)
        self.prototype, self.calibration = self._learn(references)
        self.gate = self.calibration["gate"] if min_similarity == "auto" else min_similarity

    # -- learning from the references

    def _prototype_of(self, embedding, mask: np.ndarray) -> torch.Tensor:
        cover = self.segmenter.mask_to_grid(mask, embedding).to(embedding.features.device)  # (h, w)
        return pool_features(embedding.features[0], cover)

    def _learn(self, references: Sequence[Reference]):
        """The prototype ``(C,)`` and the gate's calibration: the references' typical similarity inside
        their masks, a high quantile of it outside, and the gate between them. With several references, each
        is scored against the prototype of the others, so the calibration is not flattered by self-match."""
        embs = [self.segmenter.embed(ref.image) for ref in references]
        protos = [self._prototype_of(emb, ref.mask) for emb, ref in zip(embs, references)]
        prototype = F.normalize(torch.stack(protos).mean(0), dim=0)
        inside, outside, cells = [], [], []
        for i, (emb, ref) in enumerate(zip(embs, references)):
            others = [p for j, p in enumerate(protos) if j != i] or protos
            sim = self._similarity(F.normalize(torch.stack(others).mean(0), dim=0), emb)
            h, w = sim.shape
            cover = self.segmenter.mask_to_grid(ref.mask, emb)[:h, :w].to(sim.device)
            inside.append(sim[cover >= 0.5] if bool((cover >= 0.5).any()) else sim[cover == cover.max()])
            out = cover < 0.05 if bool((cover < 0.05).any()) else cover < 0.5
            out = _without_unlabelled_instances(sim, out, inside[-1])
            outside.append(sim[out] if bool(out.any()) else sim.min()[None])
            cells.append(float(cover.sum()))
        fg = float(torch.cat(inside).median())
        bg = float(torch.quantile(torch.cat(outside).float(), 0.99))
        gate = bg + GATE_FRACTION * (fg - bg) if fg > bg else fg
        # peaks closer than this (in cells) are one object as far as candidate picking goes
        radius = max(1.0, 0.5 * float(np.sqrt(np.mean(cells) / np.pi)))
        return prototype, dict(inside=fg, outside=bg, gate=gate, peak_radius=radius)

    def info(self) -> Dict[str, float]:
        """The learnt values a run record keeps: the calibration and the gate in use."""
        return dict(self.calibration, gate_in_use=self.gate)

    def _similarity(self, prototype: torch.Tensor, embedding) -> torch.Tensor:
        h, w = self.segmenter.valid_grid(embedding)
        feats = F.normalize(embedding.features[0, :, :h, :w], dim=0)
        return torch.einsum("c,chw->hw", prototype.to(feats.device), feats)

    def similarity(self, embedding) -> torch.Tensor:
        """``(h, w)`` cosine between the prototype and each feature cell that covers the image."""
        return self._similarity(self.prototype, embedding)

    # -- one target

    def _candidates(self, sim: torch.Tensor, blocked: torch.Tensor, floor: float, k: int) -> List[int]:
        """Up to ``k`` flat indices of peak cells of ``sim`` at or above ``floor``, greedily, each at least
        the peak radius from the ones before and not on ``blocked`` cells (which it then blocks)."""
        h, w = sim.shape
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        r2 = self.calibration["peak_radius"] ** 2
        free = (~blocked) & (sim >= floor)
        picks = []
        while len(picks) < k and bool(free.any()):
            idx = int(torch.where(free, sim, torch.full_like(sim, -float("inf"))).argmax())
            picks.append(idx)
            cy, cx = divmod(idx, w)
            near = (yy - cy) ** 2 + (xx - cx) ** 2 <= r2
            free &= ~near.to(free.device)
            blocked |= near.to(blocked.device)
        return picks

    UPSAMPLE = 4  # the similarity map's upsampling for placing points between cell centres

    def _peak_point(self, fine: torch.Tensor, idx: int, emb) -> np.ndarray:
        """The ``(x, y)`` pixel of the similarity peak at cell ``idx`` of the ``(h, w)`` map, placed within its
        3x3 cells by the map upsampled bilinearly ``UPSAMPLE`` times (``fine``), so that an object thinner than
        a cell gets its point on it rather than on the cell's centre."""
        upsample = self.UPSAMPLE
        h, w = fine.shape[0] // upsample, fine.shape[1] // upsample
        cy, cx = divmod(idx, w)
        y0, x0 = max(0, cy - 1), max(0, cx - 1)
        y1, x1 = min(h, cy + 2), min(w, cx + 2)
        window = fine[y0 * upsample : y1 * upsample, x0 * upsample : x1 * upsample]
        fy, fx = divmod(int(window.argmax()), window.shape[1])
        row = (y0 * upsample + fy + 0.5) / upsample - 0.5
        col = (x0 * upsample + fx + 0.5) / upsample - 0.5
        return np.array(self.segmenter.grid_to_point(row, col, emb), dtype=np.float32)

    def __call__(self, image: np.ndarray) -> MaskResult:
        seg = self.segmenter
        emb = seg.embed(image)
        sim = self.similarity(emb)
        h, w = sim.shape
        peak, worst = float(sim.max()), int(sim.argmin())
        neg = np.array(seg.grid_to_point(worst // w, worst % w, emb), dtype=np.float32)
        shape = image.shape[:2]
        if self.gate is not None and peak < self.gate:
            best = int(sim.argmax())
            points = np.array([seg.grid_to_point(best // w, best % w, emb), neg], dtype=np.float32)
            spread = max(self.gate - self.calibration["outside"], 1e-6)
            reason = "nothing resembles the reference (peak similarity %.2f < gate %.2f)" % (peak, self.gate)
            return MaskResult.empty(shape, reason, points, np.array([1, 0]),
                                    float(np.clip((self.gate - peak) / spread, 0, 1)), similarity=peak)

        found, tried = self._find_instances(emb, sim, peak, neg)
        if not found:
            points = np.concatenate([tried, neg[None]])
            reason = "SAM's masks at the %d similar locations are not like the reference" % len(tried)
            return MaskResult.empty(shape, reason, points, np.array([1] * len(tried) + [0]), similarity=peak)
        instances = self._finish(emb, found)
        points = np.concatenate([f["points"][:1] for f in found] + [neg[None]])
        labels = np.array([1] * len(found) + [0])
        if not instances:
            return MaskResult.empty(shape, "SAM returned empty masks", points, labels, similarity=peak)
        result = MaskResult(tuple(shape), instances, points, labels, scores={"similarity": peak})
        return self.clip_check.apply(image, result) if self.clip_check else result

    def _find_instances(self, emb, sim: torch.Tensor, peak: float, neg: np.ndarray):
        """Peaks -> one SAM mask each, decoded at low resolution in small batches, best peaks first.

        After each batch, the cells covered by the masks kept so far are suppressed, so the next batch looks
        only where no object was found yet (on a CPU the decoder costs about a twentieth of the encoder per
        prompt, so peaks on objects already found are not decoded at all). A peak's positive point is its
        cell's centre; when that mask is dropped, the next batch retries the peak placed by the upsampled map
        (which finds objects thinner than a cell). A mask that mostly repeats one already found, or whose own
        features do not pass the gate (SAM took the background next to the peak, say), is dropped. A batch
        that keeps nothing and has nothing to retry ends the search.

        Returns:
            the kept candidates, best first, and the ``(P, 2)`` positive points tried.
        """
        seg = self.segmenter
        h, w = sim.shape
        outside = self.calibration["outside"]
        floor = outside + self.instance_ratio * (peak - outside)
        if self.gate is not None:
            floor = max(floor, self.gate)
        found: List[dict] = []
        tried = []
        feats = emb.features[0, :, :h, :w]
        prototype = self.prototype.to(feats.device)
        fine = F.interpolate(sim[None, None].float(), scale_factor=self.UPSAMPLE, mode="bilinear",
                             align_corners=False)[0, 0]
        blocked = torch.zeros((h, w), dtype=torch.bool, device=sim.device)
        retries = []  # (cell, point) of peaks to try again with the upsampled placement
        for _ in range(self.max_rounds):
            budget = min(self.per_round, self.max_instances - len(found)) - len(retries)
            picks = self._candidates(sim, blocked, floor, budget) if budget > 0 else []
            batch = retries + [(i, np.array(seg.grid_to_point(i // w, i % w, emb), np.float32)) for i in picks]
            if not batch:
                break
            tried += [point for _, point in batch]
            pts = np.stack([np.stack([point, neg]) for _, point in batch])  # (B, 2, 2): a positive, the negative
            pred = seg.predict(emb, pts, np.tile(np.array([1, 0]), (len(pts), 1)), multimask=True, full_size=False)
            best = pred.scores.argmax(axis=1)
            low = pred.low_res_logits[torch.arange(len(pts)), torch.as_tensor(best)]  # (B, h_m, w_m)
            masks = seg.low_res_masks(emb, low)
            cover = seg.low_res_to_grid(emb, masks).to(feats.device)  # (B, h, w)
            kept, retrying, retries = len(found), {idx for idx, _ in retries}, []
            for p, (idx, point) in enumerate(batch):
                area = int(masks[p].sum())
                if any(float(f["cover"].flatten()[idx]) >= 0.5 for f in found):
                    continue  # its peak lies on an object found earlier in this batch
                if area and any(int((masks[p] & f["mask"]).sum()) > 0.5 * area for f in found):
                    continue  # mostly the same pixels as an object already found
                mask_sim = float(prototype @ pool_features(feats, cover[p])) if area else -2.0
                if area == 0 or (self.gate is not None and mask_sim < self.gate):
                    if idx not in retrying:  # SAM took something else than the object: try the finer point
                        retries.append((idx, self._peak_point(fine, idx, emb)))
                    continue
                found.append(dict(points=pts[p], logits=low[p], mask=masks[p], cover=cover[p],
                                  mask_similarity=mask_sim, similarity=float(sim.flatten()[idx]),
                                  sam_score=float(pred.scores[p, best[p]])))
                blocked |= cover[p].to(blocked.device) >= 0.5
                if len(found) == self.max_instances:
                    return found, np.array(tried, np.float32)
            if len(found) == kept and not retries:
                break  # a whole batch of the best remaining peaks gave nothing: the lower ones will not either
        return found, np.array(tried, np.float32).reshape(-1, 2)

    def _finish(self, emb, found: List[dict]) -> List[Instance]:
        """Full-size masks of the kept candidates, each refined once with its box and logits (in one batch),
        without duplicates."""
        seg = self.segmenter
        masks = seg.upscale(emb, torch.stack([f["logits"] for f in found]))
        scores = [f["sam_score"] for f in found]
        if self.refine:
            todo = [i for i, m in enumerate(masks) if m.any()]
            if todo:
                pred = seg.predict(
                    emb, np.stack([found[i]["points"] for i in todo]), np.tile(np.array([1, 0]), (len(todo), 1)),
                    boxes=np.stack([mask_to_box(masks[i]) for i in todo]),
                    mask_logits=torch.stack([found[i]["logits"] for i in todo])[:, None], full_size=False,
                )
                refined = seg.upscale(emb, pred.low_res_logits[:, 0])
                for j, i in enumerate(todo):
                    if refined[j].any():
                        masks[i], scores[i] = refined[j], float(pred.scores[j, 0])
        instances: List[Instance] = []
        for f, mask, score in zip(found, masks, scores):
            if not mask.any() or any(iou(mask, inst.mask) > 0.5 for inst in instances):
                continue
            instances.append(Instance(mask, float(np.clip(score, 0, 1)),
                                      scores={"sam_score": score, "similarity": f["similarity"],
                                              "mask_similarity": f["mask_similarity"]}))
        return instances


def window_grid(h: int, w: int, window: int, stride: int, origin=(0, 0)) -> np.ndarray:
    """``(N, 4)`` XYXY boxes of square windows of side ``window`` (clipped to the image) at ``stride``,
    covering an ``h x w`` area whose top-left corner is ``origin = (x, y)``; the last row and column
    touch the far edges."""
    win_h, win_w = min(window, h), min(window, w)
    ys = sorted(set(list(range(0, h - win_h + 1, max(1, stride))) + [h - win_h]))
    xs = sorted(set(list(range(0, w - win_w + 1, max(1, stride))) + [w - win_w]))
    ox, oy = origin
    return np.array([(ox + x, oy + y, ox + x + win_w, oy + y + win_h) for y in ys for x in xs], dtype=np.int64)


def clip_box_scores(clip, image: np.ndarray, boxes: np.ndarray, class_name: str) -> np.ndarray:
    """``(N,)`` probability of ``class_name`` (against background prompts) in each XYXY box crop of
    ``image``, in one batched CLIP pass."""
    crops = [image[y1:y2, x1:x2] for x1, y1, x2, y2 in boxes]
    return np.asarray(clip.class_probability(clip.encode_images(crops), class_name).cpu(), dtype=np.float64)


def clip_window_scores(clip, image: np.ndarray, class_name: str, window: int, stride: int):
    """Scores overlapping square windows of ``image`` for ``class_name`` in one batched CLIP pass.

    Returns:
        centres: ``(N, 2)`` window centres as ``(x, y)`` pixels.
        probs: ``(N,)`` probability of the class against background prompts.
    """
    boxes = window_grid(*image.shape[:2], window, stride)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    return centres.astype(np.float32), clip_box_scores(clip, image, boxes, class_name)


class StitchMatcher:
    """The "stitch" method (see the module docstring).

    Arguments:
        segmenter: a :class:`samtext.models.SamSegmenter` (or a double).
        clip: a :class:`samtext.models.ClipModel` (or a double) to locate the class on the target.
        references: the first reference is stitched beside every target.
        class_name: the object's name; really used for the CLIP points (the seed's prompt bug, fixed).
        num_ref_points: foreground and background points sampled from the reference mask, each.
        num_target_points: the most positive (and negative) CLIP points on the target.
        num_prompt_sets: prompt sets with different reference samples, decoded in one batch.
        window_fraction: CLIP window side as a fraction of the target's short side (stride: half a window).
        window_ratio: windows scoring at least this fraction of the best one give positive points.
        refine_levels: times each of those windows is narrowed to its best half-size sub-window.
        min_similarity: the gate on the best window's class probability: "auto" (calibrated on the reference
            image's own windows, on and off the object), a number, or None (no gate).
        max_instances: the most connected parts of the mask kept as instances (the largest).
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
        num_prompt_sets: int = ReferenceSettings.num_prompt_sets,
        window_fraction: float = 1 / 3,
        window_ratio: float = 0.6,
        refine_levels: int = 2,
        min_similarity: Gate = ReferenceSettings.min_similarity,
        max_instances: int = ReferenceSettings.max_instances,
        seed: int = 0,
        clip_check: Optional[ClipCheck] = None,
    ):
        if not references:
            raise SamtextError("at least one reference is needed")
        if int(max_instances) < 1:
            raise SamtextError("max_instances must be at least 1, got %r" % (max_instances,))
        self.max_instances = int(max_instances)
        self.segmenter, self.clip, self.reference = segmenter, clip, references[0]
        self.class_name = class_name
        self.num_ref_points, self.num_target_points = num_ref_points, num_target_points
        self.num_prompt_sets, self.window_fraction, self.seed = num_prompt_sets, window_fraction, seed
        self.window_ratio, self.refine_levels = window_ratio, refine_levels
        self.clip_check = clip_check
        min_similarity = check_gate(min_similarity)
        self.calibration = self._calibrate(self.reference) if min_similarity == "auto" else {}
        self.gate = self.calibration["gate"] if min_similarity == "auto" else min_similarity

    def _calibrate(self, ref: Reference) -> Dict[str, float]:
        """The gate from the reference image's own windows: the best score of a window on the object, the
        best of one that does not touch it (look-alikes in the reference set it), and the gate between."""
        boxes, probs = self.windows(ref.image)
        touches = np.array([ref.mask[y1:y2, x1:x2].any() for x1, y1, x2, y2 in boxes])
        inside = float(probs[touches].max())
        outside = float(probs[~touches].max()) if (~touches).any() else 0.0
        gate = outside + GATE_FRACTION * (inside - outside) if inside > outside else GATE_FRACTION * inside
        return dict(inside=inside, outside=outside, gate=gate)

    def info(self) -> Dict[str, float]:
        return dict(self.calibration, gate_in_use=self.gate)

    def window_size(self, image: np.ndarray) -> int:
        return max(16, int(round(min(image.shape[:2]) * self.window_fraction)))

    WINDOW_SCALES = (1.0, 0.5)  # window sides, as fractions of window_size: an object a third of the reference's
    #                             relative size fills the small windows as the reference filled the large ones

    def windows(self, image: np.ndarray):
        """``(boxes (N, 4) XYXY, probs (N,))`` of the CLIP windows over ``image``, at every scale of
        :attr:`WINDOW_SCALES` (a window's score grows with how much of it the object fills, so one scale would
        make the gate a size threshold)."""
        h, w = image.shape[:2]
        sides = sorted({max(16, int(round(self.window_size(image) * f))) for f in self.WINDOW_SCALES}, reverse=True)
        boxes = np.concatenate([window_grid(h, w, side, max(8, side // 2)) for side in sides])
        return boxes, clip_box_scores(self.clip, image, boxes, self.class_name)

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
        """CLIP-located points on the target.

        Windows at two scales (:attr:`WINDOW_SCALES`) scoring above the reference's background level (without a
        calibrated gate: ``window_ratio`` of the best), at most twice ``max(num_target_points, max_instances)``
        and none centred inside a better one, are each narrowed ``refine_levels`` times to their best half-size
        sub-window. The gate is applied to each one's best score over the levels, so a small object, which fills
        only its narrowed window, is held to the same level as the reference object (a size-aware gate). Every
        narrowed window that clears it (one per place) gives a positive point at its centre; the worst windows at
        least a window away from every positive give negative points.

        Returns:
            points ``(K, 2)`` ``(x, y)``, labels ``(K,)``, and the best window's probability. No positive
            point when the best window is below the gate.
        """
        boxes, probs = self.windows(image)
        window = self.window_size(image)
        best = float(probs.max())
        most = max(self.num_target_points, self.max_instances)
        # candidates: windows above the reference's background level (the gate is applied after narrowing, when a
        # small object fills its sub-window as the reference object filled its best window)
        if self.gate is None:
            floor = self.window_ratio * best
        else:  # a numeric gate has no calibrated background level: narrowing may raise a window's score two-fold
            floor = self.calibration.get("outside", 0.5 * self.gate)
        taken = []
        for i in np.argsort(-probs):
            if probs[i] < (floor or 0.0) or len(taken) == 2 * most:
                break
            if not any(_holds_centre(b, boxes[i]) for b in boxes[taken]):
                taken.append(i)
        if not taken:
            return np.zeros((0, 2), np.float32), np.zeros((0,), int), best
        kept, score = boxes[taken], probs[taken].astype(np.float64)
        for _ in range(self.refine_levels):  # each level: the best half-size sub-window, all in one CLIP batch
            sides = [max(8, int(min(b[2] - b[0], b[3] - b[1])) // 2) for b in kept]
            sub = [window_grid(b[3] - b[1], b[2] - b[0], s, max(4, s // 2), (b[0], b[1])) for b, s in zip(kept, sides)]
            sub_probs = clip_box_scores(self.clip, image, np.concatenate(sub), self.class_name)
            starts = np.cumsum([0] + [len(x) for x in sub])
            picks = [int(np.argmax(sub_probs[a:b])) for a, b in zip(starts[:-1], starts[1:])]
            kept = np.stack([x[j] for x, j in zip(sub, picks)])
            score = np.maximum(score, [sub_probs[a + j] for a, j in zip(starts[:-1], picks)])
        best = max(best, float(score.max()))
        if self.gate is not None and best < self.gate:
            return np.zeros((0, 2), np.float32), np.zeros((0,), int), best
        # every narrowed window that clears the gate, best first, one per place (no two on one sub-window)
        chosen: List[int] = []
        for i in np.argsort(-score, kind="stable"):
            if (self.gate is not None and score[i] < self.gate) or len(chosen) == most:
                break
            if not any(_holds_centre(b, kept[i]) or _holds_centre(kept[i], b) for b in kept[chosen]):
                chosen.append(i)
        kept = kept[chosen]
        pos = np.stack([(kept[:, 0] + kept[:, 2]) / 2, (kept[:, 1] + kept[:, 3]) / 2], axis=1).astype(np.float32)
        centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        neg = []
        for i in np.argsort(probs):
            if len(neg) == self.num_target_points:
                break
            if np.min(np.abs(pos - centres[i]).max(axis=1)) >= window:
                neg.append(centres[i])
        neg = np.array(neg, dtype=np.float32).reshape(-1, 2)
        points = np.concatenate([pos, neg])
        labels = np.array([1] * len(pos) + [0] * len(neg))
        return points, labels, best

    def __call__(self, image: np.ndarray) -> MaskResult:
        shape = image.shape[:2]
        tgt_points, tgt_labels, best_prob = self.target_points(image)
        if not (tgt_labels == 1).any():
            reason = "CLIP sees no %s in any window (best p=%.2f < gate %.2f)" % (self.class_name, best_prob,
                                                                                   self.gate)
            confidence = 1.0 - best_prob / self.gate if self.gate else 0.0
            return MaskResult.empty(shape, reason, tgt_points, tgt_labels, confidence, clip_window=best_prob)
        canvas, ref_mask, offset = self.stitch(image)
        rng = np.random.default_rng(self.seed)
        positives, negatives = tgt_points[tgt_labels == 1], tgt_points[tgt_labels == 0]
        emb = self.segmenter.embed(canvas)
        chosen = []  # per positive: (ranking, SAM score, confidence, its target mask); one positive decoded at a
        for point in positives:  # time, so memory holds num_prompt_sets canvas-sized masks, however many objects
            sets = []
            for _ in range(self.num_prompt_sets):
                fg = sample_points(ref_mask, self.num_ref_points, rng)
                bg = sample_points(~ref_mask, self.num_ref_points, rng)
                target = np.concatenate([point[None], negatives]) + [offset, 0]
                lbl = np.concatenate([np.ones(len(fg), int), np.zeros(len(bg), int), [1], np.zeros(len(negatives), int)])
                sets.append((np.concatenate([fg, bg, target]), lbl))
            coords = np.stack([p for p, _ in sets]).astype(np.float32)  # same point counts: one batch
            labels = np.stack([lbl for _, lbl in sets])
            pred = self.segmenter.predict(emb, coords, labels, multimask=False)
            target_logits = pred.logits[:, 0, :, offset:]  # (S, H, W)
            target_masks = target_logits > 0
            area = target_masks.flatten(1).sum(1)
            confidence = (torch.sigmoid(target_logits) * target_masks).flatten(1).sum(1) / area.clamp(min=1)
            ranking = torch.as_tensor(pred.scores[:, 0], device=confidence.device).clamp(0, 1) * confidence * (area > 0)
            k = int(ranking.argmax())
            if area[k] > 0:
                chosen.append((float(ranking[k]), float(pred.scores[k, 0]), float(confidence[k]),
                               target_masks[k].cpu().numpy()))
            del pred, target_logits, target_masks
        min_area = max(16, int(0.001 * shape[0] * shape[1]))
        instances: List[Instance] = []
        for rank, sam_score, confidence, mask in sorted(chosen, key=lambda c: -c[0]):
            scores = {"sam_score": sam_score, "target_confidence": confidence}
            for part in components(mask, min_area):
                if len(instances) < self.max_instances and not any(repeats(part, other.mask, 0.5)
                                                                   for other in instances):
                    instances.append(Instance(part, rank, scores=dict(scores)))
        if not instances:
            return MaskResult.empty(shape, "SAM's masks on the target are empty or only specks", tgt_points,
                                    tgt_labels, clip_window=best_prob)
        result = MaskResult(tuple(shape), instances, tgt_points, tgt_labels, scores={"clip_window": best_prob})
        return self.clip_check.apply(image, result) if self.clip_check else result


METHODS = {"prior": PriorMatcher, "stitch": StitchMatcher}
