"""Mask utilities. Masks are ``(H, W)`` bool arrays; boxes are ``XYXY`` pixels; points are ``(x, y)``."""

from typing import Optional

import numpy as np


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


def crop_with_context(image: np.ndarray, box: np.ndarray, context: float = 0.1) -> np.ndarray:
    """The ``box`` region of an ``(H, W, 3)`` image, grown by ``context`` of its size on each side."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * context, (y2 - y1) * context
    x1, y1 = int(max(0, x1 - dx)), int(max(0, y1 - dy))
    x2, y2 = int(min(w, np.ceil(x2 + dx))), int(min(h, np.ceil(y2 + dy)))
    return image[y1:y2, x1:x2]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
