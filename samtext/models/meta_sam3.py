"""Meta's own SAM 3 checkpoint (``sam3.pt``) as transformers models.

FiftyOne's model zoo (``segment-anything-3-image-torch``) and Meta's Hugging Face repository keep SAM 3 as the
``sam3`` package's ``sam3.pt``: one state dict holding the concept detector as ``detector.*`` and the video
tracker as ``tracker.*``. samtext runs SAM 3 through transformers, in two models:

- ``Sam3Model`` (concept prompts: text and exemplar boxes) is the detector: its ViT, FPN neck, CLIP text
  encoder, geometry encoder, DETR encoder and decoder, dot-product scoring and segmentation head, renamed;
- ``Sam3TrackerModel`` (points and boxes, SAM 1's interface) is the detector's ViT with the second FPN neck
  (``sam2_convs``) and the tracker's SAM prompt encoder and mask decoder (SAM 2's layout:
  :mod:`samtext.models.meta_checkpoints` renames them); the tracker's video memory is left out.

Besides names, three tensors change form: a fused attention projection (``qkv`` of the ViT, ``in_proj`` of
``nn.MultiheadAttention``) becomes three; the ViT's position embedding loses its class-token row; the CLIP text
projection is transposed. Not read: the ViT's rotary tables (``freqs_cis``; transformers computes them) and the
exemplar encoder's point projections (transformers' SAM 3 takes exemplar boxes only, as Meta's image processor).

The checkpoint holds weights only; the released model's sizes are transformers' defaults (``Sam3Config()``,
``Sam3TrackerConfig()``). Every tensor of the transformers model must come from the checkpoint and keep its
shape; anything else is refused with the name of what does not fit.

Checked against Meta's own code: ``tests/data/meta_sam3_toy.pt`` describes a toy-sized ``sam3.pt`` built by
Meta's ``sam3`` package, with its predictors' answers (``scripts/make_meta_sam3_fixture.py``).
"""

import re
from typing import Dict

import torch

from .meta_checkpoints import fill_model, read_meta_state, sam2_state_dict

# the detector's submodules (``detector.`` removed) -> transformers' Sam3Model, applied in order to each name
_DETECTOR_RENAMES = [
    # the ViT
    (r"^backbone\.vision_backbone\.trunk\.", "vision_encoder.backbone."),
    (r"^vision_encoder\.backbone\.pos_embed$", "vision_encoder.backbone.embeddings.position_embeddings"),
    (r"^vision_encoder\.backbone\.patch_embed\.proj\.", "vision_encoder.backbone.embeddings.patch_embeddings.projection."),
    (r"^vision_encoder\.backbone\.ln_pre\.", "vision_encoder.backbone.layer_norm."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.backbone.layers.\1.layer_norm\2."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.attn\.proj\.", r"vision_encoder.backbone.layers.\1.attention.o_proj."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.attn\.", r"vision_encoder.backbone.layers.\1.attention."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.", r"vision_encoder.backbone.layers.\1."),
    # the two FPN necks: the detector's, and the tracker's (SAM 2's interface)
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.", r"vision_encoder.neck.fpn_layers.\1."),
    (r"^backbone\.vision_backbone\.sam2_convs\.(\d+)\.", r"tracker_neck.fpn_layers.\1."),
    (r"\.fpn_layers\.(\d+)\.(dconv_2x2_0|dconv_2x2|maxpool_2x2)\.", r".fpn_layers.\1.scale_layers.0."),
    (r"\.fpn_layers\.(\d+)\.dconv_2x2_1\.", r".fpn_layers.\1.scale_layers.2."),
    (r"\.fpn_layers\.(\d+)\.conv_1x1\.", r".fpn_layers.\1.proj1."),
    (r"\.fpn_layers\.(\d+)\.conv_3x3\.", r".fpn_layers.\1.proj2."),
    # the CLIP text encoder and its projection to the detector's width
    (r"^backbone\.language_backbone\.resizer\.", "text_projection."),
    (r"^backbone\.language_backbone\.encoder\.text_projection$", "text_encoder.text_projection.weight"),
    (r"^backbone\.language_backbone\.encoder\.token_embedding\.", "text_encoder.text_model.embeddings.token_embedding."),
    (r"^backbone\.language_backbone\.encoder\.positional_embedding$",
     "text_encoder.text_model.embeddings.position_embedding.weight"),
    (r"^backbone\.language_backbone\.encoder\.ln_final\.", "text_encoder.text_model.final_layer_norm."),
    (r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.",
     r"text_encoder.text_model.encoder.layers.\1."),
    (r"^(text_encoder\.text_model\.encoder\.layers\.\d+)\.attn\.", r"\1.self_attn."),
    (r"^(text_encoder\.text_model\.encoder\.layers\.\d+)\.ln_(\d)\.", r"\1.layer_norm\2."),
    (r"^(text_encoder\.text_model\.encoder\.layers\.\d+)\.mlp\.c_fc\.", r"\1.mlp.fc1."),
    (r"^(text_encoder\.text_model\.encoder\.layers\.\d+)\.mlp\.c_proj\.", r"\1.mlp.fc2."),
    # the exemplar (geometry) encoder and the DETR encoder: pre-norm transformer layers
    (r"^geometry_encoder\.img_pre_norm\.", "geometry_encoder.vision_layer_norm."),
    (r"^geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm."),
    (r"^geometry_encoder\.encode_norm\.", "geometry_encoder.output_layer_norm."),
    (r"^geometry_encoder\.encode\.(\d+)\.", r"geometry_encoder.layers.\1."),
    (r"^transformer\.encoder\.layers\.(\d+)\.", r"detr_encoder.layers.\1."),
    (r"^((geometry_encoder|detr_encoder)\.layers\.\d+)\.cross_attn_image\.", r"\1.cross_attn."),
    (r"^((geometry_encoder|detr_encoder)\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\3."),
    # the DETR decoder
    (r"^transformer\.decoder\.", "detr_decoder."),
    (r"^(detr_decoder\.layers\.\d+)\.ca_text\.", r"\1.text_cross_attn."),
    (r"^(detr_decoder\.layers\.\d+)\.cross_attn\.", r"\1.vision_cross_attn."),
    (r"^(detr_decoder\.layers\.\d+)\.catext_norm\.", r"\1.text_cross_attn_layer_norm."),
    (r"^(detr_decoder\.layers\.\d+)\.norm1\.", r"\1.vision_cross_attn_layer_norm."),
    (r"^(detr_decoder\.layers\.\d+)\.norm2\.", r"\1.self_attn_layer_norm."),
    (r"^(detr_decoder\.layers\.\d+)\.norm3\.", r"\1.mlp_layer_norm."),
    (r"^detr_decoder\.norm\.", "detr_decoder.output_layer_norm."),
    (r"^detr_decoder\.presence_token_out_norm\.", "detr_decoder.presence_layer_norm."),
    (r"^detr_decoder\.presence_token_head\.", "detr_decoder.presence_head."),
    (r"^detr_decoder\.bbox_embed\.", "detr_decoder.box_head."),
    (r"^detr_decoder\.instance_bbox_embed\.", "detr_decoder.instance_box_head."),
    (r"^detr_decoder\.boxRPB_embed_(x|y)\.", r"detr_decoder.box_rpb_embed_\1."),
    (r"\.linear(\d)\.", r".mlp.fc\1."),
    # scoring queries against the prompt
    (r"^dot_prod_scoring\.prompt_mlp\.out_norm\.", "dot_product_scoring.text_mlp_out_norm."),
    (r"^dot_prod_scoring\.prompt_mlp\.", "dot_product_scoring.text_mlp."),
    (r"^dot_prod_scoring\.prompt_proj\.", "dot_product_scoring.text_proj."),
    (r"^dot_prod_scoring\.hs_proj\.", "dot_product_scoring.query_proj."),
    # the segmentation head
    (r"^segmentation_head\.mask_predictor\.mask_embed\.", "mask_decoder.mask_embedder."),
    (r"^segmentation_head\.instance_seg_head\.", "mask_decoder.instance_projection."),
    (r"^segmentation_head\.semantic_seg_head\.", "mask_decoder.semantic_projection."),
    (r"^segmentation_head\.cross_attend_prompt\.", "mask_decoder.prompt_cross_attn."),
    (r"^segmentation_head\.cross_attn_norm\.", "mask_decoder.prompt_cross_attn_norm."),
    (r"^segmentation_head\.", "mask_decoder."),
    # nn.MultiheadAttention's output projection (CLIP's text encoder keeps the name)
    (r"^(?!text_encoder\.)(.*)\.out_proj\.", r"\1.o_proj."),
]
# a small MLP of Meta's (``layers.<i>``) whose transformers twin names its linear layers ``layer1``, ``layer2``, ...
_NUMBERED_MLP = re.compile(r"^(detr_decoder\.(box_head|instance_box_head|presence_head|ref_point_head|box_rpb_embed_x|"
                           r"box_rpb_embed_y)|dot_product_scoring\.text_mlp)\.layers\.(\d+)\.")
# what transformers' detector has no use for: the ViT's rotary tables (it computes them) and the exemplar encoder's
# point projections (its exemplars are boxes, as SAM 3's image processor sends them)
_NOT_READ = re.compile(r"\.attn\.freqs_cis$|^detector\.geometry_encoder\.points_")
_TRACKER_HEADS = re.compile(r"^(sam_prompt_encoder|sam_mask_decoder)\.|^no_mem_embed$")  # what an image tracker uses


def read_sam3_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """The state dict of Meta's ``sam3.pt`` (``{"model": state}`` or a bare state dict, ``detector.*`` and
    ``tracker.*`` tensors)."""
    return read_meta_state(path, "detector.backbone.vision_backbone.trunk.", "SAM 3")


def _split_fused(name: str, value: torch.Tensor) -> Dict[str, torch.Tensor]:
    """A fused query/key/value projection (``...qkv.weight``, ``...in_proj_weight``) -> its three parts."""
    m = re.match(r"^(.*)\.(qkv\.(weight|bias)|in_proj_(weight|bias))$", name)
    if not m:
        return {name: value}
    kind = m.group(3) or m.group(4)
    return {"%s.%s_proj.%s" % (m.group(1), part, kind): t for part, t in zip("qkv", value.chunk(3, dim=0))}


def detector_state_dict(meta_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``sam3.pt``'s ``detector.*`` tensors -> transformers ``Sam3Model``'s (plus ``tracker_neck.*``, the second
    FPN neck, which :func:`tracker_state_dict` takes)."""
    out = {}
    for name, value in meta_state.items():
        if not name.startswith("detector.") or _NOT_READ.search(name):
            continue
        new = name[len("detector."):]
        for pattern, replacement in _DETECTOR_RENAMES:
            new = re.sub(pattern, replacement, new)
        m = _NUMBERED_MLP.match(new)
        if m:
            new = "%s.layer%d.%s" % (m.group(1), int(m.group(3)) + 1, new[m.end():])
        if new == "vision_encoder.backbone.embeddings.position_embeddings":
            grid = value.shape[1]
            if int(round((grid - 1) ** 0.5)) ** 2 == grid - 1:  # a class-token row first (Meta's pretraining)
                value = value[:, 1:]
        elif new == "text_encoder.text_projection.weight":
            value = value.t()
        out.update(_split_fused(new, value))
    return out


def tracker_state_dict(meta_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``sam3.pt`` -> transformers ``Sam3TrackerModel``'s tensors: the detector's ViT, the second FPN neck as the
    vision encoder's neck, the tracker's SAM heads (SAM 2's names); the video memory left out."""
    detector = detector_state_dict(meta_state)
    out = {k: v for k, v in detector.items() if k.startswith("vision_encoder.backbone.")}
    out.update({"vision_encoder.neck." + k[len("tracker_neck."):]: v for k, v in detector.items()
                if k.startswith("tracker_neck.")})
    heads = {}
    for name, value in meta_state.items():
        if name.startswith("tracker.") and _TRACKER_HEADS.search(name[len("tracker."):]):
            # SAM 1's MLP block names (lin1, lin2) in the two-way transformer, SAM 2's (layers.0, layers.1) elsewhere
            heads[re.sub(r"\.mlp\.lin(\d)\.", lambda m: ".mlp.layers.%d." % (int(m.group(1)) - 1),
                         name[len("tracker."):])] = value
    out.update(sam2_state_dict(heads))
    return out


def released_config(part: str):
    """transformers' config of the released SAM 3's ``part``: "detector" (``Sam3Config()``) or "tracker"
    (``Sam3TrackerConfig()``); ``sam3.pt`` holds weights only."""
    from transformers import Sam3Config, Sam3TrackerConfig

    return {"detector": Sam3Config, "tracker": Sam3TrackerConfig}[part]()


def load_meta_sam3(path: str, config=None):
    """transformers' ``Sam3Model`` (eval mode) holding the detector of Meta's ``sam3.pt`` at ``path``.

    Arguments:
        config: a ``Sam3Config`` for a checkpoint of other sizes than the released one (the tests' toy);
            default: :func:`released_config`.

    Raises:
        SamtextError: the file is not Meta's SAM 3 checkpoint, or its tensors do not fill the model.
    """
    from transformers import Sam3Model

    config = config or released_config("detector")
    return fill_model(lambda: Sam3Model(config), _detector(path), path, "SAM 3")


def load_meta_sam3_tracker(path: str, config=None):
    """transformers' ``Sam3TrackerModel`` (eval mode) holding SAM 3's image encoder and interactive heads from
    Meta's ``sam3.pt`` at ``path`` (``config``: as for :func:`load_meta_sam3`, a ``Sam3TrackerConfig``), its neck
    cut to the levels the heads read (:func:`samtext.models.hf_sam.drop_unread_neck_levels`)."""
    from transformers import Sam3TrackerModel

    from .hf_sam import drop_unread_neck_levels

    config = config or released_config("tracker")
    model = fill_model(lambda: Sam3TrackerModel(config), tracker_state_dict(read_sam3_checkpoint(path)), path,
                       "SAM 3 tracker")
    return drop_unread_neck_levels(model)


def _detector(path: str) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in detector_state_dict(read_sam3_checkpoint(path)).items()
            if not k.startswith("tracker_neck.")}
