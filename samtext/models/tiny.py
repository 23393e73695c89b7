"""Tiny, randomly initialised SAM and CLIP of the real architectures, for tests and offline demos.

They run every samtext code path in seconds with no download. Their masks are not meaningful; the
seed makes them repeatable. Built from the same classes as the real models
(``segment_anything.modeling`` and ``open_clip.CLIP``), only narrower, shallower and at a lower input
resolution.
"""

from functools import partial

import torch

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
        raise ValueError("tower must be 'vit' or 'rn', got %r" % (tower,))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(
            embed_dim=32,
            vision_cfg=vision,
            text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
        )
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    return model.eval(), tokenizer
