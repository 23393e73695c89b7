"""Mask utilities. Masks are ``(H, W)`` bool arrays; boxes are ``XYXY`` pixels; points are ``(x, y)``."""

from typing import List, Optional, Tuple

import numpy as np

# The colour that outside-the-mask pixels of a masked crop get: CLIP's mean pixel, which its normalisation
# maps to zero, so the filled area carries no signal of its own.
NEUTRAL_FILL = (123, 117, 104)
# CLIP reads 224 px: crops for it are cut no larger than twice that, so that a box across a 12 MP photo costs
# what a small one does (its resize to CLIP's input then starts from 448 px, not from 4000).
CROP_MAX_SIDE = 448


def mask_to_box(mask: np.ndarray) -> Optional[np.ndarray]:
    """The tight ``XYXY`` box (x2, y2 exclusive) around a mask, or None when it is empty."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    y1, y2 = np.flatnonzero(rows)[[0, -1]]
    x1, x2 = np.flatnonzero(cols)[[0, -1]]
    return np.array([x1, y1, x2 + 1, y2 + 1], dtype=np.float32)


def sample_points(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``(k', 2)`` distinct ``(x, y)`` pixel centres drawn uniformly from ``mask`` (k' = min(k, area))."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0 or k <= 0:
        return np.zeros((0, 2), dtype=np.float32)
    idx = rng.choice(len(xs), size=min(k, len(xs)), replace=False)
    return np.stack([xs[idx] + 0.5, ys[idx] + 0.5], axis=1).astype(np.float32)


def grow_box(box: np.ndarray, size: Tuple[int, int], context: float = 0.1) -> Tuple[int, int, int, int]:
    """An ``XYXY`` box grown by ``context`` of its width and height on each side, in whole pixels, clipped to an
    image of ``size = (H, W)``."""
    h, w = size
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * context, (y2 - y1) * context
    return (int(max(0, x1 - dx)), int(max(0, y1 - dy)), int(min(w, np.ceil(x2 + dx))),
            int(min(h, np.ceil(y2 + dy))))


def crop_with_context(image: np.ndarray, box: np.ndarray, context: float = 0.1) -> np.ndarray:
    """The ``box`` region of an ``(H, W, 3)`` image, grown by ``context`` of its size on each side."""
    x1, y1, x2, y2 = grow_box(box, image.shape[:2], context)
    return image[y1:y2, x1:x2]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0



def repeats(mask: np.ndarray, kept: np.ndarray, max_iou: float, max_inside: float = 0.8) -> bool:
    """Whether ``mask`` repeats a better object ``kept`` (two ``(H, W)`` bool masks): the same object (IoU above
    ``max_iou``), a part of it, or a whole around it (more than ``max_inside`` of the smaller of the two inside the
    other)."""
    inter = np.logical_and(mask, kept).sum()
    smaller = min(mask.sum(), kept.sum())
    return iou(mask, kept) > max_iou or (smaller > 0 and inter > max_inside * smaller)

def pad_to_square(crop: np.ndarray, fill=NEUTRAL_FILL) -> np.ndarray:
    """An ``(h, w, 3)`` uint8 crop centred on a ``fill`` square of side ``max(h, w)`` (so that CLIP's centre crop
    keeps all of it)."""
    ch, cw = crop.shape[:2]
    side = max(ch, cw)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = fill
    top, left = (side - ch) // 2, (side - cw) // 2
    out[top : top + ch, left : left + cw] = crop
    return out


def _shrink(crop: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """``crop`` scaled down (area-averaged) so that its long side is at most ``max_side``."""
    h, w = crop.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return crop
    import cv2

    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(np.ascontiguousarray(crop), size, interpolation=cv2.INTER_AREA)


def masked_crop(image: np.ndarray, mask: np.ndarray, context: float = 0.1, fill=NEUTRAL_FILL,
                max_side: Optional[int] = CROP_MAX_SIDE) -> np.ndarray:
    """The object alone, for CLIP: the mask's box grown by ``context`` of its size on each side, pixels
    outside the mask set to ``fill``, padded with ``fill`` to a square (so that CLIP's centre crop keeps the
    whole object), its side at most ``max_side`` (None: the image's own pixels). ``image`` is ``(H, W, 3)`` uint8,
    ``mask`` ``(H, W)`` bool and not empty."""
    x1, y1, x2, y2 = grow_box(mask_to_box(mask), image.shape[:2], context)
    pixels = _shrink(image[y1:y2, x1:x2], max_side)
    cover = _shrink(mask[y1:y2, x1:x2].astype(np.float32), max_side)  # the fraction of each pixel inside
    inside = cover >= 0.5
    if not inside.any():  # a thin object that no shrunk pixel is mostly inside: keep what it touches
        inside = cover > 0
    crop = np.where(inside[..., None], pixels, np.asarray(fill, dtype=np.uint8))
    return pad_to_square(crop, fill)


def box_crop(image: np.ndarray, box, context: float = 0.1, fill=NEUTRAL_FILL,
             max_side: Optional[int] = CROP_MAX_SIDE) -> np.ndarray:
    """A box region for CLIP: the ``XYXY`` box grown by ``context`` of its size on each side (clipped to the
    image), padded with ``fill`` to a square, its side at most ``max_side`` (None: the image's own pixels)."""
    return pad_to_square(_shrink(crop_with_context(image, np.asarray(box, dtype=np.float32), context), max_side), fill)


def component_areas(mask: np.ndarray):
    """``(labels, areas)`` of the connected parts (8-connectivity) of a bool mask: ``labels`` ``(H, W)`` int, 0 off
    the mask and k on part k; ``areas`` ``(n,)`` pixels of parts 1..n."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return labels, np.bincount(labels.ravel(), minlength=n + 1)[1:]


def components(mask: np.ndarray, min_area: int = 1) -> List[np.ndarray]:
    """The connected parts (8-connectivity) of a bool mask with at least ``min_area`` pixels, largest first."""
    labels, areas = component_areas(mask)
    order = [i + 1 for i in np.argsort(-areas) if areas[i] >= min_area]
    return [labels == k for k in order]
