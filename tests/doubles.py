"""Test doubles with known answers for the reference pipelines (no model weights, no FiftyOne).

Images are flat-coloured shapes on a background, drawn from :data:`PALETTE`. Each pixel belongs to the
palette colour nearest to it (so the blurred seams of a resized image still have a colour), and
"objects" are the connected regions of one colour.

- :class:`FakeSegmenter` offers :class:`samtext.models.SamSegmenter`'s interface. Its features are, per
  ``STRIDE``-pixel cell, the histogram of the cell's palette colours, so the cosine to a prototype
  taken under a red object's mask is ~1 exactly on red cells. Its "SAM" returns the connected regions
  under the positive points, minus the regions that negative points fall on, within the box prompt.
- :class:`FakeClip` offers :class:`samtext.models.ClipModel`'s ``encode_images`` and
  ``class_probability``: an image embedding is the crop's palette histogram (the neutral fill of masked
  crops left out), and the probability of a class is the share of the crop in that class's colour ("cat"
  is red), plus a part of its look-alike's share.

Look-alikes: ORANGE resembles RED and CYAN resembles BLUE, in the segmenter's features (cosine
:data:`LOOKALIKE_COSINE` with :data:`LOOKALIKE_FEATURES`) and for CLIP (:data:`LOOKALIKE_AFFINITY`).

Both count and record their calls, so that tests can spy on what the pipelines ask.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from scipy import ndimage

from samtext.models.sam import ImageEmbedding, Prediction

BACKGROUND = (40, 40, 40)
RED = (220, 30, 30)
BLUE = (30, 60, 220)
GREEN = (40, 200, 60)
YELLOW = (230, 220, 40)
ORANGE = (235, 120, 30)  # a look-alike of RED
CYAN = (40, 200, 230)  # a look-alike of BLUE
NEUTRAL = (123, 117, 104)  # samtext.pipelines.geometry.NEUTRAL_FILL: the fill of masked crops
COLOURS = [BACKGROUND, RED, BLUE, GREEN, YELLOW, ORANGE, CYAN, NEUTRAL]
PALETTE = np.array(COLOURS, dtype=np.float32)
COLOUR_INDEX = {c: i for i, c in enumerate(COLOURS)}

STRIDE = 8  # pixels per feature cell
LOW_RES = 1  # pixels per cell of the low-res logits (the double's low-res frame is the image itself)

LOOKALIKE_COSINE = 0.5
LOOKALIKE_AFFINITY = {ORANGE: RED, CYAN: BLUE}


def _lookalike_features() -> np.ndarray:
    """A colour -> feature table where each look-alike has cosine LOOKALIKE_COSINE with its original and
    every other pair is orthogonal."""
    n = len(COLOURS)
    table = np.eye(n, dtype=np.float32)
    for twin, original in LOOKALIKE_AFFINITY.items():
        i, j = COLOUR_INDEX[twin], COLOUR_INDEX[original]
        table[i] = 0.0
        table[i, j] = LOOKALIKE_COSINE
        table[i, i] = np.sqrt(1 - LOOKALIKE_COSINE**2)
    return table


LOOKALIKE_FEATURES = _lookalike_features()
SCORE_FOUND, SCORE_PART, SCORE_GROWN, SCORE_REFINED = 0.9, 0.6, 0.4, 0.95


# --------------------------------------------------------------------------------------------- images


def canvas(h: int, w: int, colour=BACKGROUND) -> np.ndarray:
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = colour
    return img


def rect(img: np.ndarray, y0: int, x0: int, y1: int, x1: int, colour) -> np.ndarray:
    """Paints ``[y0:y1, x0:x1]`` in ``colour``; returns the painted region's bool mask."""
    img[y0:y1, x0:x1] = colour
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def disc(img: np.ndarray, cy: float, cx: float, r: float, colour) -> np.ndarray:
    """Paints a disc in ``colour``; returns its bool mask."""
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    mask = (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r
    img[mask] = colour
    return mask


def colour_ids(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` index of the nearest palette colour of each pixel."""
    d = ((image[..., None, :].astype(np.float32) - PALETTE) ** 2).sum(-1)
    return d.argmin(-1)


def colour_fraction(image: np.ndarray, colour) -> float:
    if image.size == 0:
        return 0.0
    return float((colour_ids(image) == COLOUR_INDEX[tuple(colour)]).mean())


def regions(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` int labels of the connected single-colour regions (1..n, every pixel in one)."""
    ids = colour_ids(image)
    out = np.zeros(ids.shape, dtype=np.int64)
    n = 0
    for c in np.unique(ids):
        lab, k = ndimage.label(ids == c)
        out[lab > 0] = lab[lab > 0] + n
        n += k
    return out


def _pool(mask: np.ndarray, cell: int, grid_hw) -> np.ndarray:
    """The fraction of each ``cell``-pixel cell that ``mask`` covers, on a grid of ``grid_hw`` cells
    (cells beyond the image are 0, partial cells count only their in-image pixels)."""
    h, w = mask.shape
    gh, gw = grid_hw
    padded = np.zeros((gh * cell, gw * cell), dtype=np.float32)
    padded[:h, :w] = mask
    sums = padded.reshape(gh, cell, gw, cell).sum(axis=(1, 3))
    counts = np.zeros_like(padded)
    counts[:h, :w] = 1
    n = counts.reshape(gh, cell, gw, cell).sum(axis=(1, 3))
    return np.where(n > 0, sums / np.maximum(n, 1), 0.0).astype(np.float32)


def draw_objects(objects, size=(160, 192)) -> tuple:
    """An image of ``size`` with ``objects`` = [(kind, colour, y, x)], each a disc (radius 13) or a 30x24 rect
    centred at (y, x); returns it and each object's true ``(H, W)`` bool mask (its connected region)."""
    img = canvas(*size)
    for kind, colour, y, x in objects:
        if kind == "disc":
            disc(img, y, x, 13, colour)
        else:
            rect(img, y - 12, x - 15, y + 12, x + 15, colour)
    lab = regions(img)
    return img, [lab == lab[y, x] for _, _, y, x in objects]


# ------------------------------------------------------------------------------------------ segmenter


class FakeEmbedding(ImageEmbedding):
    """An :class:`ImageEmbedding` that also keeps the image, for the fake decoder."""

    def __init__(self, features, original_size, input_size, image):
        super().__init__(features, original_size, input_size)
        self.image = image
        self._regions = None

    @property
    def regions(self) -> np.ndarray:
        if self._regions is None:
            self._regions = regions(self.image)
        return self._regions


class FakeSegmenter:
    """A segmenter with :class:`samtext.models.SamSegmenter`'s interface and known answers.

    Frame: no resizing (``input_size == original_size``); features on a ``STRIDE``-pixel grid padded to
    a square, like SAM's. A cell's feature is the mix of its colours' rows of ``features`` (default: one
    orthogonal direction per colour), plus, with ``noise > 0``, a random vector of that norm in extra
    dimensions (seeded by the image, so repeatable), so that no two objects match perfectly. The padding
    cells hold a vector opposite to every colour, so a pipeline that does not restrict itself to
    :meth:`valid_grid` picks them as "least similar" and lands outside the image. The low-res mask frame is
    the image itself (``LOW_RES`` = 1 pixel per cell).

    Multimask output: 3 candidates (a part of the region, the region, the region grown by 3 px), with
    the region's index rotating over the calls (1, 2, 0, 1, ...), so taking index 0 is wrong. With
    ``whole_level`` the third is instead the region with every other non-background region that touches it (SAM's
    "whole object" answer, for objects of several colours), scored as the region.

    Refinement (``mask_logits`` given): the region is also cut to ``mask_logits > 0`` (grown by one pixel),
    so feeding back the wrong candidate's logits gives the wrong mask.

    Boxes: the region is cut to the box grown by ``box_margin`` pixels; with ``box_regions``, or with no positive
    point, a box also takes every region of a colour other than the background that lies at least 80% inside it
    (SAM's answer to a box around an object). With ``box_cut`` a box takes every such region it touches, cut to
    the box: a box over half an object gives half the object (the "parts" oracle of issue 20).

    Spies: ``embed_calls``, ``predict_calls`` (a dict of the arguments of each call).
    """

    feature_stride = STRIDE

    def __init__(self, refine_empty: bool = False, features: Optional[np.ndarray] = None, noise: float = 0.0,
                 box_regions: bool = False, box_margin: int = 0, box_cut: bool = False, whole_level: bool = False):
        self.refine_empty = refine_empty
        self.whole_level = whole_level
        self.box_regions, self.box_margin, self.box_cut = box_regions, box_margin, box_cut
        self.features = np.eye(len(COLOURS), dtype=np.float32) if features is None else features
        self.noise = noise
        self.embed_calls = 0
        self.predict_calls: List[dict] = []

    # -- encoder
    def grid_size(self, h: int, w: int):
        return -(-h // STRIDE), -(-w // STRIDE)

    def embed(self, image: np.ndarray) -> FakeEmbedding:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("expected an (H, W, 3) uint8 RGB image, got %s %s" % (image.shape, image.dtype))
        self.embed_calls += 1
        h, w = image.shape[:2]
        gh, gw = self.grid_size(h, w)
        side = max(gh, gw)
        ids = colour_ids(image)
        hist = np.stack([_pool(ids == c, STRIDE, (gh, gw)) for c in range(len(COLOURS))], axis=-1)
        feats = hist @ self.features  # (gh, gw, D)
        if self.noise:
            rng = np.random.default_rng(int(ids.sum() + 7919 * ids.size) % (2**32))
            extra = rng.normal(size=(gh, gw, 8)).astype(np.float32)
            extra *= self.noise * np.linalg.norm(feats, axis=-1, keepdims=True) / np.linalg.norm(extra, axis=-1,
                                                                                               keepdims=True)
            feats = np.concatenate([feats, extra], axis=-1)
        out = np.full((side, side, feats.shape[-1]), -1.0, dtype=np.float32)  # padding: opposite to all
        out[:gh, :gw] = feats
        return FakeEmbedding(torch.from_numpy(out).permute(2, 0, 1)[None].contiguous(), (h, w), (h, w),
                             image.copy())

    def valid_grid(self, embedding) -> tuple:
        return self.grid_size(*embedding.input_size)

    def mask_to_grid(self, mask: np.ndarray, embedding) -> torch.Tensor:
        side = embedding.features.shape[-1]
        return torch.from_numpy(_pool(np.asarray(mask, dtype=bool), STRIDE, (side, side)))

    def grid_to_point(self, row: int, col: int, embedding):
        h, w = embedding.original_size
        return min((col + 0.5) * STRIDE, w - 0.5), min((row + 0.5) * STRIDE, h - 0.5)

    # -- decoder
    def low_res_size(self, h: int, w: int):
        return -(-h // LOW_RES), -(-w // LOW_RES)

    def _region(self, labels, coords, point_labels, box, image=None):
        h, w = labels.shape
        hit = lambda p: labels[min(int(p[1]), h - 1), min(int(p[0]), w - 1)]  # noqa: E731
        inside = [0 <= p[0] < w and 0 <= p[1] < h for p in coords]
        pos = {hit(p) for p, l, ok in zip(coords, point_labels, inside) if l == 1 and ok}
        neg = {hit(p) for p, l, ok in zip(coords, point_labels, inside) if l == 0 and ok}
        if box is not None:
            m = self.box_margin
            x0, y0, x1, y1 = [int(round(float(v))) + d for v, d in zip(box, (-m, -m, m, m))]
            keep = np.zeros(labels.shape, bool)
            keep[max(0, y0) : y1, max(0, x0) : x1] = True
            if self.box_regions or not pos:  # a box alone: SAM's answer is the object(s) in it
                ids, total = np.unique(labels, return_counts=True)
                inside = dict(zip(*np.unique(labels[keep], return_counts=True)))
                bg = set(np.unique(labels[colour_ids(image) == COLOUR_INDEX[BACKGROUND]]))
                share = 0.0 if self.box_cut else 0.8
                pos |= {i for i, n in zip(ids, total) if i not in bg and inside.get(i, 0) > share * n}
            return np.isin(labels, sorted(pos - neg)) & keep
        return np.isin(labels, sorted(pos - neg))

    @staticmethod
    def _whole(labels: np.ndarray, region: np.ndarray, image: np.ndarray) -> np.ndarray:
        """``region`` with the non-background regions that touch it (8-neighbours)."""
        near = np.unique(labels[ndimage.binary_dilation(region, structure=np.ones((3, 3), bool))])
        bg = set(np.unique(labels[colour_ids(image) == COLOUR_INDEX[BACKGROUND]]))
        return region | np.isin(labels, [i for i in near if i not in bg])

    def _upsample_low_res(self, logits: torch.Tensor, h: int, w: int) -> np.ndarray:
        m = (logits > 0).cpu().numpy().astype(bool)
        m = np.repeat(np.repeat(m, LOW_RES, axis=0), LOW_RES, axis=1)[:h, :w]
        return ndimage.binary_dilation(m, iterations=LOW_RES)

    def _low_res(self, mask: np.ndarray) -> np.ndarray:
        frac = mask.astype(np.float32) if LOW_RES == 1 else _pool(mask, LOW_RES, self.low_res_size(*mask.shape))
        return (frac - 0.5) * 20.0

    def predict(
        self,
        embedding,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        boxes: Optional[np.ndarray] = None,
        mask_logits: Optional[torch.Tensor] = None,
        multimask: bool = False,
        full_size: bool = True,
        min_score: Optional[float] = None,
    ) -> Prediction:
        """``min_score`` is recorded and otherwise ignored: drawing every mask is a valid answer."""
        call = dict(
            point_coords=None if point_coords is None else np.array(point_coords, dtype=np.float32),
            point_labels=None if point_labels is None else np.array(point_labels),
            boxes=None if boxes is None else np.array(boxes, dtype=np.float32),
            mask_logits=None if mask_logits is None else mask_logits.clone(),
            multimask=multimask,
            full_size=full_size,
            min_score=min_score,
        )
        self.predict_calls.append(call)
        h, w = embedding.original_size
        labels = embedding.regions
        n = len(point_coords) if point_coords is not None else len(boxes)
        if mask_logits is not None:
            assert tuple(mask_logits.shape) == (n, 1) + self.low_res_size(h, w), mask_logits.shape
        if point_coords is not None:
            assert np.asarray(point_coords).shape[:2] == np.asarray(point_labels).shape
        rotate = len(self.predict_calls) % 3  # the region's index among the 3 candidates
        masks, scores = [], []
        for i in range(n):
            coords = [] if point_coords is None else np.asarray(point_coords[i], dtype=np.float32)
            plabels = [] if point_labels is None else np.asarray(point_labels[i])
            box = None if boxes is None else boxes[i]
            region = self._region(labels, coords, plabels, box, embedding.image)
            if mask_logits is not None:
                region &= self._upsample_low_res(mask_logits[i, 0], h, w)
                if self.refine_empty:
                    region[:] = False
            found = region.any()
            if multimask:
                part = region.copy()
                if found:
                    cols = np.flatnonzero(region.any(axis=0))
                    part[:, cols[len(cols) // 2] :] = False  # the left half of the region
                if self.whole_level:
                    third = self._whole(labels, region, embedding.image) if found else region.copy()
                    cands = [(part, SCORE_PART if found else 0.0), (third, SCORE_FOUND if found else 0.0)]
                else:
                    grown = ndimage.binary_dilation(region, iterations=3) if found else region.copy()
                    cands = [(part, SCORE_PART if found else 0.0), (grown, SCORE_GROWN if found else 0.0)]
                cands.insert(rotate, (region, SCORE_FOUND if found else 0.0))
                masks.append([c[0] for c in cands])
                scores.append([c[1] for c in cands])
            else:
                score = (SCORE_REFINED if mask_logits is not None else SCORE_FOUND) if found else 0.0
                masks.append([region])
                scores.append([score])
        pred = make_prediction(np.array(masks, dtype=bool), np.array(scores, dtype=np.float32), self)
        if not full_size:
            pred.masks = pred.logits = None
        return pred

    def upscale(self, embedding, low_res_logits: torch.Tensor) -> np.ndarray:
        h, w = embedding.original_size
        return np.stack([np.repeat(np.repeat((lr > 0).numpy(), LOW_RES, 0), LOW_RES, 1)[:h, :w]
                         for lr in low_res_logits]).reshape(-1, h, w)

    def low_res_masks(self, embedding, low_res_logits: torch.Tensor) -> torch.Tensor:
        return low_res_logits > 0

    def input_frame_areas(self, embedding, low_res_logits: torch.Tensor, thresholds) -> torch.Tensor:
        h, w = embedding.input_size
        frame = low_res_logits[:, :h, :w]  # LOW_RES = 1: the low-res frame is the image
        return torch.stack([(frame > t).flatten(1).sum(1) for t in thresholds], dim=1)

    def low_res_to_grid(self, embedding, masks: torch.Tensor) -> torch.Tensor:
        gh, gw = self.valid_grid(embedding)
        return torch.from_numpy(np.stack([_pool(m.numpy(), STRIDE // LOW_RES, (gh, gw)) for m in masks]))


def make_prediction(masks: np.ndarray, scores: np.ndarray, segmenter: "FakeSegmenter") -> Prediction:
    """A :class:`Prediction` for ``(N, M, H, W)`` bool masks, with logits of +-10 and low-res logits."""
    logits = torch.from_numpy(np.where(masks, 10.0, -10.0).astype(np.float32))
    low = np.stack([np.stack([segmenter._low_res(m) for m in row]) for row in masks]).astype(np.float32)
    return Prediction(scores=scores, low_res_logits=torch.from_numpy(low), masks=masks, logits=logits)


class ScriptedSegmenter(FakeSegmenter):
    """A :class:`FakeSegmenter` whose single-mask ``predict`` returns given masks and scores, one per
    prompt (``script(embedding, n) -> (masks (n, H, W), scores (n,))``)."""

    def __init__(self, script):
        super().__init__()
        self.script = script

    def predict(self, embedding, point_coords=None, point_labels=None, boxes=None, mask_logits=None,
                multimask=False, full_size=True, min_score=None):
        self.predict_calls.append(dict(point_coords=np.array(point_coords, dtype=np.float32),
                                       point_labels=np.array(point_labels), multimask=multimask))
        n = len(point_coords)
        masks, scores = self.script(embedding, n)
        return make_prediction(np.asarray(masks, bool)[:, None], np.asarray(scores, np.float32)[:, None], self)


# ----------------------------------------------------------------------------------------------- CLIP


class FakeClip:
    """A CLIP double: an image's embedding is its palette histogram over the pixels that are not the
    neutral fill of a masked crop; a class's probability is the histogram's share of the class's colour,
    plus ``lookalike`` times the share of that colour's look-alike (unknown class names: 0).

    Spies: ``encode_calls`` (the batch size of each ``encode_images`` call) and ``class_names`` (the
    class name of each ``class_probability`` call).
    """

    def __init__(self, classes: Optional[Dict[str, tuple]] = None, lookalike: float = 0.4):
        self.classes = dict(classes or {"cat": RED})
        self.lookalike = lookalike
        self.encode_calls: List[int] = []
        self.class_names: List[str] = []

    def encode_images(self, images: Sequence[np.ndarray], batch_size: int = 64) -> torch.Tensor:
        self.encode_calls.append(len(images))
        rows = []
        neutral = COLOUR_INDEX[NEUTRAL]
        for image in images:
            ids = colour_ids(image)
            ids = ids[ids != neutral]
            rows.append([(ids == c).mean() if ids.size else 0.0 for c in range(len(COLOURS))])
        return torch.tensor(rows, dtype=torch.float32)

    def class_probability(self, image_embeddings: torch.Tensor, class_name: str) -> torch.Tensor:
        self.class_names.append(class_name)
        if class_name not in self.classes:
            return torch.zeros(len(image_embeddings))
        colour = tuple(self.classes[class_name])
        p = image_embeddings[:, COLOUR_INDEX[colour]].clone()
        for twin, original in LOOKALIKE_AFFINITY.items():
            if original == colour:
                p += self.lookalike * image_embeddings[:, COLOUR_INDEX[twin]]
        return p


class TextClip(FakeClip):
    """A CLIP double for text prompts. A text's embedding is the unit sum of the palette colours its words
    name (``words``: word -> colours; "background" names the background colour; a text naming nothing points
    at the neutral fill, which no crop counts); an image's embedding is its unit palette histogram (neutral fill
    left out); ``logit_scale`` is softer than CLIP's 100. ``saliency_maps`` (Grad-CAM's stand-in) is, per pixel
    of a crop, the cosine of its colour with the text, scaled to [0, 1] per crop as Grad-CAM is.

    Spies (besides FakeClip's): ``texts`` (every text encoded), ``saliency_calls`` (crops per call).
    """

    def __init__(self, words: Dict[str, Sequence[tuple]], logit_scale: float = 20.0):
        super().__init__()
        # word -> {colour: weight}; a list of colours weighs each 1 (a dict gives look-alikes a part)
        self.words = {k.lower(): dict(v) if isinstance(v, dict) else {tuple(c): 1.0 for c in v}
                      for k, v in words.items()}
        self.words.setdefault("background", {BACKGROUND: 1.0})
        self.logit_scale = logit_scale
        self.texts: List[str] = []
        self.saliency_calls: List[int] = []

    def encode_images(self, images, batch_size: int = 64) -> torch.Tensor:
        return torch.nn.functional.normalize(super().encode_images(images, batch_size), dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        self.texts += list(texts)
        rows = []
        for text in texts:
            row = np.zeros(len(COLOURS), np.float32)
            for word, colours in self.words.items():
                if word in text.lower():
                    for colour, weight in colours.items():
                        row[COLOUR_INDEX[tuple(colour)]] = max(row[COLOUR_INDEX[tuple(colour)]], weight)
            if not row.any():
                row[COLOUR_INDEX[NEUTRAL]] = 1.0
            rows.append(row / np.linalg.norm(row))
        return torch.tensor(np.stack(rows))

    def saliency_maps(self, crops, text_embeddings: torch.Tensor, targets) -> list:
        self.saliency_calls.append(len(crops))
        out = []
        for crop, t in zip(crops, targets):
            m = text_embeddings[t].numpy()[colour_ids(crop)].astype(np.float32)
            m = np.maximum(m, 0)
            out.append(m / m.max() if m.max() > 0 else m)
        return out


class FakeConcepts:
    """A SAM 3 concept-model double (:class:`samtext.models.sam3_concepts.Sam3Concepts`'s ``embed``, ``find``,
    ``masks``): a text's instances are the connected regions of the colours its words name (``words`` as
    :class:`TextClip`'s: word -> {colour: weight}), each scored ``0.9 * weight`` times the presence; presence is
    0.95 when any region of a named colour is in the image, else 0.05. Every text gets ``queries`` rows; unused
    rows score 0.01 with empty masks. Mask logits are the image-sized masks (the double's low-res frame is the
    image). Spies: ``embed_calls``, ``find_calls`` (the texts of each call)."""

    image_size = 448  # the canvas side of one-shot (samtext.pipelines.reference_sam3)
    window_pixels = 112

    def __init__(self, words: Dict[str, Dict[tuple, float]], queries: int = 8):
        self.words = {k.lower(): {tuple(c): w for c, w in v.items()} for k, v in words.items()}
        self.queries = queries
        self.embed_calls = 0
        self.find_calls: List[List[str]] = []

    def embed(self, image: np.ndarray):
        from samtext.models.sam3_concepts import ConceptImage

        self.embed_calls += 1
        return ConceptImage(image.copy(), tuple(image.shape[:2]))

    def find(self, encoded, texts, exemplars=None):
        from samtext.models.sam3_concepts import Found

        self.find_calls.append(list(texts))
        image = encoded.vision
        labels = regions(image)
        ids = colour_ids(image)
        h, w = image.shape[:2]
        out = []
        for i, text in enumerate(texts):
            weights = {}
            for word, colours in self.words.items():
                if text and word in text.lower():
                    weights.update(colours)
            shown = exemplars[i] if exemplars is not None else None
            if shown is not None and len(shown.boxes):  # the colour under the positive boxes, and its look-alike
                x0, y0, x1, y1 = [int(round(v)) for v in shown.boxes[np.asarray(shown.labels) == 1][0]]
                inside = ids[y0:y1, x0:x1]
                inside = inside[inside != COLOUR_INDEX[BACKGROUND]]
                colour = COLOURS[int(np.bincount(inside).argmax())]
                weights = {colour: 1.0}
                weights.update({twin: 0.4 for twin, original in LOOKALIKE_AFFINITY.items() if original == colour})
            hits = []
            for colour, weight in weights.items():
                for r in np.unique(labels[ids == COLOUR_INDEX[colour]]):
                    hits.append((weight, labels == r))
            presence = 0.95 if hits else 0.05
            hits.sort(key=lambda t: -t[0])
            scores = np.full(self.queries, 0.01, np.float32)
            logits = torch.full((self.queries, h, w), -10.0)
            boxes = np.zeros((self.queries, 4), np.float32)
            for q, (weight, mask) in enumerate(hits[: self.queries]):
                scores[q] = 0.9 * weight * presence
                logits[q] = torch.from_numpy(np.where(mask, 10.0, -10.0).astype(np.float32))
                ys, xs = np.nonzero(mask)
                boxes[q] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            out.append(Found(scores, presence, boxes, logits))
        return out

    def masks(self, encoded, mask_logits):
        return (mask_logits > 0).numpy().reshape((-1,) + tuple(encoded.original_size))

    def probabilities(self, mask_logits, size):
        return torch.nn.functional.interpolate(mask_logits[:, None].float().sigmoid(), size=tuple(size),
                                               mode="bilinear", align_corners=False)[:, 0]
