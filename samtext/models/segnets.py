"""Semantic segmentation networks to train on samtext's labels: torchvision's LR-ASPP and DeepLabV3.

::

    model, start = build_segnet("lraspp", num_classes=2)      # 0 = background, 1 = the one class

Every model maps a normalised ``(B, 3, S, S)`` float batch to ``{"out": (B, num_classes, S, S)}`` logits at the
input's own size (torchvision's segmentation models upsample their head's output bilinearly).

Backbone weights (``backbone_weights``):

- ``"auto"``: ImageNet weights for the backbone when torchvision's file is already in the torch hub cache
  (``torch.hub.get_dir()/checkpoints/<file>``), else random initialisation with a warning. Never downloads.
- ``"imagenet"``: ImageNet weights, downloaded by torchvision (with a progress bar) when not cached.
- ``None`` or ``"none"``: random initialisation.

The string returned beside the model says what the backbone started from; training records it.
"""

import logging
import os
from typing import Optional
from urllib.parse import urlparse

from .registry import DEFAULT_SEGNET, SEGNETS
from ..errors import SamtextError

logger = logging.getLogger(__name__)

BACKBONE_CHOICES = ("auto", "imagenet", "none")
SCRATCH = "scratch (random initialisation)"


class BackboneWeightsError(RuntimeError):
    """The ImageNet backbone weights were asked for and could not be had."""


def check_arch(arch: str) -> str:
    if arch not in SEGNETS:
        raise SamtextError("unknown arch %r; choose one of %s" % (arch, ", ".join(SEGNETS)))
    return arch


def check_backbone_weights(value) -> str:
    """``backbone_weights`` as one of "auto", "imagenet", "none" (None counts as "none")."""
    choice = "none" if value is None else str(value).strip().lower()
    if choice not in BACKBONE_CHOICES:
        raise SamtextError("backbone_weights must be 'auto', 'imagenet' or None, got %r" % (value,))
    return choice


def backbone_weights_enum(arch: str):
    """The torchvision weights enum member of ``arch``'s ImageNet backbone."""
    import torchvision.models as tvm

    _, enum_name, member = SEGNETS[check_arch(arch)].detail
    return getattr(getattr(tvm, enum_name), member)


def cached_weights_path(arch: str) -> str:
    """Where torchvision keeps (or would keep) ``arch``'s ImageNet backbone file: the torch hub cache's
    ``checkpoints`` folder, under the file name of the weights' URL."""
    import torch

    url = backbone_weights_enum(arch).url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def build_segnet(arch: str = DEFAULT_SEGNET, num_classes: int = 2, backbone_weights="auto"):
    """Builds ``arch`` with ``num_classes`` outputs (class 0 is background): ``(model, start)``, where ``start``
    says what the backbone started from ("imagenet: <weights>" or "scratch ...").

    Raises:
        ValueError: an unknown arch or ``backbone_weights`` value, fewer than 2 classes.
        BackboneWeightsError: "imagenet" and the weights could be neither found nor downloaded.
    """
    check_arch(arch)
    choice = check_backbone_weights(backbone_weights)
    if int(num_classes) < 2:
        raise SamtextError("a segmentation model needs at least 2 classes (background + one), got %r" % (num_classes,))
    builder = SEGNETS[arch].build
    weights = None
    if choice != "none":
        enum = backbone_weights_enum(arch)
        path = cached_weights_path(arch)
        if choice == "imagenet" or os.path.isfile(path):
            weights = enum
        else:
            logger.warning(
                "samtext: no ImageNet weights for the %s backbone in %s; training from scratch, which needs more "
                "epochs and labels (backbone_weights='imagenet' downloads them, ~%s)",
                arch, path, "22 MB" if "MobileNet" in type(enum).__name__ else "100 MB")
    if weights is None:
        return builder(weights=None, weights_backbone=None, num_classes=int(num_classes)), SCRATCH
    try:
        model = builder(weights=None, weights_backbone=weights, num_classes=int(num_classes), progress=True)
    except Exception as e:  # URLError, HTTP errors, a truncated file, a hash mismatch
        raise BackboneWeightsError(
            "could not get the ImageNet weights of the %s backbone from %s (%s: %s); put the file at %s, or train "
            "from scratch with backbone_weights=None" % (arch, weights.url, type(e).__name__, e,
                                                        cached_weights_path(arch))) from e
    return model, "imagenet: %s" % _weights_name(weights)


def _weights_name(weights) -> str:
    return "%s.%s" % (type(weights).__name__, weights.name)


def num_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def describe(arch: str, num_classes: int, start: Optional[str] = None) -> str:
    """A one-line description of a model for logs and reports."""
    text = "%s (torchvision %s, %d classes)" % (arch, SEGNETS[check_arch(arch)].detail[0], num_classes)
    return text + (", backbone from %s" % start if start else "")

