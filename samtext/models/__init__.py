"""Model adapters and loaders: SAM (segment_anything) and CLIP (open_clip), real or tiny.

``load_sam("vit_b")`` and ``load_clip("ViT-B-32", "openai")`` return cached adapters, so a process that
runs several actions loads each model once. ``"tiny"`` gives random-init models of the same
architectures, with no download; ``"mobile_sam"`` is MobileSAM (a 5 M-parameter image encoder for CPUs,
:mod:`samtext.models.mobilesam`) and ``"tiny-mobile"`` its random-init test preset.
"""

import functools
import logging
import os
from typing import Optional

from .clip import ClipModel
from .fast_encoder import encoder_workload, fast_encoder_default
from .precision import resolve_device, resolve_precision
from .registry import (CLIP_PRESETS, DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED, DEFAULT_SAM, HF_SAM_FAMILIES, SAM_MODELS,
                       checkpoint_name, sam_spec)
from .sam import ImageEmbedding, Prediction, SamSegmenter
from .weights import WeightsUnavailableError, resolve_sam_checkpoint
from ..errors import SamtextError

logger = logging.getLogger(__name__)

__all__ = [
    "ClipModel",
    "ImageEmbedding",
    "Prediction",
    "SamSegmenter",
    "WeightsUnavailableError",
    "load_sam",
    "load_clip",
    "SAM_MODELS",
    "check_model_options",
    "checkpoint_name",
    "sam_record",
    "clear_model_cache",
    "encoder_workload",
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
    fast_encoder: Optional[bool] = None,
) -> SamSegmenter:
    """Builds (once per process) the SAM ``name``, one of :data:`samtext.models.registry.SAM_MODELS`.

    Weights: see :func:`samtext.models.weights.resolve_sam_checkpoint` (SAM 2.1 and SAM 3:
    :func:`samtext.models.weights.resolve_hf_sam`); the tiny presets need none. ``fast_encoder``: SAM 1's encoder
    fast path (:mod:`samtext.models.fast_encoder`); None: on unless ``SAMTEXT_FAST_ENCODER=0``.
    """
    device = resolve_device(device)
    fast = fast_encoder_default() if fast_encoder is None else bool(fast_encoder)
    return _load_sam(name, checkpoint, device, resolve_precision(precision, device), fast)


@functools.lru_cache(maxsize=6)
def _load_sam(name, checkpoint, device, precision, fast_encoder) -> SamSegmenter:
    spec = sam_spec(name)
    if spec.family in HF_SAM_FAMILIES:
        from .hf_sam import load_hf_sam

        return load_hf_sam(spec, checkpoint, device, precision)
    # a tiny preset has no published weights: random unless a file is given
    path = resolve_sam_checkpoint(name, checkpoint) if spec.checkpoint is not None else checkpoint
    sam = spec.build()
    if path:
        sam.load_state_dict(_load_state_dict(path))
    return SamSegmenter(sam, device=device, precision=precision, name=name, fast_encoder=fast_encoder)


def load_clip(
    name: str = DEFAULT_CLIP,
    pretrained: Optional[str] = DEFAULT_CLIP_PRETRAINED,
    device: str = "auto",
    precision: str = "auto",
    checkpoint: Optional[str] = None,
) -> ClipModel:
    """Builds (once per process) the open_clip model ``name`` as its weights expect.

    Arguments:
        name: an open_clip model name ("ViT-B-32", "RN50", ...), or "tiny" / "tiny-rn" (random-init ViT / ResNet
            towers, for tests).
        pretrained: an open_clip weights tag such as "openai" (found in samtext's cache folder or downloaded
            by open_clip), a path to a weights file (its tag is recognised when its location or SHA-256
            tells it), or None for random weights (timing).
        checkpoint: a local file of the weights that the tag ``pretrained`` names (no download).

    With a tag, the model and its image transform are those of
    ``open_clip.create_model_and_transforms(name, pretrained=tag)`` with the tag's own QuickGELU setting
    applied (open_clip 3 only warns when a tag such as ``openai`` was trained with QuickGELU and the model
    config says GELU).
    """
    device = resolve_device(device)
    return _load_clip(name, pretrained, checkpoint, device, resolve_precision(precision, device))


@functools.lru_cache(maxsize=4)
def _load_clip(name, pretrained, checkpoint, device, precision) -> ClipModel:
    if name in CLIP_PRESETS:
        model, tokenizer = CLIP_PRESETS[name].build()
        return ClipModel(model, tokenizer, device=device, precision=precision, name=name)

    import open_clip

    from .weights import clip_tag_config, clip_tag_overrides, find_clip_tag, resolve_clip_weights

    if name not in open_clip.list_models():
        raise SamtextError("unknown CLIP model %r; open_clip knows e.g. ViT-B-32, ViT-B-16, RN50" % name)
    path, tag = None, None
    if pretrained or checkpoint:
        path = resolve_clip_weights(name, pretrained or "", checkpoint)
        tag = pretrained if pretrained and path != pretrained else find_clip_tag(name, path)
        if tag is None:
            logger.warning("CLIP weights %s: no open_clip tag of %s is known for this file; the model is built "
                           "from %s's own config (use e.g. clip_pretrained='openai', clip_checkpoint=<file> to "
                           "say which weights they are)", path, name, name)
    overrides = clip_tag_overrides(clip_tag_config(name, tag)) if tag else {}
    # weights load with torch.load(weights_only=True): open_clip's default since 2.30 (`load_weights_only`
    # there, `weights_only` from 3.0), hence the lower bound
    model, _, transform = open_clip.create_model_and_transforms(name, pretrained=path, device=device, **overrides)
    tokenizer = open_clip.get_tokenizer(name)
    label = "%s/%s" % (name, tag or (os.path.basename(path) if path else "random"))
    return ClipModel(model, tokenizer, transform=transform, device=device, precision=precision, name=label)


def sam_record(segmenter) -> dict:
    """What a run record says of the SAM that ran: ``{"sam": name, "sam_encoder": how its encoder runs}``."""
    describe = getattr(segmenter, "describe_encoder", None)
    return dict(sam=getattr(segmenter, "name", None), sam_encoder=describe() if describe else None)


def check_model_options(sam_model: str = DEFAULT_SAM, clip_model: Optional[str] = None, device: str = "auto",
                        precision: str = "auto") -> None:
    """Checks model names, device and precision without loading anything (``clip_model=None``: no CLIP).

    Raises:
        ValueError: what is wrong, with the choices.
    """
    sam_spec(sam_model)
    if clip_model is not None and clip_model not in CLIP_PRESETS:
        import open_clip

        if clip_model not in open_clip.list_models():
            raise SamtextError("unknown clip_model %r; open_clip knows e.g. ViT-B-32, ViT-B-16, RN50 (see "
                             "open_clip.list_models())" % (clip_model,))
    check_hardware(device, precision)


def check_hardware(device: str = "auto", precision: str = "auto") -> None:
    """Checks a device ("auto", "cpu", "cuda", "cuda:1") and a precision ("auto", "fp32", "bf16") without loading
    anything.

    Raises:
        ValueError: what is wrong, with the choices.
    """
    import torch

    if device not in (None, "auto"):
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise SamtextError("device %r is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1')" % (device,)) from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SamtextError("device %r was asked for, but torch sees no CUDA GPU here; use device='auto' or "
                             "'cpu'" % (device,))
    resolve_precision(precision, resolve_device(device))


def clear_model_cache() -> None:
    """Forgets the loaded models (the next load builds them again): SAM, CLIP and SAM 3's concept detector."""
    from .sam3_concepts import _load_sam3_concepts

    _load_sam.cache_clear()
    _load_clip.cache_clear()
    _load_sam3_concepts.cache_clear()
