"""Writes tests/data/meta_sam3_toy.pt: the layout of a toy-sized SAM 3 checkpoint in Meta's own format (``sam3.pt``,
as FiftyOne's zoo keeps it), made by Meta's own code, with the answers of Meta's own predictors on a fixed image.

The test of :mod:`samtext.models.meta_sam3` rebuilds the checkpoint (every tensor's name and shape from this file,
its values from :func:`toy_weights`, a fixed function of the name), converts it, and checks that samtext's SAM 3
adapters give those answers: the concept detector (text and exemplar boxes) and the interactive segmenter (points
and a box). The file holds names, shapes and answers, no weights (a toy SAM 3 keeps SAM 3's 256-wide heads and
its 49,408-token vocabulary: some 90 MB of random numbers that a seed reproduces). It also holds the layout of
the released ``sam3.pt`` (every name and shape, as Meta's builders make it at their own sizes), which the test
converts on the meta device against transformers' default configs.

Meta's ``sam3`` package is not a samtext dependency; this script reads it from a folder:

    pip download --no-deps sam3==0.1.4 && unzip -q sam3-0.1.4-py3-none-any.whl -d sam3-0.1.4
    pip install --target deps --no-deps einops iopath portalocker pycocotools
    PYTHONPATH=sam3-0.1.4:deps .venv/bin/python scripts/make_meta_sam3_fixture.py

The model is SAM 3's architecture as ``sam3.model_builder`` builds it (image model with the instance-interactive
predictor), its sizes shrunk where the builder allows: a 2-block ViT 64 wide at 224 px (patch 14, windows of 8,
block 1 global, RoPE), a 1-layer text encoder 64 wide, 1-layer geometry encoder, DETR encoder and decoder (8
queries), the segmentation head and the tracker's SAM heads as released (256 wide).
"""

import os
import sys
import zlib

import numpy as np
import torch

import make_meta_sam2_fixture  # the same image and prompts as the SAM 2.1 fixture's (this folder)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "meta_sam3_toy.pt")

SIZE, PATCH, WIDTH, D_MODEL = 224, 14, 64, 256
GRID = SIZE // PATCH
TOY = dict(image_size=SIZE, patch_size=PATCH, vit_width=WIDTH, vit_depth=2, vit_heads=4, vit_mlp=2 * WIDTH,
           window=8, global_blocks=[1], pretrain_image_size=8 * PATCH, text_width=WIDTH, text_heads=4,
           text_layers=1, layers=1, feedforward=256, queries=8, heads=8, d_model=D_MODEL)
TEXTS = ["red square", "green disc", "a photo of nothing"]
EXEMPLAR = np.array([50.0, 40.0, 130.0, 120.0], dtype=np.float32)  # XYXY pixels of the image: the red square
POINTS = np.array([[90.0, 80.0], [180.0, 170.0], [20.0, 200.0]], dtype=np.float32)  # (x, y) pixels
BOX = np.array([140.0, 120.0, 220.0, 215.0], dtype=np.float32)  # XYXY pixels


def fixture_image() -> np.ndarray:
    """A ``(224, 224, 3)`` uint8 image of smooth gradients, a red square and a green disc (deterministic)."""
    return make_meta_sam2_fixture.fixture_image(SIZE)


def toy_weights(shapes: dict) -> dict:
    """``{name: shape}`` -> ``{name: float32 tensor}``, each a fixed function of its name: a matrix or kernel
    ``N(0, 1/fan_in)``; a vector named ``weight`` or ``gamma`` (a norm's scale) ``1 + N(0, 0.1)``; any other vector
    ``N(0, 0.1)``. Random enough that every tensor changes the answers, tame enough that they do not saturate."""
    out = {}
    for name, shape in shapes.items():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        t = torch.randn(tuple(shape), generator=g)
        last = name.rsplit(".", 1)[-1]
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:])) if "embed" not in name else int(shape[-1])
            t = t / max(fan_in, 1) ** 0.5
        elif last in ("weight", "gamma"):
            t = 1 + 0.1 * t
        else:
            t = 0.1 * t
        out[name] = t
    return out


def _toy_builders(mb):
    """Replaces ``sam3.model_builder``'s size-fixing creators with toy-sized ones (same classes, same flags)."""
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer, TransformerDecoderLayerv2
    from sam3.model.decoder import TransformerEncoderCrossAttention
    from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
    from sam3.model.model_misc import MLP, DotProductScoring, MultiheadAttentionWrapper, TransformerWrapper
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vitdet import ViT
    from sam3.sam.transformer import RoPEAttention

    def attention(batch_first=True):
        return MultiheadAttentionWrapper(num_heads=TOY["heads"], dropout=0.0, embed_dim=D_MODEL,
                                         batch_first=batch_first)

    def position_encoding(precompute_resolution=None):
        # no precomputed cache: Meta's precomputes on CUDA (a cache only; the encoding is the same)
        return PositionEmbeddingSine(num_pos_feats=D_MODEL, normalize=True, scale=None, temperature=10000)

    def vit(compile_mode=None):
        return ViT(img_size=SIZE, pretrain_img_size=TOY["pretrain_image_size"], patch_size=PATCH, embed_dim=WIDTH,
                   depth=TOY["vit_depth"], num_heads=TOY["vit_heads"], mlp_ratio=TOY["vit_mlp"] / WIDTH,
                   norm_layer="LayerNorm", drop_path_rate=0.0, qkv_bias=True, use_abs_pos=True, tile_abs_pos=True,
                   global_att_blocks=tuple(TOY["global_blocks"]), rel_pos_blocks=(), use_rope=True,
                   use_interp_rope=True, window_size=TOY["window"], pretrain_use_cls_token=True,
                   retain_cls_token=False, ln_pre=True, ln_post=False, return_interm_layers=False,
                   bias_patch_embed=False, compile_mode=None, use_act_checkpoint=False)

    def text_encoder(bpe_path):
        return VETextEncoder(tokenizer=SimpleTokenizer(bpe_path=bpe_path), d_model=D_MODEL, width=TOY["text_width"],
                             heads=TOY["text_heads"], layers=TOY["text_layers"], use_act_checkpoint=False)

    def transformer_encoder():
        layer = TransformerEncoderLayer(
            activation="relu", d_model=D_MODEL, dim_feedforward=TOY["feedforward"], dropout=0.0,
            pos_enc_at_attn=True, pos_enc_at_cross_attn_keys=False, pos_enc_at_cross_attn_queries=False,
            pre_norm=True, self_attention=attention(), cross_attention=attention())
        return TransformerEncoderFusion(layer=layer, num_layers=TOY["layers"], d_model=D_MODEL,
                                        num_feature_levels=1, frozen=False, use_act_checkpoint=False,
                                        add_pooled_text_to_img_feat=False, pool_text_with_mask=True)

    def transformer_decoder():
        layer = TransformerDecoderLayer(activation="relu", d_model=D_MODEL, dim_feedforward=TOY["feedforward"],
                                        dropout=0.0, cross_attention=attention(False), n_heads=TOY["heads"],
                                        use_text_cross_attention=True)
        return TransformerDecoder(layer=layer, num_layers=TOY["layers"], num_queries=TOY["queries"],
                                  return_intermediate=True, box_refine=True, num_o2m_queries=0, dac=True,
                                  boxRPB="log", d_model=D_MODEL, frozen=False, interaction_layer=None,
                                  dac_use_selfatt_ln=True, resolution=SIZE, stride=PATCH, use_act_checkpoint=False,
                                  presence_token=True)

    def sam3_transformer(has_presence_token=True):
        return TransformerWrapper(encoder=transformer_encoder(), decoder=transformer_decoder(), d_model=D_MODEL)

    def dot_product_scoring():
        mlp = MLP(input_dim=D_MODEL, hidden_dim=TOY["feedforward"], output_dim=D_MODEL, num_layers=2, dropout=0.0,
                  residual=True, out_norm=torch.nn.LayerNorm(D_MODEL))
        return DotProductScoring(d_model=D_MODEL, d_proj=D_MODEL, prompt_mlp=mlp)

    def segmentation_head(compile_mode=None):
        pixel_decoder = PixelDecoder(num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=D_MODEL,
                                     compile_mode=None)
        return UniversalSegmentationHead(hidden_dim=D_MODEL, upsampling_stages=3, aux_masks=False,
                                         presence_head=False, dot_product_scorer=None, act_ckpt=False,
                                         cross_attend_prompt=MultiheadAttentionWrapper(
                                             num_heads=TOY["heads"], dropout=0, embed_dim=D_MODEL),
                                         pixel_decoder=pixel_decoder)

    def geometry_encoder():
        layer = TransformerEncoderLayer(
            activation="relu", d_model=D_MODEL, dim_feedforward=TOY["feedforward"], dropout=0.0,
            pos_enc_at_attn=False, pre_norm=True, self_attention=attention(False), pos_enc_at_cross_attn_queries=False,
            pos_enc_at_cross_attn_keys=True, cross_attention=attention(False))
        return SequenceGeometryEncoder(
            pos_enc=position_encoding(), encode_boxes_as_points=False, points_direct_project=True, points_pool=True,
            points_pos_enc=True, boxes_direct_project=True, boxes_pool=True, boxes_pos_enc=True, d_model=D_MODEL,
            num_layers=TOY["layers"], layer=layer, use_act_ckpt=False, add_cls=True, add_post_encode_proj=True)

    def tracker(apply_temporal_disambiguation=False, with_backbone=False, compile_mode=None):
        rope = dict(embedding_dim=D_MODEL, num_heads=1, downsample_rate=1, dropout=0.0, rope_theta=10000.0,
                    feat_sizes=[GRID, GRID], use_fa3=False, use_rope_real=False)
        layer = TransformerDecoderLayerv2(
            cross_attention_first=False, activation="relu", dim_feedforward=TOY["feedforward"], dropout=0.0,
            pos_enc_at_attn=False, pre_norm=True, self_attention=RoPEAttention(**rope), d_model=D_MODEL,
            pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
            cross_attention=RoPEAttention(kv_in_dim=64, rope_k_repeat=True, **rope))
        memory = TransformerWrapper(encoder=TransformerEncoderCrossAttention(
            remove_cross_attention_layers=[], batch_first=True, d_model=D_MODEL, frozen=False, pos_enc_at_input=True,
            layer=layer, num_layers=1, use_act_checkpoint=False), decoder=None, d_model=D_MODEL)
        maskmem = SimpleMaskEncoder(
            out_dim=64, position_encoding=PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None,
                                                                temperature=10000),
            mask_downsampler=SimpleMaskDownSampler(kernel_size=3, stride=2, padding=1, interpol_size=[256, 256]),
            fuser=SimpleFuser(layer=CXBlock(dim=D_MODEL, kernel_size=7, padding=3, layer_scale_init_value=1e-6,
                                            use_dwconv=True), num_layers=1))
        return Sam3TrackerPredictor(
            image_size=SIZE, num_maskmem=7, backbone=None, backbone_stride=PATCH, transformer=memory,
            maskmem_backbone=maskmem, multimask_output_in_sam=True, forward_backbone_per_frame_for_eval=True,
            trim_past_non_cond_mem_for_eval=False, multimask_output_for_tracking=True, multimask_min_pt_num=0,
            multimask_max_pt_num=1, always_start_from_first_ann_frame=False, non_overlap_masks_for_mem_enc=False,
            non_overlap_masks_for_output=False, max_cond_frames_in_attn=4, offload_output_to_cpu_for_eval=False,
            sam_mask_decoder_extra_args={"dynamic_multimask_via_stability": True,
                                         "dynamic_multimask_stability_delta": 0.05,
                                         "dynamic_multimask_stability_thresh": 0.98},
            clear_non_cond_mem_around_input=True, fill_hole_area=0,
            use_memory_selection=apply_temporal_disambiguation)

    mb._create_position_encoding = position_encoding
    mb._create_vit_backbone = vit
    mb._create_text_encoder = text_encoder
    mb._create_sam3_transformer = sam3_transformer
    mb._create_dot_product_scoring = dot_product_scoring
    mb._create_segmentation_head = segmentation_head
    mb._create_geometry_encoder = geometry_encoder
    mb.build_tracker = tracker


def model_layout(sam3_pt_state: dict) -> dict:
    """``sam3.pt``'s names -> the image model's (the renaming of ``sam3.model_builder._load_checkpoint``; the
    inverse of :func:`meta_layout`)."""
    return {k.replace("detector.", "", 1) if k.startswith("detector.") else
            k.replace("tracker.", "inst_interactive_predictor.model.", 1): v for k, v in sam3_pt_state.items()}


class _OnTheCpu(torch.overrides.TorchFunctionMode):
    """Meta's code makes some tensors on ``device="cuda"`` unconditionally; this machine has none."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        args = tuple("cpu" if isinstance(a, (str, torch.device)) and str(a).startswith("cuda") else a for a in args)
        if getattr(func, "__name__", "") in ("cuda", "pin_memory"):
            return args[0]
        return func(*args, **kwargs)


def meta_layout(image_model_state: dict) -> dict:
    """An image model's tensors under ``sam3.pt``'s names: the detector's as ``detector.*``, the interactive
    predictor's model as ``tracker.*`` (the inverse of ``sam3.model_builder._load_checkpoint``)."""
    tracker = "inst_interactive_predictor.model."
    return {("tracker." + k[len(tracker):]) if k.startswith(tracker) else "detector." + k: v
            for k, v in image_model_state.items()}


def released_shapes(mb, bpe: str) -> dict:
    """``{name: shape}`` of the released ``sam3.pt``: Meta's builders at their own sizes (861 M numbers; the
    weights' random initialisation skipped, only the layout is kept)."""
    init = torch.nn.init
    saved = {f: getattr(init, f) for f in ("trunc_normal_", "normal_", "uniform_", "kaiming_uniform_",
                                           "xavier_uniform_")}
    try:
        for f in saved:
            setattr(init, f, lambda t, *a, **k: t)
        model = mb.build_sam3_image_model(bpe_path=bpe, device="cpu", eval_mode=True, load_from_HF=False,
                                          enable_inst_interactivity=True)
        return {k: list(v.shape) for k, v in meta_layout(dict(model.state_dict())).items()}
    finally:
        for f, fn in saved.items():
            setattr(init, f, fn)


def main():
    with _OnTheCpu():
        return _main()


def _main():
    import open_clip
    import sam3.model_builder as mb
    from sam3.model.sam3_image_processor import Sam3Processor

    bpe = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    released = released_shapes(mb, bpe)
    _toy_builders(mb)
    torch.manual_seed(0)  # the random buffers (the prompt encoder's Fourier features) are kept in the file
    model = mb.build_sam3_image_model(bpe_path=bpe, device="cpu", eval_mode=True, load_from_HF=False,
                                      enable_inst_interactivity=True)
    shapes = {k: list(v.shape) for k, v in meta_layout(dict(model.named_parameters())).items()}
    weights = toy_weights(shapes)
    layout = meta_layout(dict(model.state_dict()))  # tensors sharing the model's memory
    for k, v in weights.items():
        layout[k].copy_(v)
    buffers = {k: v for k, v in layout.items() if k not in weights}
    # the layout is the one Meta's own loader reads: a fresh model takes every parameter from it
    fresh = mb.build_sam3_image_model(bpe_path=bpe, device="cpu", eval_mode=True, load_from_HF=False,
                                      enable_inst_interactivity=True)
    missing, unexpected = fresh.load_state_dict(model_layout(dict(weights, **buffers)), strict=False)
    assert not missing and not unexpected, (missing, unexpected)

    image = fixture_image()
    processor = Sam3Processor(model, resolution=SIZE, device="cpu", confidence_threshold=0.0)
    processor.find_stage.img_ids = processor.find_stage.img_ids.cpu()
    model.inst_interactive_predictor._bb_feat_sizes = [(GRID * 4, GRID * 4), (GRID * 2, GRID * 2), (GRID, GRID)]
    answers = {}
    h, w = image.shape[:2]

    def grounding(state):
        out = model.forward_grounding(backbone_out=state["backbone_out"], find_input=processor.find_stage,
                                      geometric_prompt=state["geometric_prompt"], find_target=None)
        presence = out["presence_logit_dec"].sigmoid()
        return dict(scores=(out["pred_logits"].sigmoid() * presence.unsqueeze(1))[0, :, 0].clone(),
                    presence=presence.reshape(-1)[0].clone(),
                    boxes_cxcywh=out["pred_boxes"][0].clone(), mask_logits=out["pred_masks"][0].clone())

    with torch.inference_mode():
        for text in TEXTS:
            state = processor.set_image(torch.as_tensor(image).permute(2, 0, 1))
            state["backbone_out"].update(model.backbone.forward_text([text], device="cpu"))
            state["geometric_prompt"] = model._get_dummy_prompt()
            answers["text:" + text] = grounding(state)
        state = processor.set_image(torch.as_tensor(image).permute(2, 0, 1))
        state["backbone_out"].update(model.backbone.forward_text(["visual"], device="cpu"))
        state["geometric_prompt"] = model._get_dummy_prompt()
        x0, y0, x1, y1 = EXEMPLAR
        box = torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]).view(1, 1, 4)
        state["geometric_prompt"].append_boxes(box, torch.tensor([True]).view(1, 1))
        answers["exemplar"] = grounding(state)

        state = processor.set_image(torch.as_tensor(image).permute(2, 0, 1))
        for name, kwargs in make_meta_sam2_fixture.predictor_prompts(POINTS, BOX).items():
            _, scores, low_res = model.predict_inst(state, return_logits=True, **kwargs)
            answers["segment:" + name] = dict(low_res_logits=torch.as_tensor(low_res).clone(),
                                              scores=torch.as_tensor(scores).clone())

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    torch.save(dict(shapes=shapes, released_shapes=released, buffers={k: v.clone() for k, v in buffers.items()}, answers=answers, toy=TOY,
                    texts=TEXTS, exemplar=torch.as_tensor(EXEMPLAR), points=torch.as_tensor(POINTS),
                    box=torch.as_tensor(BOX), made_by="scripts/make_meta_sam3_fixture.py with Meta's sam3 0.1.4"), OUT)
    print("wrote %s: %d tensors named (%.1f M numbers), %d buffers, %.2f MB" % (
        OUT, len(shapes), sum(int(np.prod(s)) for s in shapes.values()) / 1e6, len(buffers),
        os.path.getsize(OUT) / 1e6))


if __name__ == "__main__":
    sys.exit(main())
