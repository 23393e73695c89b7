"""Annotate by text with SAM 3's concept prompts (``localizer="sam3"``): each prompt is a noun phrase SAM 3 segments
every instance of, in one pass, with no CLIP and no separate localizer.

One image at a time (:class:`ConceptLabeller`):

1. SAM 3 encodes the image once; every class prompt and every negative prompt is asked of it in one batch.
2. A class's instances are its queries scoring at least ``threshold`` (SAM 3's score: the query's probability
   times the concept's presence in the image, so an absent concept leaves the image empty), best first, at most
   ``max_instances``, a mask repeating a better one of its class (mask IoU above ``mask_iou``, or mostly inside
   it) dropped.
3. Negative prompts: an instance whose mask lies mostly (``NEGATIVE_INSIDE``) inside an instance of a negative
   prompt that scores higher is the negative's, and is dropped ("car" with the negative "truck").
4. Several classes: each pixel goes to the more confident object when the mask is written (the writer's rule).

Coordinates: masks ``(H, W)`` of the original image. Nothing here imports FiftyOne.
"""

from typing import List, Sequence

import numpy as np

from ..settings import TextSettings
from .geometry import repeats
from .result import Instance, MaskResult, PreparesImages
from .text import negative_subject

NEGATIVE_INSIDE = 0.6  # an instance this much inside a better negative instance is the negative's


class ConceptLabeller(PreparesImages):
    """``image -> MaskResult`` with SAM 3 (see the module docstring).

    Arguments:
        concepts: a :class:`samtext.models.sam3_concepts.Sam3Concepts` (or a double with ``embed``, ``find`` and
            ``masks``).
        classes: the class prompts; each instance's label is its prompt.
        negatives: prompts naming what not to label.
        settings: :class:`samtext.settings.TextSettings`.
    """

    clip = None  # run records name a CLIP model when one ran

    def __init__(self, concepts, classes: Sequence[str], negatives: Sequence[str] = (), settings=None):
        self.segmenter = concepts
        self.classes = list(classes)
        self.negatives = list(dict.fromkeys(negative_subject(n) for n in negatives))
        self.settings = (settings or TextSettings(localizer="sam3")).check()

    def __call__(self, image: np.ndarray) -> MaskResult:
        s, concepts = self.settings, self.segmenter
        encoded = concepts.embed(image)
        found = concepts.find(encoded, self.classes + self.negatives)
        shape = tuple(image.shape[:2])
        negative_masks = []  # (score, mask) of every negative instance at the threshold
        for answer in found[len(self.classes):]:
            keep = self._best(answer.scores)
            negative_masks += list(zip(answer.scores[keep], concepts.masks(encoded, answer.mask_logits[keep])))
        instances: List[Instance] = []
        for label, answer in zip(self.classes, found):
            kept: List[np.ndarray] = []
            for q in self._best(answer.scores):
                if len(kept) >= s.max_instances:
                    break
                mask = concepts.masks(encoded, answer.mask_logits[q:q + 1])[0]
                score = float(answer.scores[q])
                if not mask.any() or any(repeats(mask, other, s.mask_iou) for other in kept):
                    continue
                if any(neg_score > score and (mask & neg).sum() >= NEGATIVE_INSIDE * mask.sum()
                       for neg_score, neg in negative_masks):
                    continue
                kept.append(mask)
                instances.append(Instance(mask, score, label=label,
                                          scores={"sam3_score": score, "presence": float(answer.presence)}))
        presence = {label: answer.presence for label, answer in zip(self.classes, found)}
        diagnostics = {"best_score": float(max((a.scores.max() for a in found[:len(self.classes)]), default=0.0))}
        if not instances:
            best = ", ".join("%r %.2f (presence %.2f)" % (label, a.scores.max(), presence[label])
                             for label, a in list(zip(self.classes, found))[:5])
            return MaskResult.empty(shape, "SAM 3 found no instance at %.2f; best: %s" % (s.threshold, best),
                                    confidence=1.0 - diagnostics["best_score"], **diagnostics)
        instances.sort(key=lambda inst: -inst.confidence)
        return MaskResult(shape, instances, np.zeros((0, 2), np.float32), np.zeros((0,), int), scores=diagnostics)

    def _best(self, scores: np.ndarray) -> np.ndarray:
        """Indices of the queries at ``threshold`` or above, best first."""
        order = np.argsort(-scores, kind="stable")
        return order[scores[order] >= self.settings.threshold]
