"""Annotate by text: CLIP finds where each prompt is, SAM draws it.

One image at a time (:class:`TextLabeller`):

1. SAM encodes the image, once, however many prompts, boxes or classes there are.
2. A localizer (:mod:`samtext.pipelines.text_boxes`: selective search + CLIP; or
   :mod:`samtext.pipelines.text_patches`: sliding patches + Grad-CAM) ranks regions by CLIP and turns the best of
   each class (up to ``max_instances`` places, optionally only those at ``region_threshold`` or above) into SAM
   prompts: :class:`Candidate` objects, a class with a box and/or points.
3. SAM decodes every candidate (3 masks each); of its two best masks, the one kept has the best product of SAM's
   predicted IoU and CLIP's probability of the class on the masked crop (the object alone on a neutral fill).
4. The decision: an object is kept when that masked-crop probability reaches ``threshold``, and it does not
   repeat a better mask of its class (mask IoU above ``mask_iou``), nor is a part of one or a whole around one.
   An image where no object reaches it comes out empty, with each class's best probability in the reason.
5. Parts (:mod:`samtext.pipelines.parts`): a later mask in one connected piece that holds two or more kept masks
   of its class replaces them (they were pieces of one object). Then two kept masks of a class that share a seam,
   or that a mask left out touches both, are asked of SAM as one box; when its mask is one connected piece that
   holds both (and any other kept mask of the class whole, or at most half of it), and CLIP finds it at least as
   much the class as the weaker part, it replaces them and the masks it holds (repeated while pairs join). The decision is taken on the object alone because a region's crop also holds its
   background, which a thin, hollow or small object does not outweigh.

Scores are probabilities, not raw cosines: a softmax over every class prompt, every negative prompt and generic
background prompts (:class:`PromptScorer`). A negative prompt ("window" while labelling "car") thus takes
probability from the regions and masks it describes, and gives SAM negative points where it wins.

Coordinates: boxes ``XYXY`` and points ``(x, y)`` in pixels of the original image. Nothing here imports FiftyOne.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..settings import TextSettings
from .geometry import NEUTRAL_FILL, iou, mask_to_box, masked_crop, repeats
from .parts import COVERS, MAX_PIECES, PART_INSIDE, holds_part, one_piece, part_pairs
from .result import Instance, MaskResult, PreparesImages
from ..errors import SamtextError

MAX_CLASSES = 255  # one uint8 mask value each
_EMPTY_CROP = np.full((8, 8, 3), NEUTRAL_FILL, np.uint8)  # stands in for a mask that vanished at full size
NEGATIVE_MAJORITY = 0.5  # a region is a negative prompt's where it holds this much probability and beats every class
PROMPT_SEPARATORS = r"[;\n]"
_NEGATION = re.compile(r"^(not|without)\s+(the\s+|a\s+|an\s+)?", re.IGNORECASE)


def parse_prompts(prompts: Union[str, Sequence[str], None], what: str = "prompts",
                  allow_none: bool = False) -> List[str]:
    """The prompts of a run: a string split at ``;`` and line breaks, or a list of strings; each trimmed, with
    inner runs of spaces collapsed; empty entries dropped; repeats (ignoring case) kept once.

    Raises:
        ValueError: no prompt at all (unless ``allow_none``), a non-string entry, more than 255 prompts.
    """
    if prompts is None or (isinstance(prompts, str) and not prompts.strip() and allow_none):
        if allow_none:
            return []
        raise SamtextError("no %s given: name what to segment, e.g. 'car' or 'car; pedestrian; traffic sign'" % what)
    if not isinstance(prompts, (str, list, tuple)):
        raise SamtextError("%s must be a string ('car; pedestrian') or a list of strings, got %r" % (what, prompts))
    items = re.split(PROMPT_SEPARATORS, prompts) if isinstance(prompts, str) else list(prompts)
    out, seen = [], set()
    for item in items:
        if not isinstance(item, str):
            raise SamtextError("%s must be strings, got %r" % (what, item))
        for part in re.split(PROMPT_SEPARATORS, item):
            text = " ".join(part.split())
            if text and text.lower() not in seen:
                seen.add(text.lower())
                out.append(text)
    if not out and not allow_none:
        raise SamtextError("no %s in %r: only separators or spaces; name what to segment, e.g. 'car; pedestrian'"
                         % (what, prompts))
    if len(out) > MAX_CLASSES:
        raise SamtextError("%d %s given; a segmentation mask holds at most %d classes" % (len(out), what, MAX_CLASSES))
    return out


def _bare(text: str) -> str:
    """``text`` in lower case without a leading article: "An Object" -> "object"."""
    return re.sub(r"^(a|an|the)\s+", "", " ".join(text.lower().split()))


def negative_subject(prompt: str) -> str:
    """What a negative prompt names: "not the window" -> "window", "without a hat" -> "hat" (it is scored as a thing
    to avoid). "no" is left alone: "no entry sign" names a thing."""
    return _NEGATION.sub("", prompt).strip() or prompt


def region_gate(settings: TextSettings, probabilities: np.ndarray) -> np.ndarray:
    """The indices of a class's region probabilities ``(N,)`` at ``settings.region_threshold`` (all without one)."""
    if settings.region_threshold is None:
        return np.arange(len(probabilities))
    return np.flatnonzero(probabilities >= settings.region_threshold)


class PromptScorer:
    """CLIP probabilities of the classes and the negatives for image embeddings.

    The texts are ``template`` applied to each class and negative, then the background prompts; their embeddings
    are computed once. A row's probabilities are the softmax of ``logit_scale * cosine`` over all the texts.

    Arguments:
        clip: a :class:`samtext.models.ClipModel` (or a double with ``encode_texts`` and ``logit_scale``).
        classes: C class prompts.
        negatives: G negative prompts (their subjects, see :func:`negative_subject`).
    """

    def __init__(self, clip, classes: Sequence[str], negatives: Sequence[str] = (), template: Optional[str] = None,
                 background: Optional[Sequence[str]] = None):
        from ..models.clip import BACKGROUND_PROMPTS, PROMPT_TEMPLATE

        template = template or PROMPT_TEMPLATE
        self.classes, self.negatives = list(classes), list(negatives)
        background = BACKGROUND_PROMPTS if background is None else background
        # a prompt that is itself a background prompt ("texture", "an object") would split its probability with
        # its near-twin and never win: that background prompt is left out
        named = {_bare(t) for t in self.classes + self.negatives}
        background = [b for b in background if _bare(b) not in named]
        texts = [template.format(t) for t in self.classes + self.negatives] + list(background)
        self.text_embeddings = clip.encode_texts(texts)  # (T, D)
        self.scale = float(clip.logit_scale)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def probabilities(self, image_embeddings: torch.Tensor) -> np.ndarray:
        """``(N, D)`` unit image embeddings -> ``(N, C + G)`` probabilities of each class, then each negative."""
        logits = self.scale * image_embeddings.float() @ self.text_embeddings.T.to(image_embeddings.device)
        probs = logits.softmax(dim=-1)[:, : self.num_classes + len(self.negatives)]
        return probs.cpu().numpy().astype(np.float64)


@dataclass
class Candidate:
    """A SAM prompt for one object of class ``class_index``.

    Attributes:
        box: ``(4,)`` XYXY pixels, or None.
        points: ``(K, 2)`` ``(x, y)`` pixels; ``labels`` ``(K,)`` 1 foreground, 0 background.
        score: the localizer's probability of the class there.
    """

    class_index: int
    box: Optional[np.ndarray]
    points: np.ndarray
    labels: np.ndarray
    score: float


@dataclass
class Localized:
    """What a localizer found in one image: the candidates, and each class's best probability anywhere."""

    candidates: List[Candidate]
    best: np.ndarray  # (C,)
    diagnostics: Dict[str, float] = field(default_factory=dict)


def negative_hits(probs: np.ndarray, c: int, g: int) -> np.ndarray:
    """The rows of ``probs`` ``(N, C + G)`` where negative ``g`` wins (see NEGATIVE_MAJORITY)."""
    column = probs[:, c + g]
    best_class = probs[:, :c].max(axis=1) if c else np.zeros(len(probs))
    return np.flatnonzero((column >= NEGATIVE_MAJORITY) & (column > best_class))


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by NMS, best first (``boxes`` ``(N, 4)`` XYXY, ``scores`` ``(N,)``)."""
    from torchvision.ops import nms

    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    keep = nms(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32),
               float(iou_threshold))
    return keep.numpy()


def _stack_prompts(candidates: Sequence[Candidate]) -> Tuple[np.ndarray, np.ndarray]:
    """``(N, K, 2)`` points and ``(N, K)`` labels, shorter prompts padded with SAM's "no point" label -1."""
    k = max(1, max(len(c.points) for c in candidates))
    coords = np.zeros((len(candidates), k, 2), np.float32)
    labels = -np.ones((len(candidates), k), np.int64)
    for i, c in enumerate(candidates):
        coords[i, : len(c.points)] = c.points
        labels[i, : len(c.points)] = c.labels
    return coords, labels


class TextLabeller(PreparesImages):
    """``image -> MaskResult`` for text prompts (see the module docstring).

    Arguments:
        segmenter: a :class:`samtext.models.SamSegmenter` (or a double).
        clip: a :class:`samtext.models.ClipModel` (or a double).
        classes: the class prompts; each instance's label is its prompt.
        localizer: a :class:`samtext.pipelines.text_boxes.BoxLocalizer` or
            :class:`samtext.pipelines.text_patches.PatchLocalizer`.
        negatives: prompts naming what not to label.
        settings: :class:`samtext.settings.TextSettings` (the localizer holds the same object).
    """

    def __init__(self, segmenter, clip, classes: Sequence[str], localizer, negatives: Sequence[str] = (),
                 settings: Optional[TextSettings] = None):
        self.segmenter, self.clip, self.localizer = segmenter, clip, localizer
        self.settings = (settings or TextSettings()).check()
        subjects = list(dict.fromkeys(negative_subject(n) for n in negatives))  # "window; not the window": once
        self.scorer = PromptScorer(clip, classes, subjects)
        self.classes = list(classes)

    def __call__(self, image: np.ndarray) -> MaskResult:
        return self.from_embedding(image, self.segmenter.embed(image))  # one encoder pass per image

    def from_embedding(self, image: np.ndarray, embedding) -> MaskResult:
        """The labels of ``image`` (``(H, W, 3)`` uint8 RGB) given its SAM ``embedding``."""
        found = self.localizer(image, self.scorer)
        scores = dict(found.diagnostics, best_region_score=float(found.best.max()) if len(found.best) else 0.0)
        if not found.candidates:
            threshold = self.settings.region_threshold
            where = ("no region reached %.2f" % threshold if threshold is not None and found.best.max(initial=0) < threshold
                     else "CLIP pointed at no place (no box to score, or Grad-CAM saw nothing in the best patches)")
            return MaskResult.empty(image.shape[:2], "%s; best region: %s" % (where, self._by_class(found.best)),
                                    confidence=1.0 - scores["best_region_score"], **scores)
        instances, best = self._draw(image, embedding, found.candidates)
        scores["best_score"] = float(best.max())
        points = np.concatenate([c.points for c in found.candidates]).astype(np.float32)
        labels = np.concatenate([c.labels for c in found.candidates]).astype(int)
        if not instances:
            return MaskResult.empty(image.shape[:2], "no object's masked crop reached %.2f (best: %s; %d places "
                                    "looked at)" % (self.settings.threshold, self._by_class(best),
                                                    len(found.candidates)),
                                    points, labels, confidence=1.0 - scores["best_score"], **scores)
        return MaskResult(tuple(image.shape[:2]), instances, points, labels, scores=scores)

    def _by_class(self, best: np.ndarray, most: int = 5) -> str:
        """The ``most`` best classes with their probabilities, for an empty label's reason."""
        order = np.argsort(-np.asarray(best), kind="stable")[:most]
        text = ", ".join("%r %.2f" % (self.classes[i], best[i]) for i in order)
        return text + (", ..." if len(self.classes) > most else "")

    def _draw(self, image: np.ndarray, embedding, candidates: List[Candidate]) -> Tuple[List[Instance], np.ndarray]:
        """The objects kept, best first, and each class's best masked-crop probability ``(C,)``."""
        s = self.settings
        best_by_class = np.zeros(len(self.classes))
        coords, labels = _stack_prompts(candidates)
        boxes = None
        if all(c.box is not None for c in candidates):
            boxes = np.stack([c.box for c in candidates]).astype(np.float32)
        pred = self.segmenter.predict(embedding, coords, labels, boxes=boxes, multimask=True, full_size=False)
        low = pred.low_res_logits  # (N, 3, h_m, w_m)
        drawn = self.segmenter.low_res_masks(embedding, low.flatten(0, 1)).flatten(1).any(1).view(low.shape[:2])
        # the masks worth asking CLIP about: each prompt's two best by SAM's score, if drawn
        options = [(i, int(j)) for i in range(len(candidates)) for j in np.argsort(-pred.scores[i])[:2]
                   if bool(drawn[i, j])]
        if not options:
            return [], best_by_class
        # one full-size mask at a time: a large image never holds every option's mask at once
        crops, empty = [], []
        for i, j in options:
            mask = self._full_mask(embedding, low[i, j])
            empty.append(not mask.any())  # drawn at low resolution, gone at full size (a sliver)
            crops.append(_EMPTY_CROP if empty[-1] else masked_crop(image, mask, s.context))
        probs = self.scorer.probabilities(self.clip.encode_images(crops))
        chosen: Dict[int, Tuple[float, int, float]] = {}  # candidate -> (value, option, CLIP probability)
        for k, ((i, j), row) in enumerate(zip(options, probs)):
            clip_p = 0.0 if empty[k] else float(row[candidates[i].class_index])
            value = max(float(pred.scores[i, j]), 0.0) * clip_p
            if i not in chosen or value > chosen[i][0]:
                chosen[i] = (value, k, clip_p)
        instances: List[Instance] = []
        bridges: Dict[str, List[np.ndarray]] = {}  # masks of a class that passed but repeated a kept one
        for i in sorted(chosen, key=lambda i: -chosen[i][0]):
            value, k, clip_p = chosen[i]
            cand, (_, j) = candidates[i], options[k]
            best_by_class[cand.class_index] = max(best_by_class[cand.class_index], clip_p)
            if empty[k] or clip_p < s.threshold:
                continue
            mask = self._full_mask(embedding, low[i, j])  # again: only kept objects' masks are held at full size
            label = self.classes[cand.class_index]
            same = [n for n, inst in enumerate(instances) if inst.label == label]
            repeated = [n for n in same if repeats(mask, instances[n].mask, s.mask_iou)]
            pieces = [n for n in repeated if holds_part(mask, instances[n].mask)]
            connected = bool(repeated) and one_piece(mask)
            if repeated and not (len(pieces) >= 2 and len(pieces) == len(repeated) and connected):
                if connected:  # a mask over two kept ones with background between says nothing of parts
                    bridges.setdefault(label, []).append(mask)
                continue  # a repeat, a part, or a whole around one object: the better mask stays
            if not repeated and len(same) >= s.max_instances:
                continue
            sam_score = float(np.clip(pred.scores[i, j], 0, 1))
            whole = Instance(mask, float(np.sqrt(sam_score * clip_p)), label=label,
                             scores={"sam_score": sam_score, "clip_score": clip_p, "region_score": float(cand.score)})
            if repeated:  # one connected mask holding several kept ones: they were pieces of it (step 5)
                instances[pieces[0]] = whole
                instances = [inst for n, inst in enumerate(instances) if n not in pieces[1:]]
            else:
                instances.append(whole)
        return self._join_parts(image, embedding, instances, bridges), best_by_class

    def _join_parts(self, image: np.ndarray, embedding, instances: List[Instance],
                    bridges: Dict[str, List[np.ndarray]]) -> List[Instance]:
        """``instances`` (best first) with the parts of one object joined (step 5 of the module docstring);
        ``bridges``: by class, masks that passed but were not kept."""
        refused = []  # pairs of masks SAM or CLIP did not join (the objects themselves: ids could be reused)
        joined = True
        while joined:
            joined = False
            for label in dict.fromkeys(inst.label for inst in instances):
                same = [k for k, inst in enumerate(instances) if inst.label == label]
                for a, b in part_pairs([instances[k].mask for k in same], bridges.get(label, ())):
                    pair = (instances[same[a]].mask, instances[same[b]].mask)
                    if any(pair[0] is x and pair[1] is y for x, y in refused):
                        continue
                    found = self._one_object(image, embedding, [instances[k] for k in same], a, b)
                    if found is None:
                        refused.append(pair)
                        continue
                    whole, pieces = found
                    first = same[min(pieces)]
                    instances[first] = whole
                    instances = [inst for k, inst in enumerate(instances)
                                 if k == first or k not in {same[p] for p in pieces}]
                    joined = True
                    break
                if joined:
                    break
        return instances

    def _one_object(self, image: np.ndarray, embedding, same: List[Instance], a: int,
                    b: int) -> Optional[Tuple[Instance, List[int]]]:
        """SAM's mask for the box around pieces ``same[a]`` and ``same[b]`` (kept instances of one class) as one
        instance, with the indices in ``same`` of the pieces it replaces; None when SAM or CLIP says no.

        The box is asked of SAM; its best mask that is one connected piece holding every piece is the answer. A
        mask taking more than half of another kept instance of the class, but not all of it, takes in that
        instance as a piece too and the box grows to it (at most :data:`MAX_PIECES` pieces). The answer is
        refused when CLIP finds it less the class than the weakest piece, or under ``threshold``."""
        s = self.settings
        pieces = [a, b]
        while True:
            box = mask_to_box(np.logical_or.reduce([same[p].mask for p in pieces]))
            pred = self.segmenter.predict(embedding, np.zeros((1, 1, 2), np.float32), -np.ones((1, 1), np.int64),
                                          boxes=box[None], multimask=True, full_size=False)
            grow: List[int] = []
            for j in np.argsort(-pred.scores[0]):
                mask = self._full_mask(embedding, pred.low_res_logits[0, j])
                if not (all(holds_part(mask, same[p].mask, COVERS) for p in pieces) and one_piece(mask)):
                    continue
                shares = {k: (mask & o.mask).sum() / max(o.mask.sum(), 1)
                          for k, o in enumerate(same) if k not in pieces}
                grow = [k for k, x in shares.items() if 0.5 < x < PART_INSIDE]
                held = [k for k, x in shares.items() if x >= PART_INSIDE]
                break
            else:
                return None
            if not grow:
                break
            if len(pieces) + len(grow) > MAX_PIECES:
                return None
            pieces += grow
        c = self.classes.index(same[a].label)
        clip_p = float(self.scorer.probabilities(self.clip.encode_images([masked_crop(image, mask, s.context)]))[0, c])
        if clip_p < max(s.threshold, min(same[p].scores["clip_score"] for p in pieces)):
            return None
        sam_score = float(np.clip(pred.scores[0, j], 0, 1))
        region = max(same[p].scores["region_score"] for p in pieces)
        whole = Instance(mask, float(np.sqrt(sam_score * clip_p)), label=same[a].label,
                         scores={"sam_score": sam_score, "clip_score": clip_p, "region_score": region})
        return whole, sorted(pieces + held)

    def _full_mask(self, embedding, low_res_logits: torch.Tensor) -> np.ndarray:
        """``(h_m, w_m)`` low-res logits -> ``(H, W)`` bool mask at the image's size."""
        return self.segmenter.upscale(embedding, low_res_logits[None])[0]
