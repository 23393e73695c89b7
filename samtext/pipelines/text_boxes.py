"""The selective-search localizer: region proposals, ranked by CLIP, become SAM box prompts.

1. OpenCV's selective search (``cv2.ximgproc.segmentation``, "fast" or "quality" strategies) on the image scaled
   to at most ``max_side`` pixels; boxes scaled back to the image.
2. Boxes with a side under ``min_box`` (4) pixels are dropped; the rest are ranked by :func:`objectness` (how much
   the box stands out from the ring around it); near-duplicates (box IoU above ``dedupe_iou``) are removed,
   keeping the better-ranked one; then at most ``max_proposals`` are kept: half the best-ranked, half taken in
   turn from four size bands (log-spaced box areas), best first, so that whole objects reach CLIP as well as
   parts, and within each size the boxes that fit an object come before background and cut-through boxes.
3. CLIP scores every kept box in batches: the crop with a ``context`` margin, padded to a square (CLIP's centre
   crop would cut an elongated box), as probabilities against the other prompts and background prompts.
4. Each box goes to its most probable class (a box around a car is looked at as a car, the wheel's own box as a
   wheel), so SAM looks at no more places than there are boxes, however many prompts. Per class: its boxes by
   probability (at ``region_threshold`` or above, when set), NMS at ``nms_iou``, at most ``max_instances``: each
   is a SAM prompt, the box alone (a centre point would land off rings, L-shapes and thin diagonal objects). Boxes
   where a negative prompt wins give negative points (their centres) to the class boxes that contain them, away
   from the box's own centre.

Boxes are ``XYXY`` pixels of the original image. Nothing here imports FiftyOne.
"""

from typing import List

import numpy as np

from ..settings import TextSettings
from .geometry import box_crop
from .text import Candidate, Localized, box_nms, negative_hits, region_gate


def selective_search(image: np.ndarray, mode: str = TextSettings.search_mode, max_side: int = TextSettings.max_side,
                     seed: int = 0) -> np.ndarray:
    """``(N, 4)`` int64 XYXY boxes of OpenCV's selective search, in a seeded rank order, in pixels of ``image``
    (``(H, W, 3)`` uint8 RGB), which is searched at most ``max_side`` pixels on its longest side.

    OpenCV ranks its regions by grouping level times a random number drawn from the C library's ``rand()``, which
    its worker threads share, so its order changes from run to run. The boxes are therefore put in a canonical
    order and then in a pseudo-random one drawn from ``seed`` (the paper's diversified ranking without the level
    weighting; :func:`shortlist` takes boxes of every size anyway): the same image gives the same boxes in the same
    order."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, float(max_side) / max(h, w))
    small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                  interpolation=cv2.INTER_AREA)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(small[..., ::-1]))  # OpenCV wants BGR
    search.switchToSelectiveSearchFast() if mode == "fast" else search.switchToSelectiveSearchQuality()
    rects = search.process()  # (N, 4) x, y, w, h
    if rects is None or len(rects) == 0:
        return np.zeros((0, 4), np.int64)
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], axis=1)
    boxes = np.unique(np.round(boxes / scale), axis=0)  # sorted, whatever OpenCV's order was
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes[np.random.default_rng(seed).permutation(len(boxes))].astype(np.int64)


def objectness(image: np.ndarray, boxes: np.ndarray, side: int = 160) -> np.ndarray:
    """``(N,)`` how much each ``XYXY`` box of ``image`` (``(H, W, 3)`` uint8) looks like it holds one object: the
    distance between the mean colour inside the box and in the ring around it (the box grown by half its width
    and height, clipped to the image), divided by ``1 + s / 32`` where ``s`` is the ring's colour spread. A box
    that fits an object standing out from plain surroundings scores high; a box of background, or one that cuts
    an object (its ring holds the rest of it, so the ring is mixed), scores low. Computed with integral images on
    the image scaled to at most ``side`` pixels, so thousands of boxes cost milliseconds."""
    import cv2

    if len(boxes) == 0:
        return np.zeros(0, np.float32)
    h, w = image.shape[:2]
    scale = min(1.0, float(side) / max(h, w))
    small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                  interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    pixels = small.astype(np.float64)
    first, second = cv2.integral(np.ascontiguousarray(pixels)), cv2.integral(np.ascontiguousarray(pixels ** 2))

    def total(table, x0, y0, x1, y1):  # (N, 3) sums over the boxes
        return table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]

    b = np.asarray(boxes, np.float64) * scale
    x0 = np.clip(np.floor(b[:, 0]), 0, sw - 1).astype(int)
    y0 = np.clip(np.floor(b[:, 1]), 0, sh - 1).astype(int)
    x1 = np.clip(np.ceil(b[:, 2]), x0 + 1, sw).astype(int)
    y1 = np.clip(np.ceil(b[:, 3]), y0 + 1, sh).astype(int)
    gx, gy = np.maximum((x1 - x0) // 2, 1), np.maximum((y1 - y0) // 2, 1)
    outer = (np.clip(x0 - gx, 0, sw), np.clip(y0 - gy, 0, sh), np.clip(x1 + gx, 0, sw), np.clip(y1 + gy, 0, sh))
    n_in = ((x1 - x0) * (y1 - y0)).astype(np.float64)
    n_ring = (outer[2] - outer[0]) * (outer[3] - outer[1]) - n_in
    inner_sum, inner_sq = total(first, x0, y0, x1, y1), total(second, x0, y0, x1, y1)
    ring_sum, ring_sq = total(first, *outer) - inner_sum, total(second, *outer) - inner_sq
    ring_n = np.maximum(n_ring, 1)[:, None]
    ring_mean = ring_sum / ring_n
    spread = np.sqrt(np.maximum(ring_sq / ring_n - ring_mean ** 2, 0).sum(1))
    contrast = np.linalg.norm(inner_sum / n_in[:, None] - ring_mean, axis=1) / (1.0 + spread / 32.0)
    return np.where(n_ring > 0, contrast, 0.0).astype(np.float32)  # a box of the whole image has no ring


def shortlist(boxes: np.ndarray, size, settings: TextSettings, scores=None) -> np.ndarray:
    """The boxes CLIP will score (see the module docstring, step 2), as indices into ``boxes``. With ``scores``
    (:func:`objectness`): half of the ``max_proposals`` budget goes to the best-scored boxes, the other half in
    turn to four size bands (log-spaced box areas), each best first, so that every size reaches CLIP. Without:
    the size bands in the boxes' own order."""
    h, w = size
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ok = np.flatnonzero(sides >= min(settings.min_box, h, w))
    if len(ok) == 0:
        return ok
    rank = np.arange(len(ok), 0, -1, dtype=np.float32) if scores is None else np.asarray(scores, np.float32)[ok]
    ok = ok[np.sort(box_nms(boxes[ok], rank, settings.dedupe_iou))]
    if len(ok) <= settings.max_proposals:
        return ok
    picked: List[int] = []
    if scores is not None:
        ok = ok[np.argsort(-np.asarray(scores, np.float32)[ok], kind="stable")]
        picked, ok = list(ok[: settings.max_proposals // 2]), ok[settings.max_proposals // 2:]
    area = np.log(np.maximum(1.0, (boxes[ok, 2] - boxes[ok, 0]) * (boxes[ok, 3] - boxes[ok, 1])))
    edges = np.linspace(area.min(), area.max() + 1e-6, 5)
    bands = [list(ok[(area >= lo) & (area < hi)]) for lo, hi in zip(edges[:-1], edges[1:])]
    while len(picked) < settings.max_proposals:
        for band in bands:
            if band and len(picked) < settings.max_proposals:
                picked.append(band.pop(0))
    return np.sort(np.array(picked, dtype=np.int64))


class BoxLocalizer:
    """``(image, PromptScorer) -> Localized``: selective search + CLIP (see the module docstring).

    Arguments:
        clip: a :class:`samtext.models.ClipModel` (or a double with ``encode_images``).
        settings: :class:`samtext.settings.TextSettings` (its selective search knobs too).
        proposals: ``image -> (N, 4) boxes``, in rank order (default: :func:`selective_search`).
    """

    def __init__(self, clip, settings: TextSettings, proposals=None):
        self.clip, self.settings = clip, settings
        self.proposals = proposals or (lambda image: selective_search(image, settings.search_mode, settings.max_side))

    def __call__(self, image: np.ndarray, scorer) -> Localized:
        s = self.settings
        all_boxes = self.proposals(image)
        keep = shortlist(all_boxes, image.shape[:2], s, objectness(image, all_boxes))
        if len(keep) == 0:
            return Localized([], np.zeros(scorer.num_classes), {"num_regions": 0.0})
        boxes = all_boxes[keep].astype(np.float32)
        crops = [box_crop(image, b, s.context) for b in boxes]
        probs = scorer.probabilities(self.clip.encode_images(crops))  # (N, C + G)
        c = scorer.num_classes
        negatives = self._negative_points(boxes, probs, c)
        candidates = []
        owner = probs[:, :c].argmax(axis=1)  # each box is looked at for its best class only
        for k in range(c):
            hits = np.intersect1d(region_gate(s, probs[:, k]), np.flatnonzero(owner == k))
            order = hits[box_nms(boxes[hits], probs[hits, k], s.nms_iou)][: s.max_instances]
            for i in order:
                candidates.append(self._candidate(k, boxes[i], float(probs[i, k]), negatives))
        return Localized(candidates, probs[:, :c].max(axis=0), {"num_regions": float(len(boxes))})

    def _negative_points(self, boxes: np.ndarray, probs: np.ndarray, c: int) -> np.ndarray:
        """``(M, 2)`` centres of the boxes where a negative prompt wins (after NMS)."""
        out = []
        for g in range(probs.shape[1] - c):
            hits = negative_hits(probs, c, g)
            for i in hits[box_nms(boxes[hits], probs[hits, c + g], self.settings.nms_iou)]:
                x1, y1, x2, y2 = boxes[i]
                out.append(((x1 + x2) / 2, (y1 + y2) / 2))
        return np.array(out, np.float32).reshape(-1, 2)

    @staticmethod
    def _candidate(k: int, box: np.ndarray, score: float, negatives: np.ndarray) -> Candidate:
        """SAM's prompt for the object in ``box``: the box alone, with the negative points inside it (away from its
        centre). No positive centre point: it lands off rings, L-shapes and thin diagonal objects, where SAM
        then draws the background in the box too (issue 20, cause 4: the object's parts won instead)."""
        x1, y1, x2, y2 = box
        centre = np.array([[(x1 + x2) / 2, (y1 + y2) / 2]], np.float32)
        near_centre = np.hypot(*(negatives - centre[0]).T) < 0.1 * np.hypot(x2 - x1, y2 - y1)
        inside = negatives[(negatives[:, 0] >= x1) & (negatives[:, 0] < x2) & (negatives[:, 1] >= y1)
                           & (negatives[:, 1] < y2) & ~near_centre]
        points = inside.astype(np.float32).reshape(-1, 2)
        labels = np.zeros(len(inside), int)
        return Candidate(k, box.astype(np.float32), points, labels, score)
