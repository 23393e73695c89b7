"""MobileSAM: SAM with a TinyViT image encoder (about 5 M parameters, distilled from SAM ViT-H's image
embeddings), and SAM's own prompt encoder and mask decoder.

The only module that imports ``mobile_sam``, the code of the MobileSAM repository as the ``mobilesam-mirror``
package ships it (an unofficial packaging, pinned in requirements.txt). Only its ``TinyViT`` is used: the model is
assembled from ``segment_anything``'s ``Sam``, ``PromptEncoder`` and ``MaskDecoder`` (MobileSAM's own copies of
them are the same code), so that every samtext path, the batched prompt decoder included, treats it as SAM. Its
state dict is MobileSAM's, key for key. Swapping the package for another source of TinyViT touches this file only.
(Importing ``mobile_sam`` registers its TinyViT classifiers in timm's model registry under timm's own
``tiny_vit_*_224`` names; samtext does not use them.)

Input 1024 px, image embedding ``(1, 256, 64, 64)``, as SAM.
"""

import warnings

import torch

# MobileSAM's published encoder (mobile_sam.build_sam_vit_t) and a narrow, shallow one for tests.
_TINYVIT = dict(embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
                window_sizes=[7, 7, 14, 7])
# (the last width stays 320: TinyViT's last patch merging keeps the 64x64 grid only for widths 320, 448 or 576)
_TINY_TINYVIT = dict(embed_dims=[8, 16, 32, 320], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 4],
                     window_sizes=[7, 7, 14, 7])


def build_mobile_sam(tiny: bool = False, seed: int = 0):
    """A randomly initialised MobileSAM (``tiny``: a narrow TinyViT of 1 block per stage and a 1-layer decoder,
    for tests), as a ``segment_anything.modeling.Sam`` in eval mode. Load weights with ``load_state_dict``."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    with warnings.catch_warnings():  # its imports of timm's deprecated paths, its re-registered TinyViT names
        warnings.simplefilter("ignore")
        from mobile_sam.modeling import TinyViT

    img_size, dim = 1024, 256  # TinyViT's neck is fixed to a 64x64 grid of 256 channels
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = TinyViT(img_size=img_size, in_chans=3, num_classes=1000, mlp_ratio=4.0, drop_rate=0.0,
                          drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                          layer_lr_decay=0.8, **(_TINY_TINYVIT if tiny else _TINYVIT))
        sam = Sam(
            image_encoder=encoder,
            prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(64, 64),
                                         input_image_size=(img_size, img_size), mask_in_chans=4 if tiny else 16),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=1 if tiny else 2, embedding_dim=dim,
                                              mlp_dim=128 if tiny else 2048, num_heads=2 if tiny else 8),
                transformer_dim=dim,
                iou_head_depth=3,
                iou_head_hidden_dim=32 if tiny else 256,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    return sam.eval()
