"""Model adapters and loaders: SAM (segment_anything) and CLIP (open_clip), real or tiny.

``load_sam("vit_b")`` and ``load_clip("ViT-B-32", "openai")`` return cached adapters, so a process that
runs several actions loads each model once. ``"tiny"`` gives random-init models of the same
architectures, with no download.
"""

import functools
import logging
from typing import Optional

from .clip import ClipModel
from .precision import resolve_device, resolve_precision
from .sam import ImageEmbedding, Prediction, SamSegmenter
from .weights import SAM_CHECKPOINTS, WeightsUnavailableError, resolve_sam_checkpoint

logger = logging.getLogger(__name__)

TINY = "tiny"
SAM_MODELS = ("vit_b", "vit_l", "vit_h", TINY)
DEFAULT_SAM = "vit_b"
DEFAULT_CLIP = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "openai"

__all__ = [
    "ClipModel",
    "ImageEmbedding",
    "Prediction",
    "SamSegmenter",
    "WeightsUnavailableError",
    "load_sam",
    "load_clip",
    "SAM_MODELS",
    "clear_model_cache",
]


def _load_state_dict(path: str):
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


def load_sam(
    name: str = DEFAULT_SAM,
    checkpoint: Optional[str] = None,
    device: str = "auto",
    precision: str = "auto",
) -> SamSegmenter:
    """Builds (once per process) the SAM ``name`` ("vit_b", "vit_l", "vit_h" or "tiny").

    Weights: see :func:`samtext.models.weights.resolve_sam_checkpoint`; "tiny" needs none.
    """
    device = resolve_device(device)
    return _load_sam(name, checkpoint, device, resolve_precision(precision, device))


@functools.lru_cache(maxsize=4)
def _load_sam(name, checkpoint, device, precision) -> SamSegmenter:
    if name == TINY:
        from .tiny import build_tiny_sam

        sam = build_tiny_sam()
        if checkpoint:
            sam.load_state_dict(_load_state_dict(checkpoint))
    else:
        from segment_anything import sam_model_registry

        if name not in SAM_CHECKPOINTS:
            raise ValueError("unknown SAM model %r; choose one of %s" % (name, SAM_MODELS))
        path = resolve_sam_checkpoint(name, checkpoint)
        sam = sam_model_registry[name](checkpoint=None)
        sam.load_state_dict(_load_state_dict(path))
    return SamSegmenter(sam, device=device, precision=precision, name=name)


def load_clip(
    name: str = DEFAULT_CLIP,
    pretrained: Optional[str] = DEFAULT_CLIP_PRETRAINED,
    device: str = "auto",
    precision: str = "auto",
) -> ClipModel:
    """Builds (once per process) the open_clip model ``name`` with weights ``pretrained`` (an open_clip
    tag such as "openai", or a path to a weights file). ``name="tiny"`` gives a random-init CLIP.
    ``pretrained=None`` builds the architecture with random weights (for timing)."""
    device = resolve_device(device)
    return _load_clip(name, pretrained, device, resolve_precision(precision, device))


@functools.lru_cache(maxsize=4)
def _load_clip(name, pretrained, device, precision) -> ClipModel:
    if name == TINY:
        from .tiny import build_tiny_clip

        model, tokenizer = build_tiny_clip()
        return ClipModel(model, tokenizer, device=device, precision=precision, name=TINY)

    import open_clip

    from .weights import resolve_clip_weights

    weights = resolve_clip_weights(name, pretrained) if pretrained else None
    model = open_clip.create_model(name, pretrained=weights, device=device, weights_only=True)
    tokenizer = open_clip.get_tokenizer(name)
    return ClipModel(model, tokenizer, device=device, precision=precision, name="%s/%s" % (name, pretrained))


def clear_model_cache() -> None:
    """Forgets the loaded models (the next load builds them again)."""
    _load_sam.cache_clear()
    _load_clip.cache_clear()
