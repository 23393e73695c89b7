"""Meta's own SAM 3 checkpoint (``sam3.pt``, as FiftyOne's zoo keeps it) loads through samtext.models.meta_sam3.

tests/data/meta_sam3_toy.pt describes a toy-sized ``sam3.pt`` built by Meta's own code (``sam3`` 0.1.4): every
tensor's name and shape, and the answers of Meta's own predictors on a fixed image (scripts/make_meta_sam3_fixture.py).
The checkpoint is rebuilt here (values: ``toy_weights``, a fixed function of each name, as the script set them),
converted, and samtext's SAM 3 adapters must give Meta's answers: the concept detector for texts and an exemplar
box, the interactive segmenter for points and a box."""

import functools
import os

import numpy as np
import pytest
import torch

from samtext.errors import SamtextError
from samtext.models import meta_sam3

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "data", "meta_sam3_toy.pt")


@functools.lru_cache(maxsize=1)
def _fixture():
    return torch.load(FIXTURE, weights_only=True)  # read, never changed, by every test here


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    """The toy ``sam3.pt`` (about 90 MB, written once for this module), where FiftyOne's zoo keeps SAM 3's:
    ``<zoo>/segment-anything-3-image-torch/sam3.pt``."""
    from make_meta_sam3_fixture import toy_weights

    fx = _fixture()
    path = tmp_path_factory.mktemp("zoo") / "segment-anything-3-image-torch" / "sam3.pt"
    path.parent.mkdir()
    torch.save({"model": dict(toy_weights(fx["shapes"]), **fx["buffers"])}, path)
    return str(path)


def toy_configs(toy):
    """transformers' ``Sam3Config`` and ``Sam3TrackerConfig`` of the fixture's toy sizes (the rest as released)."""
    from transformers import (Sam3Config, Sam3DETRDecoderConfig, Sam3DETREncoderConfig, Sam3GeometryEncoderConfig,
                              Sam3TrackerConfig, Sam3TrackerPromptEncoderConfig, Sam3VisionConfig, Sam3ViTConfig)

    grid = toy["image_size"] // toy["patch_size"]
    vit = Sam3ViTConfig(hidden_size=toy["vit_width"], intermediate_size=toy["vit_mlp"],
                        num_hidden_layers=toy["vit_depth"], num_attention_heads=toy["vit_heads"],
                        image_size=toy["image_size"], patch_size=toy["patch_size"], window_size=toy["window"],
                        global_attn_indexes=list(toy["global_blocks"]), pretrain_image_size=toy["pretrain_image_size"])
    vision = Sam3VisionConfig(backbone_config=vit, backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2])
    text = dict(Sam3Config().text_config.to_dict(), hidden_size=toy["text_width"],
                intermediate_size=4 * toy["text_width"], num_hidden_layers=toy["text_layers"],
                num_attention_heads=toy["text_heads"])  # the released text encoder's GELU and 32 tokens
    inner = dict(num_layers=toy["layers"], intermediate_size=toy["feedforward"])
    detector = Sam3Config(vision_config=vision, text_config=text,
                          geometry_encoder_config=Sam3GeometryEncoderConfig(**inner),
                          detr_encoder_config=Sam3DETREncoderConfig(**inner),
                          detr_decoder_config=Sam3DETRDecoderConfig(num_queries=toy["queries"], **inner))
    tracker = Sam3TrackerConfig(vision_config=vision, prompt_encoder_config=Sam3TrackerPromptEncoderConfig(
        image_size=toy["image_size"], patch_size=toy["patch_size"]))
    return detector, tracker


def test_the_concept_detector_gives_meta_s_own_answers(toy_checkpoint):
    from make_meta_sam3_fixture import fixture_image

    from samtext.models.sam3_concepts import Exemplars, Sam3Concepts, clip_tokenizer_offline

    fx = _fixture()
    detector_config, _ = toy_configs(fx["toy"])
    concepts = Sam3Concepts(meta_sam3.load_meta_sam3(toy_checkpoint, detector_config), clip_tokenizer_offline(),
                            name="meta-toy")
    image = fixture_image()
    h, w = image.shape[:2]
    encoded = concepts.embed(image)
    exemplar = Exemplars(fx["exemplar"].numpy()[None], np.array([1]))
    found = concepts.find(encoded, list(fx["texts"]) + [None], [None] * len(fx["texts"]) + [exemplar])
    names = ["text:" + t for t in fx["texts"]] + ["exemplar"]
    for name, got in zip(names, found):
        want = fx["answers"][name]
        np.testing.assert_allclose(got.scores, want["scores"].numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
        assert got.presence == pytest.approx(float(want["presence"]), abs=1e-5), name
        cx, cy, bw, bh = want["boxes_cxcywh"].unbind(-1)
        xyxy = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], -1)
        np.testing.assert_allclose(got.boxes, xyxy.numpy(), rtol=1e-4, atol=1e-3, err_msg=name)
        torch.testing.assert_close(got.mask_logits, want["mask_logits"], atol=2e-4, rtol=1e-4, msg=name)
    # the answers differ between prompts: the text and the exemplar reach the decoder
    assert not np.allclose(found[0].scores, found[1].scores) and not np.allclose(found[0].scores, found[-1].scores)


def test_the_interactive_segmenter_gives_meta_s_own_answers(toy_checkpoint):
    from make_meta_sam3_fixture import fixture_image

    from _meta_predictors import assert_meta_predictor_answers

    from samtext.models.hf_sam import FAMILIES, HfSamSegmenter

    fx = _fixture()
    _, tracker_config = toy_configs(fx["toy"])
    seg = HfSamSegmenter(meta_sam3.load_meta_sam3_tracker(toy_checkpoint, tracker_config), FAMILIES["sam3"],
                         name="meta-toy")
    assert_meta_predictor_answers(seg, fixture_image(), fx["points"].numpy(), fx["box"].numpy(), fx["answers"],
                                  prefix="segment:", atol=2e-4)


def test_the_tracker_reads_the_levels_meta_s_heads_read(toy_checkpoint):
    """transformers' default tracker config makes a fourth (0.5x) neck level and would add the "no memory"
    embedding to it; the loaded model makes three, Meta's, and the embedding reaches the 1x level."""
    from transformers import Sam3TrackerModel

    from samtext.models.hf_sam import drop_unread_neck_levels

    _, config = toy_configs(_fixture()["toy"])
    assert len(config.vision_config.scale_factors) == 4
    model = meta_sam3.load_meta_sam3_tracker(toy_checkpoint, config)
    assert len(model.vision_encoder.neck.fpn_layers) == 3 == len(model.config.vision_config.backbone_feature_sizes)
    assert len(config.vision_config.scale_factors) == 4  # the caller's config is left as it was
    assert len(meta_sam3.load_meta_sam3_tracker(toy_checkpoint, config).vision_encoder.neck.fpn_layers) == 3
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        plain = model.get_image_features(x).fpn_hidden_states[-1]
        embedded = model.get_image_embeddings(x)[-1]
    torch.testing.assert_close(embedded.flatten(2).permute(2, 0, 1) - plain,
                               model.no_memory_embedding.expand_as(plain))
    assert isinstance(model, Sam3TrackerModel)
    # other models as they are: SAM 3's detector reads its four levels its own way
    from samtext.models.sam3_concepts import build_tiny_sam3_concepts
    from samtext.models.tiny import build_tiny_sam2

    detector, _ = build_tiny_sam3_concepts()
    levels = len(detector.vision_encoder.neck.fpn_layers)
    assert levels == 4 and len(drop_unread_neck_levels(detector).vision_encoder.neck.fpn_layers) == levels
    sam2 = build_tiny_sam2()
    assert drop_unread_neck_levels(sam2) is sam2


def test_every_tensor_is_accounted_for(toy_checkpoint):
    """Both models take every tensor they have from the checkpoint, and each of the detector's tensors but the
    ViT's rotary tables and the exemplar encoder's point projections lands in the model; of the tracker, only the
    video memory is left out. Three tensors change form."""
    from transformers import Sam3Model, Sam3TrackerModel

    fx = _fixture()
    meta = meta_sam3.read_sam3_checkpoint(toy_checkpoint)
    detector_config, tracker_config = toy_configs(fx["toy"])
    with torch.device("meta"):
        detector_keys = set(Sam3Model(detector_config).state_dict())
        tracker_keys = set(Sam3TrackerModel(tracker_config).state_dict())
    converted = meta_sam3.detector_state_dict(meta)
    assert {k for k in converted if not k.startswith("tracker_neck.")} == detector_keys
    assert set(meta_sam3.tracker_state_dict(meta)) == tracker_keys
    not_read = {k for k in meta if "freqs_cis" in k or k.startswith("detector.geometry_encoder.points_")}
    for name in (k for k in meta if k.startswith("detector.") and k not in not_read):
        lands = set(meta_sam3.detector_state_dict({name: meta[name]}))
        assert lands and lands <= detector_keys | {k for k in converted if k.startswith("tracker_neck.")}, name
    assert {k for k in meta if k.startswith("detector.")} - not_read  # (the loop ran)
    left_out = {k.split(".")[1] for k in meta if k.startswith("tracker.") and not k.startswith(
        ("tracker.sam_prompt_encoder.", "tracker.sam_mask_decoder.", "tracker.no_mem_embed"))}
    assert left_out == {"maskmem_backbone", "transformer", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr",
                        "obj_ptr_proj", "obj_ptr_tpos_proj", "no_obj_embed_spatial", "mask_downsample"}
    trunk = "detector.backbone.vision_backbone.trunk."
    assert torch.equal(converted["vision_encoder.backbone.embeddings.position_embeddings"],
                       meta[trunk + "pos_embed"][:, 1:])  # the class-token row dropped
    q, k, v = meta[trunk + "blocks.0.attn.qkv.weight"].chunk(3)
    assert torch.equal(converted["vision_encoder.backbone.layers.0.attention.k_proj.weight"], k)
    in_proj = meta["detector.transformer.decoder.layers.0.ca_text.in_proj_bias"].chunk(3)
    assert torch.equal(converted["detr_decoder.layers.0.text_cross_attn.v_proj.bias"], in_proj[2])
    assert torch.equal(converted["text_encoder.text_projection.weight"],
                       meta["detector.backbone.language_backbone.encoder.text_projection"].t())


def test_the_released_sam3_pt_fills_transformers_released_models():
    """The layout of the released ``sam3.pt`` (every name and shape as Meta's builders make them at their own
    sizes, 861 M numbers) converts into transformers' ``Sam3Model(Sam3Config())`` and
    ``Sam3TrackerModel(Sam3TrackerConfig())`` with nothing missing, left over or of another shape (on the meta
    device: no memory, no download)."""
    from transformers import Sam3Model, Sam3TrackerModel

    released = {k: torch.empty(s, device="meta") for k, s in _fixture()["released_shapes"].items()}
    assert sum(t.numel() for t in released.values()) > 800e6
    with torch.device("meta"):
        detector = Sam3Model(meta_sam3.released_config("detector"))
        tracker = Sam3TrackerModel(meta_sam3.released_config("tracker"))

    def shapes(state):
        return {k: tuple(v.shape) for k, v in state.items()}

    converted = {k: v for k, v in meta_sam3.detector_state_dict(released).items() if not k.startswith("tracker_neck.")}
    assert shapes(converted) == shapes(detector.state_dict())
    assert shapes(meta_sam3.tracker_state_dict(released)) == shapes(tracker.state_dict())


def test_what_is_not_sam3_pt_is_refused_by_name(tmp_path, toy_checkpoint):
    junk = tmp_path / "sam3.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SamtextError, match="not a readable PyTorch checkpoint"):
        meta_sam3.load_meta_sam3(str(junk))
    sam2 = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(1)}}, sam2)
    with pytest.raises(SamtextError, match="not one of Meta's SAM 3 checkpoints"):
        meta_sam3.load_meta_sam3(str(sam2))
    # the toy is not the released model: its tensors are named but of other shapes
    with pytest.raises(SamtextError, match="does not fit transformers' SAM 3 model: .*of another shape"):
        meta_sam3.load_meta_sam3(toy_checkpoint)


def test_sam3_pt_is_found_in_fiftyone_s_zoo_and_runs_every_sam3_method(monkeypatch, db, offline_hf_hub,
                                                                        toy_checkpoint):
    """FiftyOne's zoo keeps Meta's sam3.pt: with nothing in the Hugging Face cache, ``sam_model="sam3"`` finds it,
    and each action labels every target without a failure on it: text by concept prompt, one-shot on the canvas
    and by the prior, proposals, few-shot by exemplars (the toy's sizes stand in for the released model's, which
    would be 3.4 GB)."""
    import pathlib

    import samtext
    from conftest import make_pets_dataset, pets_stems
    from samtext.models import clear_model_cache
    from samtext.models.weights import resolve_hf_sam

    zoo = pathlib.Path(toy_checkpoint).parent
    monkeypatch.setenv("FIFTYONE_MODEL_ZOO_DIR", str(zoo.parent))
    assert resolve_hf_sam("sam3") == str(zoo / "sam3.pt")
    detector_config, tracker_config = toy_configs(_fixture()["toy"])
    monkeypatch.setattr(meta_sam3, "released_config",
                        lambda part: {"detector": detector_config, "tracker": tracker_config}[part])
    clear_model_cache()
    try:
        ds = make_pets_dataset(pets_stems()[:4])
        n, sam3 = len(ds), dict(sam_model="sam3", device="cpu")
        reference = dict(reference=ds.first().id, reference_field="ground_truth", min_similarity=None)
        summary = samtext.annotate_by_text(ds, "cat", localizer="sam3", threshold=0.0, out_field="text", **sam3)
        assert (summary.labelled, summary.failed) == (n, 0)
        summary = samtext.annotate_by_reference(ds, "cat", method="sam3", out_field="canvas", **reference, **sam3)
        assert (summary.labelled, summary.failed) == (n - 1, 0)
        summary = samtext.annotate_by_reference(ds, "cat", out_field="prior", **reference, **sam3)  # points, boxes
        assert (summary.labelled, summary.failed) == (n - 1, 0)
        summary = samtext.compute_mask_proposals(ds, out_field="props", embedder=None, points_per_side=4,
                                                 pred_iou_thresh=0.0, stability_score_thresh=0.0, min_area=0, **sam3)
        assert (summary.labelled, summary.failed) == (n, 0)
        picked = ds.values("props.detections.id", unwind=True)[:3]
        summary = samtext.annotate_by_examples(ds, {"cat": samtext.Exemplars(label_ids=picked)}, method="sam3",
                                               proposals_field="props", sam3_model="sam3", sam3_threshold=0.0,
                                               device="cpu", out_field="shots")
        assert (summary.labelled, summary.failed) == (n, 0)
    finally:
        clear_model_cache()
