"""CLIP loaded as its weights expect: a tag (or a local file of that tag) gives the same model and image
transform as open_clip with that tag and the settings the tag declares (QuickGELU, mean/std, interpolation,
resize mode). open_clip 3.3 itself, asked for ``ViT-B-32`` with the ``openai`` tag, builds GELU and only warns;
so the reference here is ``open_clip.create_model_and_transforms(name, pretrained=tag, force_quick_gelu=<the
tag's quick_gelu>)``. Weights are random, saved to a file that open_clip's registry resolves the tag to (its
``file`` entry), so nothing is downloaded."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PETS

STEMS = ("cat_001", "dog_000", "cat_059")


def _images():
    from samtext.images import load_image

    return [load_image(os.path.join(PETS, "images", s + ".jpg")) for s in STEMS]


def _reference_embeddings(model, preprocess, images):
    """What a user of open_clip computes: its transform on PIL images, encode_image, unit vectors."""
    with torch.no_grad():
        x = torch.stack([preprocess(Image.fromarray(im)) for im in images])
        return torch.nn.functional.normalize(model.encode_image(x), dim=-1)


def _activations(model):
    return {type(m).__name__ for m in model.visual.modules() if "GELU" in type(m).__name__}


@pytest.fixture(scope="module")
def vit_b32_file(tmp_path_factory):
    """Random ViT-B-32 weights (QuickGELU, as the openai tag's) in a state-dict file."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    del model
    return str(path)


def resolve_tag_to(monkeypatch, model, tag, path):
    """Makes open_clip resolve the weights ``tag`` of ``model`` to the local file ``path``: its registry
    entry's ``file`` (open_clip 3), and its download function where it is looked up (open_clip 2 has no
    ``file``)."""
    import open_clip

    monkeypatch.setitem(open_clip.pretrained._PRETRAINED[model][tag], "file", path)
    original = open_clip.pretrained.download_pretrained

    def download(cfg, *args, **kwargs):
        return cfg["file"] if cfg.get("file") else original(cfg, *args, **kwargs)

    for module in (open_clip, open_clip.pretrained, open_clip.factory):
        if hasattr(module, "download_pretrained"):
            monkeypatch.setattr(module, "download_pretrained", download)


@pytest.fixture
def openai_tag_is(monkeypatch):
    """Makes open_clip resolve ``ViT-B-32``/``openai`` to a local file; forgets samtext's cached models."""
    from samtext.models import clear_model_cache

    def point(path):
        resolve_tag_to(monkeypatch, "ViT-B-32", "openai", path)

    clear_model_cache()
    yield point
    clear_model_cache()


def test_vit_b32_openai_tag_gives_open_clips_model_and_transform(vit_b32_file, openai_tag_is):
    import open_clip

    from samtext.models import load_clip

    openai_tag_is(vit_b32_file)
    images = _images()
    ref_model, _, ref_pre = open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai",
                                                                  force_quick_gelu=True)
    ref_model.eval()
    expected = _reference_embeddings(ref_model, ref_pre, images)
    assert _activations(ref_model) == {"QuickGELU"}

    clip = load_clip("ViT-B-32", "openai", device="cpu", precision="fp32")
    assert _activations(clip.model) == {"QuickGELU"}, "the openai weights were trained with QuickGELU"
    assert str(clip.transform) == str(ref_pre)
    torch.testing.assert_close(clip.preprocess(images), torch.stack([ref_pre(Image.fromarray(im)) for im in images]))
    torch.testing.assert_close(clip.encode_images(images), expected, atol=1e-5, rtol=1e-4)
    assert clip.name == "ViT-B-32/openai"

    # what samtext did before: the tag resolved to a file and the file passed as `pretrained` -> GELU
    old = open_clip.create_model("ViT-B-32", pretrained=vit_b32_file).eval()
    assert _activations(old) == {"GELU"}
    assert not torch.allclose(_reference_embeddings(old, ref_pre, images), expected, atol=1e-3)


def test_a_local_file_of_the_tag_gives_the_same_model(vit_b32_file, openai_tag_is, tmp_path):
    import open_clip

    from samtext.models import clear_model_cache, load_clip

    openai_tag_is(vit_b32_file)
    images = _images()
    expected = load_clip("ViT-B-32", "openai", device="cpu", precision="fp32").encode_images(images)
    # the tag and a local file of it (clip_checkpoint), no download
    elsewhere = tmp_path / "my_vitb32.bin"
    shutil.copy(vit_b32_file, elsewhere)
    openai_tag_is("/nonexistent/file")  # a download would fail now
    clear_model_cache()
    clip = load_clip("ViT-B-32", "openai", device="cpu", precision="fp32", checkpoint=str(elsewhere))
    assert _activations(clip.model) == {"QuickGELU"}
    torch.testing.assert_close(clip.encode_images(images), expected, atol=1e-5, rtol=1e-4)
    # a file alone, from Hugging Face's cache folder of the tag's repository: the tag is recognised
    hub = tmp_path / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc"
    hub.mkdir(parents=True)
    shutil.copy(vit_b32_file, hub / "open_clip_pytorch_model.bin")
    clear_model_cache()
    clip = load_clip("ViT-B-32", str(hub / "open_clip_pytorch_model.bin"), device="cpu", precision="fp32")
    assert clip.name == "ViT-B-32/openai" and _activations(clip.model) == {"QuickGELU"}
    torch.testing.assert_close(clip.encode_images(images), expected, atol=1e-5, rtol=1e-4)


def test_a_tags_own_preprocessing_is_used(monkeypatch, tmp_path):
    """A (registered here) tag with its own mean, std, interpolation and resize mode, on a small model."""
    import open_clip
    from open_clip.pretrained import _pcfg

    from samtext.models import clear_model_cache, load_clip

    cfg = dict(embed_dim=32, vision_cfg=dict(image_size=64, layers=2, width=64, head_width=32, patch_size=16),
               text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "samtext-test-mini", cfg)
    torch.manual_seed(1)
    model = open_clip.create_model("samtext-test-mini", pretrained=None, force_quick_gelu=True)
    path = tmp_path / "mini.bin"
    torch.save(model.state_dict(), path)
    tag = _pcfg(file=str(path), quick_gelu=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                interpolation="bilinear", resize_mode="squash")
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "samtext-test-mini", {"mine": tag})
    resolve_tag_to(monkeypatch, "samtext-test-mini", "mine", str(path))
    clear_model_cache()
    try:
        ref_model, _, ref_pre = open_clip.create_model_and_transforms("samtext-test-mini", pretrained="mine",
                                                                      force_quick_gelu=True)
        images = _images()
        clip = load_clip("samtext-test-mini", "mine", device="cpu", precision="fp32")
        assert str(clip.transform) == str(ref_pre)
        assert "bilinear" in str(clip.transform) and "(0.5, 0.5, 0.5)" in str(clip.transform)
        torch.testing.assert_close(clip.encode_images(images), _reference_embeddings(ref_model.eval(), ref_pre, images),
                                   atol=1e-5, rtol=1e-4)
        # a non-square image is squashed, not centre-cropped, as the tag says
        wide = np.zeros((40, 200, 3), np.uint8)
        wide[:, :20] = 255
        assert float(clip.preprocess([wide])[0, 0, :, :3].mean()) > 0  # the left edge survives
    finally:
        clear_model_cache()


def test_clip_bf16_really_runs_in_bf16():
    """The towers' matmuls run in bfloat16 under precision="bf16" (and in float32 under "fp32"); the
    embeddings come back as float32 either way."""
    from samtext.models import ClipModel
    from samtext.models.tiny import build_tiny_clip

    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.dtype

        return hook

    images = [np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)]
    out = {}
    for precision in ("fp32", "bf16"):
        model, tokenizer = build_tiny_clip()
        clip = ClipModel(model, tokenizer, precision=precision)
        handle = clip.model.visual.transformer.resblocks[0].mlp.c_fc.register_forward_hook(record(precision))
        out[precision] = clip.encode_images(images)
        handle.remove()
        assert out[precision].dtype == torch.float32
    assert seen == {"fp32": torch.float32, "bf16": torch.bfloat16}
    assert not torch.equal(out["fp32"], out["bf16"])
    torch.testing.assert_close(out["fp32"], out["bf16"], atol=0.05, rtol=0.05)
