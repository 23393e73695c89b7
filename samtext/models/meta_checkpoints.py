"""Meta's own SAM 2 / SAM 2.1 checkpoints as transformers models.

FiftyOne's model zoo (``segment-anything-2.1-hiera-*-image-torch``) and Meta's downloads keep SAM 2.1 as Meta's
``.pt`` files (``{"model": state_dict}`` of ``sam2.modeling.sam2_base.SAM2Base``), which transformers cannot load.
This module renames their tensors to transformers' ``Sam2Model`` layout and builds the model:

- the Hiera trunk, the FPN neck, the prompt encoder and the mask decoder map one to one (renamed submodules;
  Meta's MLPs number their linear layers, transformers names the first and the last; the four point
  embeddings become one table);
- the video parts (memory attention, memory encoder, object pointers, temporal encodings) are left out: an image
  model has no use for them.

The checkpoint says which Hiera it holds by its width and depth; the rest of its layout (heads, windows,
global-attention blocks) is Meta's published configs (``configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml``), the same
as transformers' Hugging Face repositories. Every tensor of the transformers model must come from the checkpoint
and keep its shape; anything else is refused with the name of what does not fit.

Checked against Meta's own code: ``tests/data/meta_sam2.1_tiny.pt`` is a toy-sized checkpoint written by Meta's
``sam2`` package, with its image predictor's answers (``scripts/make_meta_sam2_fixture.py``).
"""

import re
from typing import Dict, Iterable, Optional

import torch

from ..errors import SamtextError

# Hiera layouts by (width of the first stage, number of blocks): Meta's configs/sam2.1/*.yaml
SAM2_LAYOUTS = (
    dict(name="hiera_tiny", embed_dim=96, blocks=[1, 2, 7, 2], heads=[1, 2, 4, 8], global_blocks=[5, 7, 9],
         windows=[8, 4, 14, 7], background=[7, 7]),
    dict(name="hiera_small", embed_dim=96, blocks=[1, 2, 11, 2], heads=[1, 2, 4, 8], global_blocks=[7, 10, 13],
         windows=[8, 4, 14, 7], background=[7, 7]),
    dict(name="hiera_base_plus", embed_dim=112, blocks=[2, 3, 16, 3], heads=[2, 4, 8, 16], global_blocks=[12, 16, 20],
         windows=[8, 4, 14, 7], background=[14, 14]),
    dict(name="hiera_large", embed_dim=144, blocks=[2, 6, 36, 4], heads=[2, 4, 8, 16], global_blocks=[23, 33, 43],
         windows=[8, 4, 16, 8], background=[7, 7]),
)
# the same, told apart by what a checkpoint shows: (width of the first stage, number of blocks)
SAM2_HIERAS = {(layout["embed_dim"], sum(layout["blocks"])): layout for layout in SAM2_LAYOUTS}

# Meta's submodule names -> transformers', applied in order to each tensor's name
_RENAMES = [
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$",
     "prompt_encoder.shared_embedding.positional_embedding"),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"\.norm(\d)\.", r".layer_norm\1."),
    (r"\.out_proj\.", ".o_proj."),
]
_MLP_LAYER = re.compile(r"^(.*)\.layers\.(\d+)\.(weight|bias)$")  # a linear layer of one of Meta's MLPs
_POINT_EMBEDDING = re.compile(r"^prompt_encoder\.point_embeddings\.(\d+)\.weight$")
# what an image model leaves out: SAM 2's video memory
_VIDEO_ONLY = re.compile(r"^(memory_attention|memory_encoder|maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|obj_ptr_proj|"
                         r"obj_ptr_tpos_proj|no_obj_embed_spatial|mask_downsample)(\.|$)")


def read_meta_state(path: str, marker: str, family: str) -> Dict[str, torch.Tensor]:
    """The state dict of one of Meta's ``.pt`` checkpoints (``{"model": state_dict}``, or a bare state dict) of
    ``family`` ("SAM 2", "SAM 3"), told by a tensor whose name starts with ``marker``."""
    if str(path).endswith(".safetensors"):
        raise SamtextError("%s is a safetensors file: pass the folder that holds it with its config.json (transformers'"
                           " format), or Meta's own .pt checkpoint" % path)
    try:
        try:  # mapped, not read: SAM 3's file is 3.4 GB and its two models each take part of it
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a file in torch's legacy (not zip) format cannot be mapped
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated download, another format
        raise SamtextError("%s is not a readable PyTorch checkpoint (%s)" % (path, str(e).splitlines()[0])) from e
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not any(str(k).startswith(marker) for k in state):
        raise SamtextError("%s is not one of Meta's %s checkpoints (no %s* tensors)" % (path, family, marker))
    return state


def read_meta_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """The state dict of a Meta SAM 2 ``.pt`` file."""
    return read_meta_state(path, "image_encoder.trunk.", "SAM 2")


def _rename(name: str) -> str:
    for pattern, replacement in _RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def _mlp_names(names: Iterable[str]) -> Dict[str, str]:
    """Meta's ``<mlp>.layers.<i>`` -> transformers' ``<mlp>.proj_in`` (first), ``<mlp>.layers.<i-1>`` (middle),
    ``<mlp>.proj_out`` (last), for every MLP among ``names``."""
    depth: Dict[str, int] = {}
    for name in names:
        m = _MLP_LAYER.match(name)
        if m:
            depth[m.group(1)] = max(depth.get(m.group(1), 0), int(m.group(2)) + 1)
    out = {}
    for name in names:
        m = _MLP_LAYER.match(name)
        if not m:
            continue
        prefix, i, kind = m.group(1), int(m.group(2)), m.group(3)
        layer = "proj_in" if i == 0 else "proj_out" if i == depth[prefix] - 1 else "layers.%d" % (i - 1)
        out[name] = "%s.%s.%s" % (prefix, layer, kind)
    return out


def sam2_state_dict(meta_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Meta's ``SAM2Base`` tensors -> transformers ``Sam2Model`` tensors (names changed, values shared; the video
    memory's tensors left out)."""
    renamed = {}
    points = {}
    for name, value in meta_state.items():
        if _VIDEO_ONLY.match(name):
            continue
        new = _rename(name)
        m = _POINT_EMBEDDING.match(new)
        if m:
            points[int(m.group(1))] = value
            continue
        renamed[new] = value
    for old, new in _mlp_names(list(renamed)).items():
        renamed[new] = renamed.pop(old)
    if points:
        renamed["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in sorted(points)], dim=0)
    gaussian = renamed.get("prompt_encoder.shared_embedding.positional_embedding")
    if gaussian is not None:  # transformers keeps the prompt encoder's positional encoding twice
        renamed["shared_image_embedding.positional_embedding"] = gaussian
    return renamed


def sam2_layout(meta_state: Dict[str, torch.Tensor], path: str = "the checkpoint") -> dict:
    """The Hiera layout of a Meta SAM 2 checkpoint, from its width and depth (:data:`SAM2_HIERAS`)."""
    patch = meta_state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        raise SamtextError("%s has no image_encoder.trunk.patch_embed.proj.weight: not a whole SAM 2 checkpoint" % path)
    width = int(patch.shape[0])
    blocks = len({k.split(".")[3] for k in meta_state if k.startswith("image_encoder.trunk.blocks.")})
    layout = SAM2_HIERAS.get((width, blocks))
    if layout is None:
        raise SamtextError("%s holds a Hiera of width %d and %d blocks, which is none of SAM 2.1's released models "
                           "(tiny, small, base_plus, large)" % (path, width, blocks))
    return layout


def sam2_config(layout: dict, image_size: int = 1024, width: int = 256, decoder_width: Optional[int] = None):
    """transformers' ``Sam2Config`` for a Hiera ``layout`` (keys of :data:`SAM2_HIERAS`' values: ``embed_dim`` is
    the first stage's width) at ``image_size`` pixels, with an FPN neck, prompt encoder and mask decoder ``width``
    channels wide (Meta's: 256)."""
    from transformers import (Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2PromptEncoderConfig,
                              Sam2VisionConfig)

    first = int(layout["embed_dim"])
    dims = [first * 2 ** i for i in range(len(layout["blocks"]))]
    backbone = Sam2HieraDetConfig(
        hidden_size=first, num_attention_heads=layout["heads"][0], image_size=[image_size, image_size],
        blocks_per_stage=list(layout["blocks"]), embed_dim_per_stage=dims,
        num_attention_heads_per_stage=list(layout["heads"]), window_size_per_stage=list(layout["windows"]),
        global_attention_blocks=list(layout["global_blocks"]),
        window_positional_embedding_background_size=list(layout["background"]))
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=list(reversed(dims)),
                              backbone_feature_sizes=[[image_size // s] * 2 for s in (4, 8, 16)],
                              fpn_hidden_size=width)
    return Sam2Config(vision_config=vision,
                      prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=width, image_size=image_size),
                      mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=decoder_width or width))


def load_meta_sam2(path: str, config=None):
    """transformers' ``Sam2Model`` (eval mode) holding the weights of Meta's SAM 2 / 2.1 checkpoint at ``path``.

    Arguments:
        config: a ``Sam2Config`` for a checkpoint of another layout than the released ones (tests' toy model);
            default: the released model the checkpoint's width and depth name (:func:`sam2_layout`).

    Raises:
        SamtextError: the file is not a Meta SAM 2 checkpoint, or its tensors do not fill the model (names what
            is missing, left over, or of another shape).
    """
    from transformers import Sam2Model

    meta_state = read_meta_checkpoint(path)
    config = config or sam2_config(sam2_layout(meta_state, path))
    state = sam2_state_dict(meta_state)
    return fill_model(lambda: Sam2Model(config), state, path, "SAM 2")


def fill_model(build, state: Dict[str, torch.Tensor], path: str, what: str):
    """The model ``build()`` makes (eval mode), holding ``state``, which must name every tensor of it, nothing else,
    at its shape. The names and shapes are checked on the meta device first (a refusal costs no memory); the model
    is then built without its random initialisation (every tensor comes from ``state``).

    Raises:
        SamtextError: names what is missing, left over, or of another shape (a few of each).
    """
    from transformers.initialization import no_init_weights

    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    wrong = sorted(k for k in set(want) & set(state) if want[k] != tuple(state[k].shape))
    if missing or extra or wrong:
        def few(names):
            return ", ".join(names[:4]) + (" (+%d more)" % (len(names) - 4) if len(names) > 4 else "")

        problems = [what_ % few(names) for what_, names in (("missing: %s", missing), ("not in the model: %s", extra),
                                                             ("of another shape: %s", wrong)) if names]
        raise SamtextError("%s does not fit transformers' %s model: %s" % (path, what, "; ".join(problems)))
    with no_init_weights():
        model = build()
    model.load_state_dict(state, strict=True)
    return model.eval()
