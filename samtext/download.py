"""Fetch default weights ahead of time, for machines that will run without internet."""

import logging
from typing import Iterable, List, Tuple

from .models import DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED, DEFAULT_SAM
from .models.weights import cache_dir, resolve_clip_weights, resolve_sam_checkpoint

logger = logging.getLogger(__name__)


def download_weights(
    sam_models: Iterable[str] = (DEFAULT_SAM,),
    clip_models: Iterable[Tuple[str, str]] = ((DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED),),
) -> List[str]:
    """Downloads (or finds) each SAM checkpoint and each ``(name, tag)`` CLIP weights file into
    samtext's cache folder (``$SAMTEXT_CACHE_DIR``, default ``~/.cache/samtext``); returns the paths.
    Copy that folder to an offline machine and set ``SAMTEXT_CACHE_DIR`` there."""
    paths = [resolve_sam_checkpoint(name) for name in sam_models]
    paths += [resolve_clip_weights(name, tag) for name, tag in clip_models]
    for p in paths:
        logger.info("ready: %s", p)
    return paths


__all__ = ["download_weights", "cache_dir"]
