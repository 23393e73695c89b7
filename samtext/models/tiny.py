"""Tiny, randomly initialised SAM and CLIP of the real architectures, for tests and offline demos.

They run every samtext code path in seconds with no download. Their masks are not meaningful; the
seed makes them repeatable. Built from the same classes as the real models
(``segment_anything.modeling`` and ``open_clip.CLIP``), only narrower, shallower and at a lower input
resolution.
"""

from functools import partial

import torch

from ..errors import SamtextError

TINY_SEED = 0


def build_tiny_sam(seed: int = TINY_SEED):
    """SAM with a 2-block ViT encoder (width 64) at 256 px input; 16x16 image embedding of 32 channels."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    img_size, patch, dim = 256, 16, 32
    grid = img_size // patch
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=img_size,
                patch_size=patch,
                embed_dim=64,
                depth=2,
                num_heads=2,
                mlp_ratio=2.0,
                out_chans=dim,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=4,
                global_attn_indexes=(1,),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=dim,
                image_embedding_size=(grid, grid),
                input_image_size=(img_size, img_size),
                mask_in_chans=8,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2),
                transformer_dim=dim,
                iou_head_depth=2,
                iou_head_hidden_dim=32,
            ),
        )
    return sam.eval()


def build_tiny_clip(seed: int = TINY_SEED, tower: str = "vit"):
    """open_clip CLIP with a 2-layer text transformer (width 64, the real BPE tokenizer: vocabulary 49408,
    context 77) and, as ``tower`` says, a 2-layer ViT (64 px input, patch 16, width 64) or a ModifiedResNet
    (RN50's layout with one bottleneck per stage, width 16, 64 px input)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    if tower == "vit":
        vision = CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16, image_size=64)
    elif tower == "rn":
        vision = CLIPVisionCfg(layers=(1, 1, 1, 1), width=16, head_width=32, image_size=64)
    else:
        raise SamtextError("tower must be 'vit' or 'rn', got %r" % (tower,))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(
            embed_dim=32,
            vision_cfg=vision,
            text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
        )
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    return model.eval(), tokenizer


def _perturbed(model, seed: int, scale: float = 0.3):
    """``model`` with seeded noise added to every parameter: transformers initialises small weights and zero
    biases, so a tiny random model's masks would barely depend on the prompt."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * scale)
    return model.eval()


def _tiny_promptable(model_class, config_class, vision, prompt_config, decoder_config, size: int, patch: int, fpn: int,
                     seed: int):
    """A transformers SAM 2-style promptable model: ``vision`` with a prompt encoder and a 2-layer mask decoder of
    width ``fpn``, seeded and perturbed."""
    config = config_class(
        vision_config=vision,
        prompt_encoder_config=prompt_config(hidden_size=fpn, image_size=size, patch_size=patch, mask_input_channels=4),
        mask_decoder_config=decoder_config(hidden_size=fpn, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                           iou_head_hidden_dim=16))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_class(config)
    return _perturbed(model, seed)


def build_tiny_sam2(seed: int = TINY_SEED):
    """transformers' ``Sam2Model`` (SAM 2.1's Hiera image encoder, FPN neck, prompt encoder, mask decoder) with a
    4-stage Hiera of widths 8-64 at 256 px input: 16x16 image embedding of 32 channels, 64x64 low-res masks."""
    from transformers import (Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2Model,
                              Sam2PromptEncoderConfig, Sam2VisionConfig)

    size, fpn, dims = 256, 32, (8, 16, 32, 64)
    backbone = Sam2HieraDetConfig(
        hidden_size=dims[0], image_size=[size, size], blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=list(dims),
        num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[8, 4, 4, 2], global_attention_blocks=[3],
        window_positional_embedding_background_size=[7, 7])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=list(reversed(dims)),
                              backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
                              fpn_hidden_size=fpn)
    return _tiny_promptable(Sam2Model, Sam2Config, vision, Sam2PromptEncoderConfig, Sam2MaskDecoderConfig, size, 16,
                            fpn, seed)


def build_tiny_sam3_tracker(seed: int = TINY_SEED):
    """transformers' ``Sam3TrackerModel`` (SAM 3's ViT image encoder with its FPN neck, SAM 2's prompt encoder and
    mask decoder) with a 2-layer ViT of width 32 at 224 px input, patch 14: 16x16 image embedding of 32 channels,
    64x64 low-res masks."""
    from transformers import (Sam3TrackerConfig, Sam3TrackerMaskDecoderConfig, Sam3TrackerModel,
                              Sam3TrackerPromptEncoderConfig, Sam3VisionConfig, Sam3ViTConfig)

    size, patch, fpn, width = 224, 14, 32, 32
    grid = size // patch
    vit = Sam3ViTConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2,
                        image_size=size, patch_size=patch, window_size=8, global_attn_indexes=[1],
                        pretrain_image_size=8 * patch)
    vision = Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=fpn, scale_factors=[4.0, 2.0, 1.0],
                              backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2])
    return _tiny_promptable(Sam3TrackerModel, Sam3TrackerConfig, vision, Sam3TrackerPromptEncoderConfig,
                            Sam3TrackerMaskDecoderConfig, size, patch, fpn, seed)
