"""Every model samtext can run, in one table: the SAM image segmenters, the tiny CLIP presets and the segmentation
networks it trains. Forms, the CLI's help, the loaders, the weights resolver and the checks all read their lists
and defaults from here.

::

    SAM_MODELS["vit_b"].label        # "SAM ViT-B (375 MB)"
    SAM_MODELS["vit_b"].checkpoint   # the published file, its URL and checksum
    SAM_MODELS["vit_b"].build()      # the architecture with random weights (torch imported then)

The table itself imports neither torch nor open_clip; a spec's ``build`` does, when called.
"""

import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple
from ..errors import SamtextError


@dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint: file name, download URL and a checksum of the file: its MD5, or its git blob id
    (``git_sha1``, the SHA-1 of ``b"blob <size>\\0" + content``) where the publisher keeps it in a git
    repository and states no hash."""

    filename: str
    url: str
    md5: Optional[str] = None
    git_sha1: Optional[str] = None

    @property
    def checksum(self) -> str:
        return "MD5 %s" % self.md5 if self.md5 else "git blob %s" % self.git_sha1

    def verify(self, path: str) -> Optional[str]:
        """None when the file at ``path`` has the published checksum, else what it has instead."""
        from .weights import git_blob_sha1, md5sum

        actual = md5sum(path) if self.md5 else git_blob_sha1(path)
        expected = self.md5 or self.git_sha1
        return None if actual == expected else ("MD5 %s" if self.md5 else "git blob %s") % actual


@dataclass(frozen=True)
class ModelSpec:
    """One model samtext can run.

    Attributes:
        name: what users pass (``sam_model="vit_b"``, ``arch="lraspp"``).
        label: what a form or ``--help`` shows.
        family: "sam" (segment_anything's ``Sam``, MobileSAM included), "sam2" and "sam3" (transformers' SAM 2.1 and
            SAM 3, :mod:`samtext.models.hf_sam`), "clip" or "segnet".
        build: builds the architecture with random weights; imports torch and the model's package when called.
        checkpoint: the published weights (None: the model needs none, or they are found elsewhere).
        input_size: the square input side the model expects, in pixels.
        for_tests: a tiny random preset (tests, offline demos); its output is meaningless.
        detail: family-specific facts (a segnet's torchvision builder and ImageNet backbone weights; a transformers
            SAM's Hugging Face repository).
    """

    name: str
    label: str
    family: str
    build: Callable[[], object]
    checkpoint: Optional[Checkpoint] = None
    input_size: Optional[int] = None
    for_tests: bool = False
    detail: Tuple = ()


# ------------------------------------------------------------------------------------------------ SAM

def _segment_anything(name: str):
    def build():
        from segment_anything import sam_model_registry

        return sam_model_registry[name](checkpoint=None)

    return build


def _mobile_sam(tiny: bool):
    def build():
        from .mobilesam import build_mobile_sam

        return build_mobile_sam(tiny=tiny)

    return build


def _tiny_sam():
    from .tiny import build_tiny_sam

    return build_tiny_sam()


def _sam2(size: str):
    def build():  # SAM 2.1's published layout (meta_checkpoints.SAM2_HIERAS), random weights
        from transformers import Sam2Model

        from .meta_checkpoints import SAM2_LAYOUTS, sam2_config

        layout = next(layout for layout in SAM2_LAYOUTS if layout["name"] == "hiera_" + size)
        return Sam2Model(sam2_config(layout)).eval()

    return build


def _sam3_tracker():
    from transformers import Sam3TrackerConfig, Sam3TrackerModel

    return Sam3TrackerModel(Sam3TrackerConfig()).eval()  # its neck is cut to what its heads read by HfSamSegmenter


def _tiny_hf(kind: str):
    def build():
        from . import tiny

        return tiny.build_tiny_sam2() if kind == "sam2" else tiny.build_tiny_sam3_tracker()

    return build


_META = "https://dl.fbaipublicfiles.com/segment_anything/"
# MobileSAM's weights live in its repository (weights/mobile_sam.pt, 39 MB), pinned to the last commit that changed them
_MOBILE_SAM_URL = ("https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/a509aac54fdd7af59f843135f2f7cee307283c88/"
                   "weights/mobile_sam.pt")

SAM_MODELS: Dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("vit_b", "SAM ViT-B (375 MB)", "sam", _segment_anything("vit_b"),
              Checkpoint("sam_vit_b_01ec64.pth", _META + "sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f8"),
              input_size=1024),
    ModelSpec("vit_l", "SAM ViT-L (1.2 GB)", "sam", _segment_anything("vit_l"),
              Checkpoint("sam_vit_l_0b3195.pth", _META + "sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c"),
              input_size=1024),
    ModelSpec("vit_h", "SAM ViT-H (2.5 GB, best)", "sam", _segment_anything("vit_h"),
              Checkpoint("sam_vit_h_4b8939.pth", _META + "sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6"),
              input_size=1024),
    ModelSpec("mobile_sam", "MobileSAM (39 MB, about 10x faster on a CPU, somewhat rougher masks)", "sam",
              _mobile_sam(tiny=False),
              Checkpoint("mobile_sam.pt", _MOBILE_SAM_URL, git_sha1="7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7"),
              input_size=1024),
    ModelSpec("sam2.1_hiera_tiny", "SAM 2.1 Hiera-T (156 MB, Apache-2.0)", "sam2", _sam2("tiny"), input_size=1024,
              detail=("facebook/sam2.1-hiera-tiny",)),
    ModelSpec("sam2.1_hiera_small", "SAM 2.1 Hiera-S (184 MB, Apache-2.0)", "sam2", _sam2("small"), input_size=1024,
              detail=("facebook/sam2.1-hiera-small",)),
    ModelSpec("sam2.1_hiera_base_plus", "SAM 2.1 Hiera-B+ (324 MB, Apache-2.0)", "sam2", _sam2("base_plus"),
              input_size=1024, detail=("facebook/sam2.1-hiera-base-plus",)),
    ModelSpec("sam2.1_hiera_large", "SAM 2.1 Hiera-L (898 MB, Apache-2.0)", "sam2", _sam2("large"), input_size=1024,
              detail=("facebook/sam2.1-hiera-large",)),
    ModelSpec("sam3", "SAM 3 (3.4 GB, SAM License; gated: accept it on Hugging Face)", "sam3", _sam3_tracker,
              input_size=1008, detail=("facebook/sam3",)),
    ModelSpec("tiny", "Tiny random SAM (tests and offline demos; masks are meaningless)", "sam", _tiny_sam,
              input_size=256, for_tests=True),
    ModelSpec("tiny-mobile", "Tiny random MobileSAM (tests; masks are meaningless)", "sam", _mobile_sam(tiny=True),
              input_size=1024, for_tests=True),
    ModelSpec("tiny-sam2", "Tiny random SAM 2.1 (tests; masks are meaningless)", "sam2", _tiny_hf("sam2"),
              input_size=256, for_tests=True),
    ModelSpec("tiny-sam3", "Tiny random SAM 3 (tests; masks are meaningless)", "sam3", _tiny_hf("sam3"),
              input_size=224, for_tests=True),
)}
DEFAULT_SAM = "vit_b"
HF_SAM_FAMILIES = ("sam2", "sam3")  # served by transformers (samtext.models.hf_sam)

# ----------------------------------------------------------------------------------------------- CLIP
# Real CLIP models are open_clip's (any name open_clip.list_models() knows, with its weight tags); the presets
# below are samtext's random tiny towers.


def _tiny_clip(tower: str):
    def build():
        from .tiny import build_tiny_clip

        return build_tiny_clip(tower=tower)

    return build


CLIP_PRESETS: Dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("tiny", "Tiny random CLIP, ViT tower (tests)", "clip", _tiny_clip("vit"), input_size=64, for_tests=True),
    ModelSpec("tiny-rn", "Tiny random CLIP, ResNet tower: Grad-CAM on a CNN (tests)", "clip", _tiny_clip("rn"),
              input_size=64, for_tests=True),
)}
DEFAULT_CLIP = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "openai"

# ------------------------------------------------------------------------- segmentation networks (training)


def _torchvision_segnet(builder: str):
    def build(**kwargs):
        import torchvision.models.segmentation as tvs

        return getattr(tvs, builder)(**kwargs)

    return build


# detail: (torchvision builder name, backbone weights enum, its ImageNet member)
SEGNETS: Dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("lraspp", "LR-ASPP MobileNetV3-Large (3 M parameters; fast on CPU)", "segnet",
              _torchvision_segnet("lraspp_mobilenet_v3_large"), input_size=320,
              detail=("lraspp_mobilenet_v3_large", "MobileNet_V3_Large_Weights", "IMAGENET1K_V1")),
    ModelSpec("deeplabv3", "DeepLabV3 MobileNetV3-Large (11 M)", "segnet",
              _torchvision_segnet("deeplabv3_mobilenet_v3_large"), input_size=320,
              detail=("deeplabv3_mobilenet_v3_large", "MobileNet_V3_Large_Weights", "IMAGENET1K_V1")),
    ModelSpec("deeplabv3_resnet50", "DeepLabV3 ResNet-50 (42 M; for a GPU)", "segnet",
              _torchvision_segnet("deeplabv3_resnet50"), input_size=320,
              detail=("deeplabv3_resnet50", "ResNet50_Weights", "IMAGENET1K_V1")),
)}
DEFAULT_SEGNET = "lraspp"


def choices(table: Dict[str, ModelSpec], for_tests: bool = True) -> Dict[str, str]:
    """``{name: label}`` of a table, for forms and help texts (``for_tests=False`` leaves the tiny presets out)."""
    return {name: spec.label for name, spec in table.items() if for_tests or not spec.for_tests}


def sam_spec(name: str) -> ModelSpec:
    """The SAM model ``name``.

    Raises:
        ValueError: an unknown name, with the choices.
    """
    if name not in SAM_MODELS:
        raise SamtextError("unknown sam_model %r; choose one of %s" % (name, ", ".join(SAM_MODELS)))
    return SAM_MODELS[name]


def checkpoint_env_var(model_name: str) -> str:
    """The environment variable that may point at a SAM model's weights file."""
    return "SAMTEXT_SAM_%s_CHECKPOINT" % model_name.upper().replace("-", "_")


def checkpoint_name(path: Optional[str]) -> Optional[str]:
    """How a run record names a weights file: its base name (shards on other machines keep it elsewhere), or None."""
    return os.path.basename(path) if path else None
