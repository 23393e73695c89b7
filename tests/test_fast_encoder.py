"""The encoder's fast path (samtext.models.fast_encoder), preparing images ahead (SamSegmenter.prepare and the
driver's loader thread, samtext.run.prefetch) and MobileSAM (samtext.models.mobilesam): same features and masks as
the plain path, within tolerance, on real images; MobileSAM's adapter against mobile_sam's own predictor."""

import os
import subprocess
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PETS, make_pets_dataset, pets_stems
from samtext.models import SamSegmenter, load_sam
from samtext.models import fast_encoder as fe
from samtext.models import registry, weights
from samtext.models.mobilesam import build_mobile_sam
from samtext.models.tiny import build_tiny_sam
from samtext.run.prefetch import Prefetcher


def pets_image(stem):
    return np.asarray(Image.open(os.path.join(PETS, "images", stem + ".jpg")).convert("RGB"))


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def images():
    return [pets_image(s) for s in pets_stems("unlabeled", n=3)]


# ------------------------------------------------------------------------------------------ fast path


def test_fused_attention_equals_sams(images):
    """fp32 fast path (fused attention in the windowed and the global block) = plain encoder, to rounding; and
    with the global block's mask cut into several query chunks."""
    plain = SamSegmenter(build_tiny_sam(), precision="fp32")
    fast = SamSegmenter(build_tiny_sam(), precision="fp32", fast_encoder=True)
    assert fast.fast.fused_blocks == 2 and "fused attention x2" in fast.describe_encoder()
    for image in images:
        a, b = plain.embed(image).features, fast.embed(image).features
        assert a.shape == b.shape == (1, 32, 16, 16) and b.dtype == torch.float32
        assert rel_l2(b, a) < 1e-5
    # the state dict is SAM's: the fused model loads and gives back the same weights
    assert set(fast.sam.state_dict()) == set(plain.sam.state_dict())


def test_fused_attention_in_query_chunks(images, monkeypatch):
    fast = SamSegmenter(build_tiny_sam(), precision="fp32", fast_encoder=True)
    whole = fast.embed(images[0]).features
    sdpa, queries = torch.nn.functional.scaled_dot_product_attention, []

    def counting(q, k, v, attn_mask=None):
        queries.append(q.shape[2])
        return sdpa(q, k, v, attn_mask=attn_mask)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    # the global block (2 heads, a 16x16 grid, 256 keys): 3 rows of 16 queries per chunk, the last one 1 row
    monkeypatch.setattr(fe, "MASK_BUDGET", 3 * 2 * 16 * 256)
    chunked = fast.embed(images[0]).features
    assert queries == [16] + [48] * 5 + [16]  # the windowed block (16 queries a window) whole, the global in 6
    assert rel_l2(chunked, whole) < 1e-6
    with torch.no_grad():  # the reused mask buffer: the same terms every call, nothing left from the last one
        q = torch.randn(1, 2, 48, 8)
        rel_h, rel_w = torch.randn(3, 16, 8), torch.randn(16, 16, 8)
        first = fe.rel_pos_bias(q, rel_h, rel_w).clone()
        fe.rel_pos_bias(torch.randn(1, 2, 48, 8), rel_h, rel_w)
        assert torch.equal(fe.rel_pos_bias(q, rel_h, rel_w), first)


def test_rel_pos_bias_equals_sams_terms():
    from segment_anything.modeling.image_encoder import add_decomposed_rel_pos, get_rel_pos

    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5 * 7, 8, generator=g)
    rel_h, rel_w = torch.randn(9, 8, generator=g), torch.randn(13, 8, generator=g)
    expected = add_decomposed_rel_pos(torch.zeros(6, 35, 35), q.reshape(6, 35, 8), rel_h, rel_w, (5, 7), (5, 7))
    got = fe.rel_pos_bias(q, get_rel_pos(5, 5, rel_h), get_rel_pos(7, 7, rel_w))
    assert torch.allclose(got.reshape(6, 35, 35), expected, atol=1e-5)


def test_bf16_weights_within_tolerance(images):
    """bf16 weights (the fast path where the hardware has fast bf16) stay close to fp32 features; the run
    records say which path ran."""
    plain = SamSegmenter(build_tiny_sam(), precision="fp32")
    fast = SamSegmenter(build_tiny_sam(), precision="bf16", fast_encoder=True)
    assert fast.describe_encoder() == "fused attention x2, bf16 weights"
    assert next(fast.sam.image_encoder.blocks.parameters()).dtype == torch.bfloat16
    assert next(fast.sam.image_encoder.neck.parameters()).dtype == torch.float32
    for image in images:
        a, b = plain.embed(image).features, fast.embed(image).features
        assert b.dtype == torch.float32 and 0 < rel_l2(b, a) < 0.03


@pytest.mark.parametrize("action", ["reference", "text", "proposals"])
def test_actions_give_the_same_masks_on_both_paths(action, db, monkeypatch):
    """Every SAM action, run through the driver (loader thread, prepared images) on real images with the tiny
    models: the fast path's masks equal the plain path's (fp32: only rounding differs)."""
    import samtext

    stems = pets_stems("unlabeled", n=4)
    ds = make_pets_dataset(stems)
    ref = ds.first()
    masks = {}
    for path in ("plain", "fast"):
        monkeypatch.setenv("SAMTEXT_FAST_ENCODER", "1" if path == "fast" else "0")  # load_sam's default
        field = "out_" + path
        common = dict(out_field=field, sam_model="tiny", device="cpu", precision="fp32")
        if action == "reference":
            samtext.annotate_by_reference(ds, "cat", reference=ref.id, reference_field="ground_truth",
                                          min_similarity=None, **common)
        elif action == "text":
            samtext.annotate_by_text(ds, "cat", clip_model="tiny", threshold=0.0, **common)
        else:
            samtext.compute_mask_proposals(ds, embedder="sam", pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                           **common)
        assert samtext.models.load_sam("tiny", device="cpu", precision="fp32").describe_encoder().startswith(
            "fused" if path == "fast" else "plain")
        masks[path] = {s.id: s[field] for s in ds.select_fields(field) if s[field] is not None}
    assert set(masks["plain"]) == set(masks["fast"]) and len(masks["plain"]) >= 3
    for sid, plain in masks["plain"].items():
        fast = masks["fast"][sid]
        if action == "proposals":  # fo.Detections: the same proposals, boxes and scores
            assert len(plain.detections) == len(fast.detections) > 0, sid
            for a, b in zip(plain.detections, fast.detections):
                assert np.allclose(a.bounding_box, b.bounding_box, atol=2e-3)
                assert abs(a.confidence - b.confidence) < 1e-3
        else:
            assert plain.mask.shape == fast.mask.shape
            assert (plain.mask != fast.mask).mean() < 1e-3, sid


def test_compile_only_for_runs_that_plan_enough_images(monkeypatch):
    fast = fe.FastEncoder(build_tiny_sam().image_encoder, "fp32", "cpu")
    monkeypatch.delenv("SAMTEXT_COMPILE_ENCODER", raising=False)
    assert not fast.wants_compile()
    monkeypatch.setitem(fe.COMPILE_MIN_IMAGES, "cpu", 100)
    with fe.encoder_workload(10):
        assert fe.planned_images() == 10 and not fast.wants_compile()
        with fe.encoder_workload(100):
            assert fast.wants_compile()
        assert fe.planned_images() == 10
    assert fe.planned_images() == 0
    outer, inner = fe.encoder_workload(100), fe.encoder_workload(10)  # two runs that end out of order
    outer.__enter__(), inner.__enter__()
    outer.__exit__(None, None, None)
    assert fe.planned_images() == 10
    inner.__exit__(None, None, None)
    assert fe.planned_images() == 0
    monkeypatch.setitem(fe.COMPILE_MIN_IMAGES, "cpu", None)  # the default: a CPU compiles only when told to
    with fe.encoder_workload(10 ** 6):
        assert not fast.wants_compile()
    monkeypatch.setenv("SAMTEXT_COMPILE_ENCODER", "always")
    assert fast.wants_compile()
    monkeypatch.setenv("SAMTEXT_COMPILE_ENCODER", "never")
    with fe.encoder_workload(10 ** 6):
        assert not fast.wants_compile()
    monkeypatch.setenv("SAMTEXT_COMPILE_ENCODER", "sometimes")
    with pytest.raises(ValueError, match="auto, always or never"):
        fast.wants_compile()


def test_compiled_encoder_gives_the_same_features(images, monkeypatch):
    """torch.compile of the fast path (inductor) compiles once per shape, reports its first-call cost and keeps
    the features; a compiler that fails leaves the eager path working."""
    monkeypatch.setenv("SAMTEXT_COMPILE_ENCODER", "always")
    fast = SamSegmenter(build_tiny_sam(), precision="fp32", fast_encoder=True)
    eager = fast.fast.eager(fast.encoder_input(images[0])[0])
    first = fast.embed(images[0]).features
    assert fast.fast.compile_seconds is not None and fast.fast.compile_seconds > 0
    assert "compiled" in fast.describe_encoder()
    assert rel_l2(first, eager) < 1e-4
    seconds = fast.fast.compile_seconds
    assert rel_l2(fast.embed(images[1]).features, fast.fast.eager(fast.encoder_input(images[1])[0])) < 1e-4
    assert fast.fast.compile_seconds == seconds  # same shape: compiled once

    broken = SamSegmenter(build_tiny_sam(), precision="fp32", fast_encoder=True)
    tries = []

    def failing(x):
        tries.append(1)
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: failing)
    for image in images[:2]:
        out = broken.embed(image).features
    assert rel_l2(out, broken.fast.eager(broken.encoder_input(images[1])[0])) < 1e-5
    assert tries == [1] and "compiled" not in broken.describe_encoder()  # tried once, then eager


# ---------------------------------------------------------------------------------------- prepared ahead


def test_prepared_images_are_taken_by_embed(images, monkeypatch):
    seg = SamSegmenter(build_tiny_sam(), precision="fp32", fast_encoder=True)
    calls = []
    original = seg.encoder_input
    monkeypatch.setattr(seg, "encoder_input", lambda im: calls.append(1) or original(im))
    seg.prepare(images[:2] + [np.zeros((4, 4), np.uint8)])  # not RGB: left for embed to refuse
    assert len(calls) == 2
    expected = SamSegmenter(build_tiny_sam(), precision="fp32", fast_encoder=True).embed(images[0]).features
    assert torch.equal(seg.embed(images[0]).features, expected)
    assert len(calls) == 2  # prepared: not preprocessed again
    seg.embed(images[0])
    assert len(calls) == 3  # taken once; a second embed does the work
    copy = images[1].copy()  # another array with the same pixels is not the prepared one
    seg.embed(copy)
    assert len(calls) == 4
    with pytest.raises(ValueError, match="uint8 RGB"):
        seg.embed(np.zeros((4, 4), np.uint8))


def test_the_driver_prepares_ahead_and_says_how_many_images_a_run_encodes(db, monkeypatch):
    import samtext

    ds = make_pets_dataset(pets_stems("unlabeled", n=4))
    seg = load_sam("tiny", device="cpu")
    planned, prepared, threads = [], [], set()
    encode, prepare = SamSegmenter.encode, SamSegmenter.prepare
    monkeypatch.setattr(SamSegmenter, "encode", lambda self, x: planned.append(fe.planned_images()) or encode(self, x))

    def watch(self, images):
        threads.add(threading.current_thread().name)
        prepared.extend(id(im) for im in images)
        return prepare(self, images)

    monkeypatch.setattr(SamSegmenter, "prepare", watch)
    summary = samtext.annotate_by_reference(ds, "cat", reference=ds.first().id, reference_field="ground_truth",
                                            sam_model="tiny", device="cpu", out_field="ahead")
    assert summary.labelled == 3
    assert planned[-3:] == [3, 3, 3] and fe.planned_images() == 0  # the reference itself is encoded before
    assert len(prepared) == 3 and threads == {"samtext-prefetch"}
    assert not seg._prepared  # each prepared image was taken by its embed


def test_batched_encoder_equals_one_by_one(images):
    seg = SamSegmenter(build_tiny_sam(), precision="fp32", fast_encoder=True, encoder_batch=2)
    single = [seg.embed(im) for im in images]
    batched = seg.embed_batch(images)
    assert len(batched) == 3
    for a, b, im in zip(single, batched, images):
        assert b.original_size == im.shape[:2] and b.input_size == a.input_size
        assert rel_l2(b.features, a.features) < 1e-5
    seg.prepare(images)  # encoder_batch 2: the encoder ran on the loader's batch already
    assert all(isinstance(seg._prepared[id(im)][1], type(single[0])) for im in images)
    assert rel_l2(seg.embed(images[2]).features, single[2].features) < 1e-5
    seg.discard_prepared()  # a run that stopped early leaves nothing behind
    assert not seg._prepared


def test_prefetcher_keeps_order_carries_errors_and_batches():
    seen_batches, threads = [], set()

    def load(sid, path):
        threads.add(threading.current_thread().name)
        if sid == "bad":
            raise OSError("cannot read %s" % path)
        return sid.upper()

    items = [("a", "1"), ("bad", "2"), ("c", "3"), ("d", "4"), ("e", "5")]
    with Prefetcher(items, load, prepare=seen_batches.append, batch=2) as feed:
        out = list(feed)
    assert [o[0] for o in out] == ["a", "bad", "c", "d", "e"]
    assert out[0][2] == "A" and out[1][2] is None and isinstance(out[1][3], OSError)
    assert seen_batches == [["A"], ["C", "D"], ["E"]]  # the failed sample is not prepared
    assert threads == {"samtext-prefetch"}


def test_prefetcher_stops_when_the_run_stops(caplog):
    loaded, discarded = [], []

    def prepare(inputs):
        raise MemoryError("out of memory")

    feed = Prefetcher([(str(i), "") for i in range(1000)], lambda sid, _: loaded.append(sid) or sid, depth=2,
                      prepare=prepare, discard=lambda: discarded.append(1))
    first, second = next(iter(feed)), next(iter(feed))
    feed.close()
    assert (first[0], second[0]) == ("0", "1") and not feed._thread.is_alive()
    assert len(loaded) < 20  # it ran only a few samples ahead
    assert discarded == [1]
    warnings = [r for r in caplog.records if "preparing images ahead failed" in r.getMessage()]
    assert len(warnings) == 1 and "MemoryError" in warnings[0].getMessage()  # said once, not per image


# ---------------------------------------------------------------------------------------------- MobileSAM


def test_mobile_sam_adapter_equals_mobile_sams_predictor(images):
    """samtext's MobileSAM (segment_anything's Sam around mobile_sam's TinyViT) loads mobile_sam's own state
    dict key for key and gives the same embeddings, scores and masks as mobile_sam's SamPredictor."""
    import mobile_sam

    theirs = mobile_sam.sam_model_registry["vit_t"]()
    with torch.no_grad():  # random weights, but not the zero-initialised ones (rel-pos, biases)
        g = torch.Generator().manual_seed(0)
        for p in theirs.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    ours = build_mobile_sam()
    ours.load_state_dict(theirs.state_dict())
    seg = SamSegmenter(ours, precision="fp32", name="mobile_sam")
    predictor = mobile_sam.SamPredictor(theirs.eval())
    image = images[0]
    predictor.set_image(image)
    emb = seg.embed(image)
    assert emb.features.shape == (1, 256, 64, 64)
    assert torch.allclose(emb.features, predictor.features, atol=1e-5)
    h, w = image.shape[:2]
    pts, lbl = np.array([[w * 0.5, h * 0.5], [w * 0.1, h * 0.9]]), np.array([1, 0])
    masks, scores, low = predictor.predict(point_coords=pts, point_labels=lbl, multimask_output=True)
    pred = seg.predict(emb, pts[None], lbl[None], multimask=True)
    np.testing.assert_allclose(pred.scores[0], scores, atol=1e-4)
    np.testing.assert_allclose(pred.low_res_logits[0].numpy(), low, atol=1e-3)
    assert (pred.masks[0] != masks).mean() < 1e-4 and 0 < masks.mean() < 1
    box = np.array([w * 0.2, h * 0.2, w * 0.8, h * 0.7])
    masks, scores, _ = predictor.predict(box=box, multimask_output=False)
    pred = seg.predict(emb, boxes=box[None])
    np.testing.assert_allclose(pred.scores[0], scores, atol=1e-4)
    assert (pred.masks[0] != masks).mean() < 1e-4


def test_tiny_mobile_sam_labels_through_an_action(db):
    import samtext

    ds = make_pets_dataset(pets_stems("unlabeled", n=3))
    ref = ds.first()
    summary = samtext.annotate_by_reference(ds, "cat", reference=ref.id, reference_field="ground_truth",
                                            sam_model="tiny-mobile", device="cpu", min_similarity=None,
                                            out_field="mobile")
    assert summary.status == "completed" and summary.labelled == 2 and summary.failed == 0
    seg = load_sam("tiny-mobile", device="cpu")
    assert seg.image_size == 1024 and seg.decoder is not None  # SAM's batched decoder serves it too


def test_mobile_sam_weights_are_pinned_and_checked(tmp_path):
    ckpt = registry.SAM_MODELS["mobile_sam"].checkpoint
    assert ckpt.filename == "mobile_sam.pt" and "a509aac54fdd7af59f843135f2f7cee307283c88" in ckpt.url
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom((1 << 20) + 5))
    git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    assert weights.git_blob_sha1(str(path)) == git.stdout.strip()
    assert ckpt.verify(str(path)) == "git blob %s" % git.stdout.strip()  # not MobileSAM's file


def test_mobile_sam_offline_says_where_to_get_it(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.setenv("SAMTEXT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FIFTYONE_MODEL_ZOO_DIR", str(tmp_path / "zoo"))

    def offline(url, timeout=None):
        raise OSError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(weights.WeightsUnavailableError) as e:
        load_sam("mobile_sam", device="cpu", precision="fp32")
    msg = str(e.value)
    assert "mobile_sam.pt" in msg and "SAMTEXT_SAM_MOBILE_SAM_CHECKPOINT" in msg and "git blob" in msg


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_path_and_batches_on_cuda(images):
    plain = SamSegmenter(build_tiny_sam(), device="cuda", precision="fp32")
    fast = SamSegmenter(build_tiny_sam(), device="cuda", precision="bf16", fast_encoder=True)
    assert fast.encoder_batch == 8
    batched = fast.embed_batch(images)
    for image, b in zip(images, batched):
        a = plain.embed(image).features
        assert b.features.device.type == "cuda" and rel_l2(b.features, a) < 0.03
