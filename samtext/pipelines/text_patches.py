"""The patch + Grad-CAM localizer, for small objects ("car blinker"): where in the matching patches CLIP looks.

1. Overlapping square patches at one or more sizes (default: a third of the image's short side, at least
   ``min_patch`` pixels), stride half a patch, cut from the full-resolution image (scaled down to at most 448 px
   for CLIP, which reads 224); an image smaller than a patch is one patch.
2. CLIP scores every patch in batches (probabilities against the other prompts and the background prompts); per
   class, the ``top_k`` best patches (at ``region_threshold`` or above, when set) are kept, each overlapping a
   better kept one by at most :data:`PATCH_NMS_IOU`, so that they spread over the instances instead of piling
   onto the most visible one; per negative prompt, the same among the patches where it wins.
3. Grad-CAM (:func:`samtext.models.gradcam.clip_gradcam`, through ``clip.saliency_maps``) of each kept patch
   against its class's text; each map, weighted by its patch's probability to the power :data:`PROB_WEIGHT`
   (a small object fills little of its patch, so its probability is low: the weight orders patches without
   silencing it), is pasted back into the image frame (the maximum where patches overlap), on a map of at most
   ``map_side`` pixels, then smoothed.
4. Positive points: local maxima of a class's map at least ``min_distance`` apart, at most ``max_instances``,
   each above ``peak_threshold`` of the brightest cell *of its own kept patches* (peaks are found per region:
   an instance is not held to the level of a brighter one elsewhere), and above :data:`WEAK_PATCH` of the map's
   maximum; every such peak is one SAM prompt with, as negatives, the two lowest-saliency points (under a tenth
   of the maximum) of the patches kept for the class, and the peaks of the negative prompts' maps near it.

Points are ``(x, y)`` pixels of the original image. Nothing here imports FiftyOne.
"""

from typing import List, Sequence, Tuple

import numpy as np

from ..settings import TextSettings
from .geometry import box_crop
from .reference import window_grid
from .text import Candidate, Localized, negative_hits, region_gate

LOW_SALIENCY = 0.1  # negatives come from where the map is below this fraction of its maximum
WEAK_PATCH = 0.05  # a peak under this fraction of the whole map's maximum is noise
PROB_WEIGHT = 0.25  # a kept patch's map is weighted by its probability to this power
PATCH_NMS_IOU = 0.2  # kept patches overlap a better kept one by at most this (grid neighbours: 1/3; diagonal: 1/7)


def patch_sides(settings: TextSettings, h: int, w: int) -> List[int]:
    """The patch sides in pixels for an ``h x w`` image: ``settings.patch_sizes``, or a third of the short side (at
    least ``settings.min_patch``)."""
    sizes = settings.patch_sizes or [max(int(settings.min_patch), min(h, w) // 3)]
    return sorted({int(v) for v in sizes})


def patch_boxes(h: int, w: int, sizes: Sequence[int], overlap: float = 0.5) -> np.ndarray:
    """``(N, 4)`` XYXY square patches (clipped to the image) of each size in ``sizes``, at stride
    ``size * (1 - overlap)``, covering an ``h x w`` image."""
    grids = [window_grid(h, w, s, max(1, int(round(s * (1 - overlap))))) for s in sizes]
    return np.unique(np.concatenate(grids), axis=0)


def _map_box(box, scale: float, mh: int, mw: int) -> Tuple[int, int, int, int]:
    """An ``XYXY`` image box in the ``(mh, mw)`` map frame (image pixels times ``scale``), at least one cell."""
    x1, y1, x2, y2 = box
    mx1, my1 = int(x1 * scale), int(y1 * scale)
    return mx1, my1, max(mx1 + 1, min(mw, int(round(x2 * scale)))), max(my1 + 1, min(mh, int(round(y2 * scale))))


def find_peaks(saliency: np.ndarray, threshold: float, min_distance: int, limit: int) -> np.ndarray:
    """``(K, 2)`` ``(row, col)`` local maxima of a 2-D map at least ``threshold``, best first, each at least
    ``min_distance`` cells from a better one, at most ``limit``."""
    from scipy import ndimage

    size = 2 * max(1, int(min_distance)) + 1
    is_peak = (saliency == ndimage.maximum_filter(saliency, size=size, mode="nearest")) & (saliency >= threshold)
    rows, cols = np.nonzero(is_peak)
    order = np.argsort(-saliency[rows, cols], kind="stable")
    picked: List[Tuple[int, int]] = []
    for r, c in zip(rows[order], cols[order]):
        if all((r - pr) ** 2 + (c - pc) ** 2 >= min_distance**2 for pr, pc in picked):
            picked.append((r, c))
            if len(picked) >= limit:
                break
    return np.array(picked, np.int64).reshape(-1, 2)


class PatchLocalizer:
    """``(image, PromptScorer) -> Localized``: patches + Grad-CAM (see the module docstring).

    Arguments:
        clip: a :class:`samtext.models.ClipModel` (or a double with ``encode_images`` and ``saliency_maps``).
        settings: :class:`samtext.settings.TextSettings` (its patch knobs too).
    """

    def __init__(self, clip, settings: TextSettings):
        self.clip, self.settings = clip, settings
        self.last_maps = None  # the maps of the last image ((T, h, w), map pixels per image pixel): for inspection

    def __call__(self, image: np.ndarray, scorer) -> Localized:
        s = self.settings
        h, w = image.shape[:2]
        boxes = patch_boxes(h, w, patch_sides(s, h, w), s.overlap)
        crops = [box_crop(image, b, context=0.0) for b in boxes]
        probs = scorer.probabilities(self.clip.encode_images(crops))  # (N, C + G)
        c, texts = scorer.num_classes, probs.shape[1]
        kept = [self._kept(probs[:, t], region_gate(s, probs[:, t]) if t < c else negative_hits(probs, c, t - c),
                           boxes) for t in range(texts)]
        scale = min(1.0, s.map_side / max(h, w))
        maps, local = self._maps(crops, boxes, probs, kept, scorer, (h, w), scale)
        self.last_maps = (maps, scale)
        distance = max(1, int(round((s.min_distance or max(8, max(h, w) // 20)) * scale)))
        neg_peaks = [find_peaks(maps[t], s.peak_threshold * self._level(maps[t], local[t]), distance, s.max_instances)
                     for t in range(c, texts) if maps[t].max() > 0]
        neg_points = (np.concatenate(neg_peaks)[:, ::-1] + 0.5) / scale if neg_peaks else np.zeros((0, 2))
        candidates = []
        for k in range(c):
            if not len(kept[k]) or maps[k].max() <= 0:  # no patch at the threshold, or Grad-CAM saw nothing
                continue
            peaks = find_peaks(maps[k], s.peak_threshold * self._level(maps[k], local[k]), distance, s.max_instances)
            low = self._low_points(maps[k], boxes[kept[k]], scale, distance)
            for r, col in peaks:
                point = (np.array([[col, r]], np.float64) + 0.5) / scale
                gap = np.hypot(*(neg_points - point[0]).T) * scale if len(neg_points) else np.zeros(0)
                near = neg_points[(gap < 4 * distance) & (gap >= distance)]  # near it, but not on it
                pts = np.concatenate([point, low, near]).astype(np.float32)
                labels = np.array([1] + [0] * (len(low) + len(near)))
                candidates.append(Candidate(k, None, pts, labels, self._region_score(point[0], boxes, kept[k],
                                                                                       probs[:, k])))
        return Localized(candidates, probs[:, :c].max(axis=0), {"num_regions": float(len(boxes))})

    @staticmethod
    def _level(saliency: np.ndarray, local: np.ndarray) -> np.ndarray:
        """The level a peak is measured against, per cell: its own patches' brightest cell, but at least
        :data:`WEAK_PATCH` of the whole map's maximum (a patch that saw almost nothing gives no peaks); outside
        every kept patch (where only the smoothing spilled) no peak."""
        return np.where(local > 0, np.maximum(local, WEAK_PATCH * saliency.max()), np.inf)

    def _kept(self, column: np.ndarray, hits: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The ``top_k`` best of the patches ``hits`` by ``column``, best first, each overlapping no better kept
        patch by more than :data:`PATCH_NMS_IOU` (box IoU): the patches spread over the image's instances
        instead of piling onto the best one."""
        from .text import box_nms

        order = hits[np.argsort(-column[hits], kind="stable")]
        return order[box_nms(boxes[order].astype(np.float32), column[order], PATCH_NMS_IOU)][: self.settings.top_k_patches]

    @staticmethod
    def _region_score(point: np.ndarray, boxes: np.ndarray, kept: np.ndarray, column: np.ndarray) -> float:
        """The best probability among the kept patches that contain ``point`` ``(x, y)``."""
        x, y = point
        inside = [i for i in kept if boxes[i, 0] <= x < boxes[i, 2] and boxes[i, 1] <= y < boxes[i, 3]]
        return float(column[inside or kept].max())

    def _maps(self, crops, boxes, probs, kept, scorer, size, scale) -> Tuple[np.ndarray, np.ndarray]:
        """``(maps, local)``, both ``(T, h, w)`` in the map frame (image pixels times ``scale``): the saliency of
        each class and negative, and at each cell the highest saliency of the kept patches that cover it (the
        level a peak there is measured against, so an instance in its own patch is not held to the level of a
        brighter one elsewhere)."""
        import cv2

        h, w = size
        mh, mw = max(1, round(h * scale)), max(1, round(w * scale))
        maps = np.zeros((probs.shape[1], mh, mw), np.float32)
        local = np.zeros_like(maps)
        jobs = [(t, i) for t in range(probs.shape[1]) for i in kept[t]]
        if not jobs:
            return maps, local
        cams = self.clip.saliency_maps([crops[i] for _, i in jobs], scorer.text_embeddings, [t for t, _ in jobs])
        for (t, i), cam in zip(jobs, cams):
            x1, y1, x2, y2 = boxes[i]
            # cut box_crop's padding off in the map's own frame (the crop may have been shrunk), then paste
            side, h, w = cam.shape[0], y2 - y1, x2 - x1
            ph, pw = max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w)))
            top, left = (side - ph) // 2, (side - pw) // 2
            cam = cam[top : top + ph, left : left + pw] * float(probs[i, t]) ** PROB_WEIGHT
            mx1, my1, mx2, my2 = _map_box(boxes[i], scale, mh, mw)
            shrink = cam.shape[1] > mx2 - mx1
            small = cv2.resize(np.ascontiguousarray(cam), (mx2 - mx1, my2 - my1),
                               interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            np.maximum(maps[t, my1:my2, mx1:mx2], small.reshape(my2 - my1, mx2 - mx1), out=maps[t, my1:my2, mx1:mx2])
        sigma = max(1.0, 0.01 * max(mh, mw))
        for t in range(len(maps)):
            if maps[t].max() > 0:
                maps[t] = cv2.GaussianBlur(maps[t], (0, 0), sigma)
        for t, i in jobs:  # after smoothing: the level of each patch's own brightest cell
            mx1, my1, mx2, my2 = _map_box(boxes[i], scale, mh, mw)
            top = maps[t, my1:my2, mx1:mx2].max()
            np.maximum(local[t, my1:my2, mx1:mx2], top, out=local[t, my1:my2, mx1:mx2])
        return maps, local

    def _low_points(self, saliency: np.ndarray, boxes: np.ndarray, scale: float, distance: int) -> np.ndarray:
        """``(<=2, 2)`` ``(x, y)`` image pixels where the class map is lowest (under LOW_SALIENCY of its maximum)
        inside the class's kept patches, at least ``distance`` map cells apart."""
        region = np.zeros(saliency.shape, bool)
        for x1, y1, x2, y2 in boxes:
            region[int(y1 * scale) : int(np.ceil(y2 * scale)), int(x1 * scale) : int(np.ceil(x2 * scale))] = True
        low = region & (saliency < LOW_SALIENCY * saliency.max())
        if not low.any():
            return np.zeros((0, 2), np.float64)
        rows, cols = np.nonzero(low)
        order = np.argsort(saliency[rows, cols], kind="stable")
        picked: List[Tuple[int, int]] = []
        for r, c in zip(rows[order], cols[order]):
            if all((r - pr) ** 2 + (c - pc) ** 2 >= distance**2 for pr, pc in picked):
                picked.append((r, c))
                if len(picked) == 2:
                    break
        return (np.array(picked, np.float64)[:, ::-1] + 0.5) / scale
