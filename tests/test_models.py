"""Model adapters and weights (samtext.models): tiny SAM and CLIP on CPU, SamSegmenter's coordinate frame
against segment_anything's own SamPredictor, precision choices, and checkpoint resolution/download
(no network: urlopen is replaced)."""

import dataclasses
import hashlib
import io
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from samtext.models import (
    ClipModel,
    ImageEmbedding,
    Prediction,
    SamSegmenter,
    WeightsUnavailableError,
    load_clip,
    load_sam,
)
from samtext.models import precision as prec
from samtext.models import registry, weights
from samtext.models.tiny import build_tiny_clip, build_tiny_sam

VIT_B = registry.SAM_MODELS["vit_b"].checkpoint


@pytest.fixture(scope="module")
def sam32():
    """Tiny SAM in fp32 (the session fixture may run bf16 on CPUs with fast bf16)."""
    return SamSegmenter(build_tiny_sam(), device="cpu", precision="fp32", name="tiny")


@pytest.fixture(scope="module")
def clip32():
    model, tokenizer = build_tiny_clip()
    return ClipModel(model, tokenizer, device="cpu", precision="fp32", name="tiny")


def noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------- loaders


def test_tiny_models_build_on_cpu(tiny_sam, tiny_clip):
    assert isinstance(tiny_sam, SamSegmenter) and tiny_sam.device.type == "cpu"
    assert tiny_sam.name == "tiny" and tiny_sam.precision in ("fp32", "bf16")
    assert tiny_sam.feature_stride == 16 and tiny_sam.image_size == 256
    assert isinstance(tiny_clip, ClipModel) and tiny_clip.device.type == "cpu" and tiny_clip.name == "tiny"
    assert load_sam("tiny", device="cpu") is tiny_sam  # cached
    assert load_clip("tiny", device="cpu") is tiny_clip


def test_load_sam_rejects_unknown_names():
    with pytest.raises(ValueError, match="vit_b"):
        load_sam("vit_q", device="cpu", precision="fp32")


def test_load_tiny_sam_from_a_state_dict(tmp_path):
    other = build_tiny_sam(seed=1)
    state = other.state_dict()
    path = str(tmp_path / "tiny.pth")
    torch.save(state, path)
    seg = load_sam("tiny", checkpoint=path, device="cpu", precision="fp32")
    for k, v in seg.sam.state_dict().items():
        assert torch.equal(v, state[k]), k
    # a checkpoint wrapped as {"model": state_dict} loads too
    wrapped = str(tmp_path / "wrapped.pth")
    torch.save({"model": state, "epoch": 3}, wrapped)
    seg2 = load_sam("tiny", checkpoint=wrapped, device="cpu", precision="fp32")
    name = "image_encoder.patch_embed.proj.weight"
    assert torch.equal(seg2.sam.state_dict()[name], state[name])
    assert not torch.equal(build_tiny_sam(seed=0).state_dict()[name], state[name])


def test_load_vit_b_offline_names_the_file(offline):
    with pytest.raises(WeightsUnavailableError, match=VIT_B.filename):
        load_sam("vit_b", device="cpu", precision="fp32")


# --------------------------------------------------------------------------------------------- SAM


def test_embed_shapes(sam32):
    emb = sam32.embed(noise(37, 250))
    assert isinstance(emb, ImageEmbedding)
    assert emb.features.shape == (1, 32, 16, 16) and emb.features.dtype == torch.float32
    assert emb.original_size == (37, 250) and emb.input_size == (38, 256)
    assert sam32.valid_grid(emb) == (3, 16)
    emb = sam32.embed(noise(600, 41))
    assert emb.input_size == (256, 17) and sam32.valid_grid(emb) == (16, 2)


def test_embed_rejects_non_rgb(sam32):
    with pytest.raises(ValueError):
        sam32.embed(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        sam32.embed(np.zeros((10, 10, 3), np.float32))


def test_predict_matches_segment_anythings_predictor(sam32):
    """The adapter's frame conversions equal segment_anything's own SamPredictor, exactly."""
    from segment_anything import SamPredictor

    img = noise(100, 300, seed=3)
    emb = sam32.embed(img)
    ref = SamPredictor(sam32.sam)
    ref.set_image(img)
    assert torch.equal(ref.features, emb.features)
    pts, lbl = np.array([[50.0, 40.0], [200.0, 70.0]]), np.array([1, 0])
    masks, scores, low = ref.predict(point_coords=pts, point_labels=lbl, multimask_output=True)
    pred = sam32.predict(emb, pts[None], lbl[None], multimask=True)
    assert np.array_equal(pred.masks[0], masks)
    np.testing.assert_allclose(pred.scores[0], scores, atol=1e-6)
    np.testing.assert_allclose(pred.low_res_logits[0].numpy(), low, atol=1e-5)
    box = np.array([20.0, 10.0, 150.0, 90.0])
    masks, scores, _ = ref.predict(point_coords=pts, point_labels=lbl, box=box, mask_input=low[:1],
                                   multimask_output=False)
    pred = sam32.predict(emb, pts[None], lbl[None], boxes=box[None], mask_logits=pred.low_res_logits[:, :1])
    assert np.array_equal(pred.masks[0], masks)
    np.testing.assert_allclose(pred.scores[0], scores, atol=1e-6)


def _check_prediction(pred, n, m, h, w, low_hw=(64, 64)):
    assert isinstance(pred, Prediction)
    assert pred.masks.shape == (n, m, h, w) and pred.masks.dtype == bool
    assert pred.scores.shape == (n, m) and pred.scores.dtype == np.float32
    assert pred.logits.shape == (n, m, h, w) and pred.logits.dtype == torch.float32
    assert pred.low_res_logits.shape == (n, m) + low_hw and pred.low_res_logits.dtype == torch.float32
    assert np.array_equal(pred.masks, (pred.logits > 0).numpy())


def test_predict_batched_prompts(sam32):
    h, w = 90, 140
    emb = sam32.embed(noise(h, w, seed=4))
    pts = np.array([[[10, 10], [100, 50]], [[70, 20], [5, 80]], [[139, 89], [0, 0]]], dtype=np.float32)
    lbl = np.array([[1, 0], [1, 1], [1, 0]])
    _check_prediction(sam32.predict(emb, pts, lbl), 3, 1, h, w)
    _check_prediction(sam32.predict(emb, pts, lbl, multimask=True), 3, 3, h, w)
    boxes = np.array([[0, 0, 50, 50], [20, 30, 139, 89], [60, 10, 80, 70]], dtype=np.float32)
    _check_prediction(sam32.predict(emb, boxes=boxes), 3, 1, h, w)
    first = sam32.predict(emb, pts, lbl, boxes=boxes)
    _check_prediction(first, 3, 1, h, w)
    again = sam32.predict(emb, pts, lbl, boxes=boxes, mask_logits=first.low_res_logits)
    _check_prediction(again, 3, 1, h, w)
    # each prompt of a batch decodes as it would alone
    alone = sam32.predict(emb, pts[1:2], lbl[1:2], boxes=boxes[1:2])
    np.testing.assert_allclose(alone.logits[0].numpy(), first.logits[1].numpy(), atol=1e-4)


@pytest.mark.parametrize("h, w, valid", [(100, 300, (6, 16)), (300, 100, (16, 6))])
def test_mask_to_grid_and_grid_to_point_round_trip(sam32, h, w, valid):
    """Non-square images (input frames 85x256 and 256x85): a cell is 300/256*16 = 18.75 original pixels."""
    emb = sam32.embed(noise(h, w, seed=5))
    gh, gw = sam32.valid_grid(emb)
    assert (gh, gw) == valid
    square = np.zeros((h, w), bool)
    if h < w:
        square[30:75, 190:235] = True
    else:
        square[190:235, 30:75] = True
    grid = sam32.mask_to_grid(square, emb)
    assert grid.shape == (16, 16)
    assert grid[gh:].abs().sum() == 0 and grid[:, gw:].abs().sum() == 0  # padding cells
    assert float(grid.max()) == pytest.approx(1.0, abs=1e-4)
    scale = 256 / 300
    assert float(grid.sum()) * 16**2 == pytest.approx(square.sum() * scale**2, rel=0.02)
    r, c = divmod(int(grid.argmax()), grid.shape[1])
    x, y = sam32.grid_to_point(r, c, emb)
    assert square[int(y), int(x)], (r, c, x, y)
    # a small disc around a cell's point maps back to that cell, edge cells (partly padding) included
    yy, xx = np.mgrid[:h, :w]
    for r, c in [(0, 0), (2, 3), (gh - 1, gw - 1), (gh - 1, 0), (0, gw - 1), (gh // 2, gw // 2)]:
        x, y = sam32.grid_to_point(r, c, emb)
        assert 0 <= x < w and 0 <= y < h
        disc = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= 16
        g = sam32.mask_to_grid(disc, emb)
        assert divmod(int(g.argmax()), g.shape[1]) == (r, c)


def test_precisions_give_close_features():
    img = noise(120, 90, seed=6)
    f32 = SamSegmenter(build_tiny_sam(), precision="fp32").embed(img).features
    bf16 = SamSegmenter(build_tiny_sam(), precision="bf16").embed(img).features
    assert f32.dtype == bf16.dtype == torch.float32 and f32.shape == bf16.shape
    assert not torch.equal(f32, bf16)  # bf16 really ran
    cos = torch.nn.functional.cosine_similarity(f32, bf16, dim=1)
    assert float(cos.min()) > 0.98
    assert float((f32 - bf16).abs().max()) < 0.1 * float(f32.abs().max())


# -------------------------------------------------------------------------------------------- CLIP


def test_clip_embeddings_and_probabilities(clip32):
    imgs = [noise(37, 250, 1), noise(600, 41, 2), noise(64, 64, 3), noise(5, 7, 4)]
    x = clip32.preprocess(imgs)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    emb = clip32.encode_images(imgs)
    assert emb.shape == (4, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    # batching does not change the answers
    torch.testing.assert_close(clip32.encode_images(imgs, batch_size=3), emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clip32.encode_images(imgs[1:2])[0], emb[1], atol=1e-5, rtol=1e-5)
    p = clip32.class_probability(emb, "cat")
    assert p.shape == (4,) and bool(((p > 0) & (p < 1)).all())
    assert not torch.allclose(p, clip32.class_probability(emb, "a very different text"))
    t = clip32.encode_texts(["a photo of a cat.", "dog"])
    assert t.shape == (2, 32)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(2))


# --------------------------------------------------------------------------------------- precision


def test_resolve_precision(monkeypatch):
    assert prec.resolve_precision("fp32", "cpu") == "fp32"
    assert prec.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16"):
        prec.resolve_precision("fp16", "cpu")
    monkeypatch.setattr(prec, "cpu_has_fast_bf16", lambda: True)
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(prec, "cpu_has_fast_bf16", lambda: False)
    assert prec.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prec.resolve_precision("auto", "cuda") == "bf16"
    assert prec.resolve_precision("auto", torch.device("cuda:0")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert prec.resolve_precision("auto", "cuda") == "fp32"
    assert prec.resolve_precision("fp32", "cuda") == "fp32"


def test_resolve_device_and_autocast(monkeypatch):
    assert prec.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert prec.resolve_device("auto") == "cpu" and prec.resolve_device(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert prec.resolve_device("auto") == "cuda"
    a = torch.ones(4, 4)
    with prec.autocast("cpu", "fp32"):
        assert (a @ a).dtype == torch.float32
    with prec.autocast("cpu", "bf16"):
        assert (a @ a).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------- weights


@pytest.fixture
def no_caches(tmp_path, monkeypatch):
    """Empty samtext cache and FiftyOne zoo folders, no env override."""
    cache, zoo = tmp_path / "cache", tmp_path / "zoo"
    cache.mkdir()
    zoo.mkdir()
    monkeypatch.setenv("SAMTEXT_CACHE_DIR", str(cache))
    monkeypatch.setenv("FIFTYONE_MODEL_ZOO_DIR", str(zoo))
    monkeypatch.delenv("SAMTEXT_SAM_VIT_B_CHECKPOINT", raising=False)
    return cache, zoo


@pytest.fixture
def offline(no_caches, monkeypatch):
    calls = []

    def urlopen(url, *a, **k):
        calls.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


class FakeResponse(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def serve(monkeypatch, data):
    calls = []

    def urlopen(url, *a, **k):
        calls.append(url)
        return FakeResponse(data)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_explicit_checkpoint(tmp_path, offline):
    path = tmp_path / "mine.pth"
    path.write_bytes(b"x")
    assert weights.resolve_sam_checkpoint("vit_b", str(path)) == str(path)
    with pytest.raises(WeightsUnavailableError, match="nope.pth"):
        weights.resolve_sam_checkpoint("vit_b", str(tmp_path / "nope.pth"))
    assert offline == []


def test_env_var_checkpoint(tmp_path, monkeypatch, offline):
    path = tmp_path / "env.pth"
    path.write_bytes(b"x")
    monkeypatch.setenv("SAMTEXT_SAM_VIT_B_CHECKPOINT", str(path))
    assert weights.resolve_sam_checkpoint("vit_b") == str(path)
    monkeypatch.setenv("SAMTEXT_SAM_VIT_B_CHECKPOINT", str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsUnavailableError, match="SAMTEXT_SAM_VIT_B_CHECKPOINT"):
        weights.resolve_sam_checkpoint("vit_b")
    assert offline == []


def test_cache_dir_checkpoint(no_caches, offline):
    cache, zoo = no_caches
    (cache / "sam").mkdir()
    target = cache / "sam" / VIT_B.filename
    target.write_bytes(b"x")
    (zoo / "sam").mkdir()
    (zoo / "sam" / VIT_B.filename).write_bytes(b"x")  # the cache comes first
    assert weights.cache_dir() == str(cache)
    assert weights.resolve_sam_checkpoint("vit_b") == str(target)
    assert offline == []


def test_fiftyone_zoo_checkpoint(no_caches, offline):
    _, zoo = no_caches
    (zoo / "other-model.pth").write_bytes(b"x")  # a folder with other files comes first in the walk
    nested = zoo / "segment-anything-vitb-torch"
    nested.mkdir()
    (nested / VIT_B.filename).write_bytes(b"x")
    (nested / registry.SAM_MODELS["vit_l"].checkpoint.filename).write_bytes(b"x")
    assert weights.resolve_sam_checkpoint("vit_b") == str(nested / VIT_B.filename)
    assert offline == []


def test_offline_error_says_what_to_do(no_caches, offline):
    cache, _ = no_caches
    with pytest.raises(WeightsUnavailableError) as e:
        weights.resolve_sam_checkpoint("vit_b")
    msg = str(e.value)
    assert VIT_B.filename in msg and VIT_B.url in msg
    assert os.path.join(str(cache), "sam") in msg
    assert "SAMTEXT_SAM_VIT_B_CHECKPOINT" in msg
    assert offline == [VIT_B.url]
    assert os.listdir(cache / "sam") == []  # no partial file left behind


def test_no_download_means_no_network(no_caches, offline):
    with pytest.raises(WeightsUnavailableError, match=VIT_B.filename):
        weights.resolve_sam_checkpoint("vit_b", download=False)
    assert offline == []


def test_unknown_model_name(no_caches):
    with pytest.raises(ValueError, match="vit_b"):
        weights.resolve_sam_checkpoint("vit_x")


def test_download_md5_mismatch_leaves_nothing(tmp_path, monkeypatch):
    data = b"not the checkpoint" * 1000
    served = serve(monkeypatch, data)
    dest = tmp_path / "sam" / VIT_B.filename
    with pytest.raises(WeightsUnavailableError, match="MD5"):
        weights.download_checkpoint(VIT_B, str(dest), "vit_b")
    assert served == [VIT_B.url]
    assert not dest.exists() and os.listdir(tmp_path / "sam") == []


def test_download_md5_match_puts_the_file_in_place(no_caches, monkeypatch):
    cache, _ = no_caches
    data = os.urandom(3 * (1 << 20) + 17)  # several read blocks
    md5 = hashlib.md5(data).hexdigest()
    ckpt = dataclasses.replace(VIT_B, md5=md5)
    monkeypatch.setitem(registry.SAM_MODELS, "vit_b", dataclasses.replace(registry.SAM_MODELS["vit_b"], checkpoint=ckpt))
    served = serve(monkeypatch, data)
    path = weights.resolve_sam_checkpoint("vit_b")
    assert path == str(cache / "sam" / VIT_B.filename)
    with open(path, "rb") as f:
        assert f.read() == data
    assert weights.md5sum(path) == md5
    assert os.listdir(cache / "sam") == [VIT_B.filename]
    # next time it comes from the cache, without the network
    assert weights.resolve_sam_checkpoint("vit_b") == path
    assert served == [VIT_B.url]


def test_clip_weights_offline_error_names_model_source_and_folder(tmp_path, monkeypatch):
    import open_clip

    from samtext.models.weights import WeightsUnavailableError, resolve_clip_weights

    monkeypatch.setenv("SAMTEXT_CACHE_DIR", str(tmp_path))

    def offline(cfg, cache_dir=None, **kwargs):
        assert cache_dir == str(tmp_path / "clip")  # open_clip downloads into samtext's cache folder
        raise OSError("Name or service not known")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_clip_weights("ViT-B-32", "openai")
    msg = str(err.value)
    assert "ViT-B-32/openai" in msg and "download-weights --clip ViT-B-32:openai" in msg
    assert str(tmp_path / "clip") in msg and "Name or service not known" in msg


def test_clip_weights_path_and_unknown_tag(tmp_path):
    from samtext.models.weights import resolve_clip_weights

    weights = tmp_path / "my_clip.bin"
    weights.write_bytes(b"x")
    assert resolve_clip_weights("ViT-B-32", str(weights)) == str(weights)
    with pytest.raises(ValueError, match="no weights 'nope'"):
        resolve_clip_weights("ViT-B-32", "nope")
