"""Synthetic scenes with known instances, for measuring the one-shot pipelines with the test doubles.

A scene is a background with objects of a few kinds (colours of :mod:`doubles`), 0-3 instances of each,
some of them look-alikes (ORANGE for RED, CYAN for BLUE), in a few shapes: rectangles, discs, thin bars
(5-7 px), rings and L-shapes (not convex). Objects never touch, so each instance is one connected region.
Everything is seeded: ``make_scene(seed)`` gives the same scene every time.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from scipy import ndimage

from doubles import BACKGROUND, BLUE, CYAN, GREEN, ORANGE, RED, YELLOW, canvas

KINDS = (RED, BLUE, GREEN, YELLOW)
LOOKALIKES = (ORANGE, CYAN)
SHAPES = ("rect", "disc", "bar", "ring", "ell")


@dataclass
class Scene:
    """An ``(H, W, 3)`` uint8 image and the bool masks of its instances, by colour."""

    image: np.ndarray
    instances: Dict[tuple, List[np.ndarray]] = field(default_factory=dict)

    def of(self, colour) -> List[np.ndarray]:
        return self.instances.get(tuple(colour), [])


def _shape_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A bool mask of one shape in an ``h x w`` box (the shape touches the box's sides)."""
    yy, xx = np.mgrid[:h, :w]
    if kind == "rect":
        return np.ones((h, w), bool)
    if kind == "disc":
        return ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1
    if kind == "bar":
        return np.ones((h, w), bool)  # the box itself is thin (see below)
    if kind == "ring":
        r = ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2
        inner = (1 - 14.0 / min(h, w)) ** 2
        return (r <= 1) & (r >= inner)
    t = max(7, min(h, w) // 3)  # "ell": an L of arm thickness t
    m = np.zeros((h, w), bool)
    m[:, :t] = True
    m[h - t :, :] = True
    return m


def _box_size(kind: str, rng: np.random.Generator):
    if kind == "bar":
        long_, thin = int(rng.integers(40, 70)), int(rng.integers(5, 8))
        return (long_, thin) if rng.random() < 0.5 else (thin, long_)
    return int(rng.integers(22, 44)), int(rng.integers(22, 44))


def _place(occupied: np.ndarray, mask: np.ndarray, rng: np.random.Generator, margin: int = 6) -> Optional[tuple]:
    H, W = occupied.shape
    h, w = mask.shape
    grown = ndimage.binary_dilation(occupied, iterations=margin)
    for _ in range(60):
        y, x = int(rng.integers(2, H - h - 1)), int(rng.integers(2, W - w - 1))
        if not (grown[y : y + h, x : x + w] & mask).any():
            return y, x
    return None


def make_scene(seed: int, counts: Dict[tuple, int], size=(160, 200)) -> Scene:
    """A scene with ``counts[colour]`` instances of each colour, random shapes and places."""
    rng = np.random.default_rng(seed)
    H, W = size
    image = canvas(H, W, BACKGROUND)
    occupied = np.zeros((H, W), bool)
    scene = Scene(image)
    for colour, n in counts.items():
        for _ in range(n):
            kind = SHAPES[int(rng.integers(len(SHAPES)))]
            mask = _shape_mask(kind, *_box_size(kind, rng), rng)
            spot = _place(occupied, mask, rng)
            if spot is None:
                continue
            y, x = spot
            full = np.zeros((H, W), bool)
            full[y : y + mask.shape[0], x : x + mask.shape[1]] = mask
            image[full] = colour
            occupied |= full
            scene.instances.setdefault(tuple(colour), []).append(full)
    return scene


def random_scene(seed: int, target=RED, lookalike=ORANGE, size=(160, 200)) -> Scene:
    """0-3 instances of ``target``, 0-2 of its look-alike and 0-2 of each other kind."""
    rng = np.random.default_rng(10_000 + seed)
    counts = {tuple(target): int(rng.integers(0, 4)), tuple(lookalike): int(rng.integers(0, 3))}
    for colour in KINDS:
        if tuple(colour) != tuple(target):
            counts[tuple(colour)] = int(rng.integers(0, 3))
    return make_scene(seed, counts, size)


def two_tone_scene(seed: int, target=RED, other=YELLOW) -> Scene:
    """0-3 objects of two colours (``target`` and, across a random straight cut through the middle, ``other``)
    among one green, one blue and 0-1 cyan objects: one object in two regions, as real objects are in parts
    (``instances[target]`` holds each object's whole mask)."""
    rng = np.random.default_rng(20_000 + seed)
    scene = make_scene(seed, {tuple(target): int(rng.integers(0, 4)), tuple(GREEN): 1, tuple(BLUE): 1,
                              tuple(CYAN): int(rng.integers(0, 2))})
    for mask in scene.of(target):
        ys, xs = np.nonzero(mask)
        angle = rng.uniform(0, np.pi)
        side = np.cos(angle) * (xs - xs.mean()) + np.sin(angle) * (ys - ys.mean()) > 0
        scene.image[ys[side], xs[side]] = other
    return scene


def reference_scene(seed: int = 12345, target=RED, lookalike=ORANGE):
    """A reference: exactly one ``target`` instance among distractors (one look-alike included).
    Returns ``(image, mask)``."""
    counts = {tuple(target): 1, tuple(lookalike): 1, tuple(GREEN): 1, tuple(BLUE if target != BLUE else YELLOW): 1}
    scene = make_scene(seed, counts)
    (mask,) = scene.of(target)
    return scene.image, mask


# ---------------------------------------------------------------------------------------------- metrics


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@dataclass
class Tally:
    """Counts over scenes: instances found, predictions right, empty results where the class is absent,
    and, for point-based methods, positive points on the object."""

    gt_instances: int = 0
    found: int = 0
    predicted: int = 0
    correct: int = 0
    absent_images: int = 0
    absent_empty: int = 0
    present_images: int = 0
    present_kept: int = 0
    positive_points: int = 0
    positive_on_object: int = 0

    def add(self, result, gt: List[np.ndarray], iou_match: float = 0.5) -> None:
        preds = [inst.mask for inst in result.instances]
        self.gt_instances += len(gt)
        self.predicted += len(preds)
        self.found += sum(any(_iou(g, p) >= iou_match for p in preds) for g in gt)
        self.correct += sum(any(_iou(g, p) >= iou_match for g in gt) for p in preds)
        if gt:
            self.present_images += 1
            self.present_kept += int(not result.is_empty)
            union = np.logical_or.reduce(gt)
            for (x, y), label in zip(result.points, result.point_labels):
                if label == 1:
                    self.positive_points += 1
                    self.positive_on_object += int(union[min(int(y), union.shape[0] - 1),
                                                         min(int(x), union.shape[1] - 1)])
        else:
            self.absent_images += 1
            self.absent_empty += int(result.is_empty)

    @staticmethod
    def _ratio(a, b):
        return a / b if b else float("nan")

    @property
    def recall(self) -> float:
        return self._ratio(self.found, self.gt_instances)

    @property
    def precision(self) -> float:
        return self._ratio(self.correct, self.predicted)

    @property
    def absent_empty_rate(self) -> float:
        return self._ratio(self.absent_empty, self.absent_images)

    @property
    def present_kept_rate(self) -> float:
        return self._ratio(self.present_kept, self.present_images)

    @property
    def points_on_object(self) -> float:
        return self._ratio(self.positive_on_object, self.positive_points)

    def row(self) -> dict:
        return dict(recall=self.recall, precision=self.precision, absent_empty=self.absent_empty_rate,
                    present_kept=self.present_kept_rate, points_on_object=self.points_on_object,
                    images=self.absent_images + self.present_images, instances=self.gt_instances)


def evaluate(matcher, seeds, target=RED, lookalike=ORANGE, make=None) -> Tally:
    """The :class:`Tally` of ``matcher`` (``image -> MaskResult``) on the scenes of ``seeds``: ``make(seed)`` (default:
    :func:`random_scene` with ``target`` and ``lookalike``), scored on the ``target`` instances."""
    tally = Tally()
    for seed in seeds:
        scene = make(seed) if make is not None else random_scene(seed, target, lookalike)
        tally.add(matcher(scene.image), scene.of(target))
    return tally


QUALITY_HEADER = ["configuration", "instance recall", "precision", "absent -> empty", "present kept",
                  "points on object", "instances", "images"]


def quality_rows(configs, n_scenes: int, target=RED, lookalike=ORANGE, name: str = "") -> List[list]:
    """One row of :data:`QUALITY_HEADER` per ``(label, build)`` of ``configs`` (``build()`` gives an
    ``image -> MaskResult``), each evaluated on the same ``n_scenes`` random scenes; printed as it goes."""
    rows = []
    for label, build in configs:
        t = evaluate(build(), range(n_scenes), target, lookalike).row()
        rows.append([label] + ["%.3f" % t[k] for k in ("recall", "precision", "absent_empty", "present_kept",
                                                          "points_on_object")] + [t["instances"], t["images"]])
        print(name, label, t, flush=True)
    return rows
