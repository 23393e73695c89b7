"""Parts of one object: which kept masks touch along a seam, and whether SAM sees them as one object.

A localizer that finds an object piece by piece (a box over a car's door, another over its bonnet; a Grad-CAM peak
on a shirt and another on the trousers) gives SAM prompts whose masks do not overlap: overlap rules cannot join
them, and the object comes out as several instances. Two masks of one class are candidate parts of one object
when they share a seam: the pixels of one that touch the other (8-neighbourhood) number at least
:data:`MIN_SEAM` of the smaller mask's width (the square root of its area), which two objects touching at a
corner or across a gap never do. Whether they *are* one object is then SAM's answer to the box around both,
checked by CLIP (see :class:`samtext.pipelines.text.TextLabeller`). A later mask of the class that holds two or
more kept masks and is itself one connected piece is their object, found whole; a mask that spans two objects
with background between them is not one piece.

Pieces that do not touch can be bridged: a mask of the class that was not kept (it repeated a piece), is one
connected piece, and touches two kept ones says they may be one object too.

Masks are ``(H, W)`` bool arrays of one image; nothing here imports FiftyOne or a model.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np

MIN_SEAM = 0.3  # a seam at least this share of the smaller mask's width (sqrt of its area)
COVERS = 0.9  # SAM's answer for the pair holds at least this share of each part
PART_INSIDE = 0.8  # a kept mask is a piece of a later mask holding this share of it
MAX_PIECES = 6  # the most kept masks joined into one object
ONE_PIECE = 0.95  # a mask is one piece when its largest 8-connected component holds this share of it


def _bounds(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` of a mask's pixels, grown by one (clipped to the image); None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    h, w = mask.shape
    return max(rows[0] - 1, 0), min(rows[-1] + 2, h), max(cols[0] - 1, 0), min(cols[-1] + 2, w)


def seam(a: np.ndarray, b: np.ndarray) -> int:
    """The number of pixels of ``a`` (``(H, W)`` bool) with a pixel of ``b`` among their 8 neighbours."""
    from scipy import ndimage

    ba, bb = _bounds(a), _bounds(b)
    if ba is None or bb is None:
        return 0
    y0, y1 = max(ba[0], bb[0]), min(ba[1], bb[1])
    x0, x1 = max(ba[2], bb[2]), min(ba[3], bb[3])
    if y0 >= y1 or x0 >= x1:  # grown bounds apart: nothing touches
        return 0
    near_b = ndimage.binary_dilation(b[y0:y1, x0:x1], structure=np.ones((3, 3), bool))
    return int((a[y0:y1, x0:x1] & ~b[y0:y1, x0:x1] & near_b).sum())


def share_a_seam(a: np.ndarray, b: np.ndarray, min_seam: float = MIN_SEAM) -> bool:
    """Whether ``a`` and ``b`` touch along a seam of at least ``min_seam`` of the smaller one's width."""
    smaller = min(int(a.sum()), int(b.sum()))
    if smaller == 0:
        return False
    return min(seam(a, b), seam(b, a)) >= min_seam * np.sqrt(smaller)


def touch(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` overlap or are 8-neighbours somewhere."""
    return bool((a & b).any()) or seam(a, b) > 0


def part_pairs(masks: Sequence[np.ndarray], bridges: Sequence[np.ndarray] = (),
               min_seam: float = MIN_SEAM) -> List[Tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of ``masks`` that may be pieces of one object: they share a seam, or one of
    ``bridges`` (masks of the class that were not kept) touches both. In order of ``i`` then ``j``."""
    pairs = []
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            if share_a_seam(masks[i], masks[j], min_seam) or any(
                    touch(b, masks[i]) and touch(b, masks[j]) for b in bridges):
                pairs.append((i, j))
    return pairs


def holds_part(whole: np.ndarray, part: np.ndarray, inside: float = PART_INSIDE) -> bool:
    """Whether at least ``inside`` of ``part`` lies in ``whole``."""
    return bool((whole & part).sum() >= inside * part.sum())


def one_piece(mask: np.ndarray, share: float = ONE_PIECE) -> bool:
    """Whether ``mask``'s largest 8-connected component holds at least ``share`` of it: one object, not several
    that a mask happens to span."""
    from .geometry import component_areas

    _, areas = component_areas(mask)
    return bool(len(areas)) and bool(areas.max() >= share * mask.sum())
