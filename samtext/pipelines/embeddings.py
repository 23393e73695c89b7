"""Embeddings of masks, for comparing proposals with each other and with exemplars.

Two embedders, both unit vectors:

- "clip": CLIP's image embedding of each mask's masked crop (the object on a neutral fill, with some context
  and padded to a square, :func:`samtext.pipelines.geometry.masked_crop`), in batches. What the object looks like, in a
  space that also holds text.
- "sam": the mean of SAM's image features under each mask (cells mostly inside the mask). Free once the image
  is encoded; what SAM itself uses to tell objects apart.

Nothing here imports FiftyOne.
"""

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..settings import EMBEDDERS, ProposalSettings
from .geometry import masked_crop
from .result import PreparesImages
from ..errors import SamtextError


def pool_features(features: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """Unit mean of ``features`` ``(C, h, w)`` over the cells a mask covers (``cover`` ``(h, w)``, the fraction
    of each cell inside the mask). Cells mostly inside count, so that the boundary's background does not leak
    into the mean; a thin mask that fills no cell to half counts by its coverage."""
    weights = cover * (cover >= 0.5) if bool((cover >= 0.5).any()) else cover
    pooled = (features * weights).sum(dim=(-2, -1)) / weights.sum().clamp(min=1e-6)
    return F.normalize(pooled, dim=0)


def clip_mask_embeddings(clip, image: np.ndarray, masks: Sequence[np.ndarray],
                         context: float = ProposalSettings.crop_context,
                         batch_size: int = 32) -> np.ndarray:
    """``(N, D)`` float32 unit CLIP embeddings of the masked crops of ``masks`` (each ``(H, W)`` bool, not
    empty) in the ``(H, W, 3)`` uint8 ``image``."""
    if not len(masks):
        return np.zeros((0, 0), np.float32)
    crops = [masked_crop(image, m, context) for m in masks]
    return clip.encode_images(crops, batch_size=batch_size).cpu().numpy().astype(np.float32)


def sam_mask_embeddings(segmenter, embedding, masks: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, C)`` float32 unit means of SAM's features (an ``ImageEmbedding`` of the same image) under each of
    ``masks`` (``(H, W)`` bool)."""
    if not len(masks):
        return np.zeros((0, 0), np.float32)
    h, w = segmenter.valid_grid(embedding)
    feats = embedding.features[0, :, :h, :w]
    out = [pool_features(feats, segmenter.mask_to_grid(m, embedding)[:h, :w].to(feats.device)) for m in masks]
    return torch.stack(out).cpu().numpy().astype(np.float32)


class EmbeddedProposals(PreparesImages):
    """``image -> MaskResult`` of mask proposals, each instance carrying its ``embedding``.

    Arguments:
        generator: a :class:`samtext.pipelines.proposals.ProposalGenerator` (its segmenter encodes the image,
            once).
        embedder: "clip" (needs ``clip``) or "sam".
        clip: a :class:`samtext.models.ClipModel` (or a double with ``encode_images``).
        context: the masked crop's margin, a fraction of the mask's box.
    """

    def __init__(self, generator, embedder: str = ProposalSettings.embedder, clip=None,
                 context: float = ProposalSettings.crop_context):
        if embedder not in EMBEDDERS:
            raise SamtextError("unknown embedder %r; choose one of %s" % (embedder, ", ".join(EMBEDDERS)))
        if embedder == "clip" and clip is None:
            raise SamtextError("the clip embedder needs a CLIP model")
        self.generator, self.embedder, self.clip, self.context = generator, embedder, clip, float(context)
        self.segmenter = generator.segmenter

    def __call__(self, image: np.ndarray):
        embedding = self.segmenter.embed(image)
        result = self.generator.from_embedding(embedding)
        masks = [inst.mask for inst in result.instances]
        if self.embedder == "clip":
            vectors = clip_mask_embeddings(self.clip, image, masks, self.context)
        else:
            vectors = sam_mask_embeddings(self.segmenter, embedding, masks)
        for inst, vector in zip(result.instances, vectors):
            inst.embedding = vector
        return result
