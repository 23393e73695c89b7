"""Fetch default weights ahead of time, for machines that will run without internet."""

import logging
from typing import Iterable, List, Tuple

from .models import DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED, DEFAULT_SAM
from .models.registry import HF_SAM_FAMILIES, sam_spec
from .models.weights import cache_dir, resolve_clip_weights, resolve_hf_sam, resolve_sam_checkpoint

logger = logging.getLogger(__name__)


def download_weights(
    sam_models: Iterable[str] = (DEFAULT_SAM,),
    clip_models: Iterable[Tuple[str, str]] = ((DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED),),
) -> List[str]:
    """Downloads (or finds) each SAM checkpoint and each ``(name, tag)`` CLIP weights file into
    samtext's cache folder (``$SAMTEXT_CACHE_DIR``, default ``~/.cache/samtext``); returns the paths.
    Copy that folder to an offline machine and set ``SAMTEXT_CACHE_DIR`` there. SAM 2.1 and SAM 3 models come from
    Hugging Face into its cache (``~/.cache/huggingface``; copy that one too), or are found as
    :func:`samtext.models.weights.resolve_hf_sam` says."""
    paths = []
    for name in sam_models:
        spec = sam_spec(name)
        paths.append(resolve_hf_sam(name) if spec.family in HF_SAM_FAMILIES and not spec.for_tests
                     else resolve_sam_checkpoint(name))
    paths += [resolve_clip_weights(name, tag) for name, tag in clip_models]
    for p in paths:
        logger.info("ready: %s", p)
    return paths


__all__ = ["download_weights", "cache_dir"]
