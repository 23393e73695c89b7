"""Meta's own SAM 2.1 checkpoints (FiftyOne's zoo keeps these) load through samtext.models.meta_checkpoints.

tests/data/meta_sam2.1_tiny.pt is a toy-sized SAM 2.1 written by Meta's own code (``sam2`` 1.1.0; random weights)
with the answers of Meta's own image predictor on a fixed image (scripts/make_meta_sam2_fixture.py). Converted,
samtext's SAM 2.1 adapter must give those answers."""

import os

import pytest
import torch

from samtext.errors import SamtextError
from samtext.models import meta_checkpoints as mc

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "data", "meta_sam2.1_tiny.pt")


def _fixture():
    return torch.load(FIXTURE, weights_only=True)["samtext_fixture"]


def _toy_config():
    fx = _fixture()
    return mc.sam2_config(fx["layout"], fx["image_size"], fx["width"])


def test_a_converted_meta_checkpoint_gives_meta_s_own_answers():
    from make_meta_sam2_fixture import fixture_image

    from samtext.models.hf_sam import FAMILIES, HfSamSegmenter

    from _meta_predictors import assert_meta_predictor_answers

    fx = _fixture()
    model = mc.load_meta_sam2(FIXTURE, _toy_config())
    seg = HfSamSegmenter(model, FAMILIES["sam2"], device="cpu", precision="fp32", name="meta-toy")
    assert_meta_predictor_answers(seg, fixture_image(), fx["points"].numpy(), fx["box"].numpy(), fx["answers"],
                                  atol=1e-4)


def test_every_tensor_is_accounted_for():
    """The image model's tensors all come from the checkpoint, the video memory's are the only ones left out."""
    meta = mc.read_meta_checkpoint(FIXTURE)
    state = mc.sam2_state_dict(meta)
    from transformers import Sam2Model

    want = Sam2Model(_toy_config()).state_dict()
    assert set(state) == set(want)
    left_out = {k.split(".")[0] for k in meta if not any(k.startswith(p) for p in (
        "image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed"))}
    assert left_out == {"memory_attention", "memory_encoder", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr",
                        "obj_ptr_proj", "obj_ptr_tpos_proj", "no_obj_embed_spatial", "mask_downsample"}
    point_table = torch.cat([meta["sam_prompt_encoder.point_embeddings.%d.weight" % i] for i in range(4)])
    assert torch.equal(state["prompt_encoder.point_embed.weight"], point_table)
    # a three-layer MLP: first, middle, last
    assert torch.equal(state["mask_decoder.iou_prediction_head.layers.0.weight"],
                       meta["sam_mask_decoder.iou_prediction_head.layers.1.weight"])


@pytest.mark.parametrize("width, blocks, name", [(96, 12, "hiera_tiny"), (96, 16, "hiera_small"),
                                                  (112, 24, "hiera_base_plus"), (144, 48, "hiera_large")])
def test_the_released_models_are_told_apart_by_width_and_depth(width, blocks, name):
    from transformers import Sam2HieraDetConfig

    meta = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(width, 3, 7, 7)}
    meta.update({"image_encoder.trunk.blocks.%d.norm1.weight" % i: torch.zeros(1) for i in range(blocks)})
    layout = mc.sam2_layout(meta)
    assert layout["name"] == name
    backbone = mc.sam2_config(layout).vision_config.backbone_config
    assert backbone.hidden_size == width and sum(backbone.blocks_per_stage) == blocks
    assert backbone.embed_dim_per_stage == [width * 2 ** i for i in range(4)]
    if name == "hiera_tiny":  # transformers' defaults are SAM 2.1 Hiera-T's published config
        default = Sam2HieraDetConfig()
        for key in ("blocks_per_stage", "num_attention_heads_per_stage", "window_size_per_stage",
                    "global_attention_blocks", "window_positional_embedding_background_size", "embed_dim_per_stage"):
            assert list(getattr(backbone, key)) == list(getattr(default, key)), key


def test_what_is_not_a_meta_sam2_checkpoint_is_refused_by_name(tmp_path):
    junk = tmp_path / "sam2.1_hiera_tiny.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SamtextError, match="not a readable PyTorch checkpoint"):
        mc.load_meta_sam2(str(junk))
    sam1 = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 1)}, sam1)
    with pytest.raises(SamtextError, match="not one of Meta's SAM 2 checkpoints"):
        mc.load_meta_sam2(str(sam1))
    with pytest.raises(SamtextError, match="width 8 and 5 blocks, which is none of SAM 2.1's released models"):
        mc.load_meta_sam2(FIXTURE)  # the toy's layout is not a released one: it needs its config
    other = mc.sam2_config(dict(_fixture()["layout"], heads=[1, 1, 1, 1]), 256, 48)
    with pytest.raises(SamtextError, match="does not fit transformers' SAM 2 model: .*of another shape"):
        mc.load_meta_sam2(FIXTURE, other)


def test_sam2_1_weights_are_found_in_fiftyone_s_zoo_and_run_an_action(tmp_path, monkeypatch, db, offline_hf_hub):
    """FiftyOne's zoo keeps Meta's file as sam2.1_hiera_tiny_image.pt: with nothing in the Hugging Face cache,
    ``sam_model="sam2.1_hiera_tiny"`` finds it there, converts it, and labels (the toy's layout stands in for
    Hiera-T's, which would be 156 MB)."""
    import shutil

    import samtext
    from conftest import make_pets_dataset, pets_stems
    from samtext.models import clear_model_cache
    from samtext.models.weights import WeightsUnavailableError, resolve_hf_sam

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    monkeypatch.setenv("FIFTYONE_MODEL_ZOO_DIR", str(zoo))
    with pytest.raises(WeightsUnavailableError, match=r"nor FiftyOne's model zoo \(sam2.1_hiera_tiny_image.pt\)"):
        resolve_hf_sam("sam2.1_hiera_tiny")
    shutil.copy(FIXTURE, zoo / "sam2.1_hiera_tiny_image.pt")
    assert resolve_hf_sam("sam2.1_hiera_tiny") == str(zoo / "sam2.1_hiera_tiny_image.pt")
    toy_layout, toy_config = _fixture()["layout"], _toy_config()
    monkeypatch.setattr(mc, "sam2_layout", lambda state, path="": toy_layout)
    monkeypatch.setattr(mc, "sam2_config", lambda layout, *a, **k: toy_config)
    clear_model_cache()
    try:
        ds = make_pets_dataset(pets_stems()[:4])
        summary = samtext.annotate_by_reference(ds, "cat", reference=ds.first().id, reference_field="ground_truth",
                                                out_field="zoo_sam2", sam_model="sam2.1_hiera_tiny", device="cpu",
                                                min_similarity=None)
        assert summary.failed == 0 and summary.labelled == len(ds) - 1
    finally:
        clear_model_cache()
