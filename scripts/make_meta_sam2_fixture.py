"""Writes tests/data/meta_sam2.1_tiny.pt: a tiny SAM 2.1 checkpoint in Meta's own format, made by Meta's own code,
with the answers of Meta's own image predictor on a fixed image and prompts.

The test of :mod:`samtext.models.meta_checkpoints` converts it and checks that samtext's SAM 2.1 adapter gives
those answers. Meta's ``sam2`` package is not a samtext dependency; this script reads its source from a folder:

    pip download --no-deps sam2==1.1.0 && tar xzf sam2-1.1.0.tar.gz
    .venv/bin/python scripts/make_meta_sam2_fixture.py sam2-1.1.0

The model is SAM 2.1's architecture (``configs/sam2.1/sam2.1_hiera_t.yaml``'s flags: high-resolution features in
the decoder, object-score head, sigmoid IoU) at toy sizes: a 4-stage Hiera of widths 8-64, a 32-channel neck, a
256 px input. Its weights are random (perturbed so that every bias and norm matters); the file holds no
pretrained weights, and is about 1 MB.
"""

import argparse
import os
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "meta_sam2.1_tiny.pt")

SIZE, WIDTH, DIMS = 256, 32, (8, 16, 32, 64)
# the toy Hiera in samtext.models.meta_checkpoints.SAM2_HIERAS' terms (heads double per stage, as Meta's Hiera does)
LAYOUT = dict(embed_dim=DIMS[0], blocks=[1, 1, 2, 1], heads=[1, 2, 4, 8], global_blocks=[3], windows=[8, 4, 4, 2],
              background=[7, 7])
POINTS = np.array([[60.0, 80.0], [190.0, 150.0], [128.0, 40.0]], dtype=np.float32)  # (x, y) pixels of IMAGE
BOX = np.array([30.0, 50.0, 200.0, 220.0], dtype=np.float32)  # XYXY pixels


def fixture_image(size: int = SIZE) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 image of smooth gradients, a red square and a green disc (deterministic)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.stack([x, y, (x + y) / 2], axis=-1)
    image[40:120, 50:130] = (220, 40, 40)
    image[((x - 180) ** 2 + (y - 170) ** 2) < 40 ** 2] = (30, 200, 90)
    return image.clip(0, 255).astype(np.uint8)


def predictor_prompts(points: np.ndarray, box: np.ndarray) -> dict:
    """The prompts asked of Meta's image predictors, by name: keyword arguments of their ``predict``."""
    return {
        "point": dict(point_coords=points[:1], point_labels=np.array([1]), multimask_output=True),
        "points": dict(point_coords=points, point_labels=np.array([1, 0, 1]), multimask_output=True),
        "box": dict(box=box, multimask_output=True),
        "point_single": dict(point_coords=points[1:2], point_labels=np.array([1]), multimask_output=False),
    }


def _stub_imports():
    """``sam2/__init__.py`` starts hydra and ``hieradet.py`` imports iopath, neither needed to build a model by hand."""
    hydra = types.ModuleType("hydra")
    hydra.initialize_config_module = lambda *a, **k: None
    global_hydra = types.SimpleNamespace(instance=lambda: types.SimpleNamespace(is_initialized=lambda: True))
    sys.modules["hydra"] = hydra
    sys.modules["hydra.core"] = types.ModuleType("hydra.core")
    sys.modules["hydra.core.global_hydra"] = types.SimpleNamespace(GlobalHydra=global_hydra)
    iopath = types.ModuleType("iopath")
    sys.modules["iopath"] = iopath
    sys.modules["iopath.common"] = types.ModuleType("iopath.common")
    sys.modules["iopath.common.file_io"] = types.SimpleNamespace(g_pathmgr=None)


def build_meta_model():
    """Meta's ``SAM2Base`` with SAM 2.1's flags at toy sizes."""
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
    from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    from sam2.modeling.sam.transformer import RoPEAttention
    from sam2.modeling.sam2_base import SAM2Base

    trunk = Hiera(embed_dim=LAYOUT["embed_dim"], num_heads=LAYOUT["heads"][0], stages=tuple(LAYOUT["blocks"]),
                  global_att_blocks=tuple(LAYOUT["global_blocks"]),
                  window_pos_embed_bkg_spatial_size=tuple(LAYOUT["background"]), window_spec=tuple(LAYOUT["windows"]))
    neck = FpnNeck(position_encoding=PositionEmbeddingSine(num_pos_feats=WIDTH, normalize=True, temperature=10000),
                   d_model=WIDTH, backbone_channel_list=list(reversed(DIMS)), fpn_top_down_levels=[2, 3],
                   fpn_interp_model="nearest")
    grid = SIZE // 16
    attention = dict(rope_theta=10000.0, feat_sizes=[grid, grid], embedding_dim=WIDTH, num_heads=1,
                     downsample_rate=1, dropout=0.0)
    layer = MemoryAttentionLayer(
        activation="relu", dim_feedforward=64, dropout=0.0, pos_enc_at_attn=False, d_model=WIDTH,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        self_attention=RoPEAttention(**attention),
        cross_attention=RoPEAttention(rope_k_repeat=True, kv_in_dim=16, **attention))
    memory_attention = MemoryAttention(d_model=WIDTH, pos_enc_at_input=True, layer=layer, num_layers=1)
    memory_encoder = MemoryEncoder(
        out_dim=16, position_encoding=PositionEmbeddingSine(num_pos_feats=16, normalize=True, temperature=10000),
        mask_downsampler=MaskDownSampler(embed_dim=WIDTH, kernel_size=3, stride=2, padding=1),
        fuser=Fuser(CXBlock(dim=WIDTH, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True),
                    num_layers=1),
        in_dim=WIDTH)
    return SAM2Base(
        image_encoder=ImageEncoder(trunk=trunk, neck=neck, scalp=1), memory_attention=memory_attention,
        memory_encoder=memory_encoder, num_maskmem=7, image_size=SIZE, sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0, use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True,
        no_obj_embed_spatial=True, use_high_res_features_in_sam=True, multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True, use_obj_ptrs_in_encoder=True, add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=True, use_signed_tpos_enc_to_obj_ptrs=True, only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True, pred_obj_scores_mlp=True, fixed_no_obj_ptr=True, multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
        # what Meta's build_sam2 adds for image prediction (a single mask chosen by stability, as transformers does)
        sam_mask_decoder_extra_args=dict(dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
                                         dynamic_multimask_stability_thresh=0.98)).eval()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sam2_source", help="the folder of Meta's sam2 release (holding the sam2 package)")
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    sys.path.insert(0, os.path.abspath(args.sam2_source))
    _stub_imports()
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    torch.manual_seed(0)
    model = build_meta_model()
    with torch.no_grad():
        for name, param in model.named_parameters():  # every weight, bias and norm away from its initial value
            param.add_(torch.randn_like(param) * (0.3 if param.dim() > 1 else 0.5))
    predictor = SAM2ImagePredictor(model)
    predictor._bb_feat_sizes = [(SIZE // s, SIZE // s) for s in (4, 8, 16)]  # the predictor assumes 1024 px
    image = fixture_image()
    predictor.set_image(image)
    answers = {}
    for name, kwargs in predictor_prompts(POINTS, BOX).items():
        with torch.no_grad():
            _, scores, low_res = predictor.predict(return_logits=True, **kwargs)
        answers[name] = dict(low_res_logits=torch.as_tensor(low_res), scores=torch.as_tensor(scores))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    torch.save({"model": state, "samtext_fixture": dict(
        answers=answers, points=torch.as_tensor(POINTS), box=torch.as_tensor(BOX), layout=LAYOUT, image_size=SIZE,
        width=WIDTH,
        made_by="scripts/make_meta_sam2_fixture.py with Meta's sam2 1.1.0")}, args.out)
    print("wrote %s: %d tensors, %.2f MB" % (args.out, len(state), os.path.getsize(args.out) / 1e6))


if __name__ == "__main__":
    main()
