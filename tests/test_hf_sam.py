"""SAM 2.1 and SAM 3 through transformers (samtext/models/hf_sam.py): the adapter gives transformers' own masks, the
weights are found as documented, and every SAM action runs on each (tiny random configs of the real
architectures, built from transformers' config classes: no download)."""

import os

import numpy as np
import pytest
import torch

from conftest import make_pets_dataset, pets_stems

HF_TINY = ["tiny-sam2", "tiny-sam3"]


def _image(h=150, w=200, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _processor(name, segmenter):
    """transformers' own processor for the tiny model's input size (built here: nothing downloaded)."""
    from transformers import Sam2ImageProcessor, Sam2Processor, Sam3ImageProcessor, Sam3TrackerProcessor

    size = {"height": segmenter.image_size, "width": segmenter.image_size}
    if name == "tiny-sam2":
        return Sam2Processor(image_processor=Sam2ImageProcessor(size=size))
    return Sam3TrackerProcessor(image_processor=Sam3ImageProcessor(size=size))


@pytest.mark.parametrize("name", HF_TINY)
def test_the_adapter_gives_transformers_own_masks(name):
    """Same image and prompts: samtext's adapter (its own resize, prompt scaling and upscaling, embeddings computed
    once) against transformers' processor + model + post_process_masks: the same masks and scores."""
    from PIL import Image

    from samtext.models import load_sam

    seg = load_sam(name, device="cpu", precision="fp32")
    proc = _processor(name, seg)
    image = _image()
    points = np.array([[[40.0, 30.0]], [[150.0, 110.0]], [[90.0, 75.0]]], np.float32)  # (N, 1, 2) x, y
    boxes = np.array([[20.0, 10.0, 120.0, 90.0], [100.0, 60.0, 190.0, 140.0]], np.float32)
    emb = seg.embed(image)
    ours_points = seg.predict(emb, points, np.ones((3, 1), np.int64), multimask=True)
    ours_boxes = seg.predict(emb, boxes=boxes, multimask=False)

    pil = Image.fromarray(image)
    for kwargs, ours in ((dict(input_points=[points.tolist()], input_labels=[[[1]] * 3]), ours_points),
                         (dict(input_boxes=[boxes.tolist()]), ours_boxes)):
        enc = proc(images=pil, return_tensors="pt", **kwargs)
        np.testing.assert_allclose(seg.encoder_input(image)[0].numpy(), enc["pixel_values"].numpy(), atol=1e-5)
        with torch.no_grad():
            out = seg.model(pixel_values=enc["pixel_values"], multimask_output=ours.scores.shape[1] == 3,
                            **{k: v for k, v in enc.items() if k.startswith("input_")})
        theirs = proc.post_process_masks(out.pred_masks, enc["original_sizes"])[0].numpy()
        assert theirs.shape == ours.masks.shape and theirs.any() and not theirs.all()
        assert (theirs != ours.masks).mean() < 1e-4, (theirs != ours.masks).mean()
        np.testing.assert_allclose(out.iou_scores[0].numpy(), ours.scores, atol=1e-4)


@pytest.mark.parametrize("name", HF_TINY)
def test_the_protocol_on_the_squashed_frame(name):
    """Frames: the square input covers the image (no padding): every grid cell is valid, a cell's centre maps to
    the image by the two axes' own scales, a mask refines through the low-res logits, areas count the square."""
    from samtext.models import load_sam

    seg = load_sam(name, device="cpu", precision="fp32")
    image = _image(90, 240)  # 8:3, far from square
    emb = seg.embed(image)
    grid = seg.valid_grid(emb)
    assert grid == tuple(emb.features.shape[-2:]) and emb.input_size == (seg.image_size, seg.image_size)
    x, y = seg.grid_to_point(grid[0] - 1, grid[1] - 1, emb)
    assert 240 * (1 - 1.0 / grid[1]) < x < 240 and 90 * (1 - 1.0 / grid[0]) < y < 90
    pred = seg.predict(emb, np.array([[[60.0, 45.0]]], np.float32), np.ones((1, 1), np.int64), multimask=True)
    assert pred.low_res_logits.shape[-2:] == seg.mask_input_size and pred.masks.shape == (1, 3, 90, 240)
    np.testing.assert_array_equal(seg.upscale(emb, pred.low_res_logits[0]), pred.masks[0])
    refined = seg.predict(emb, np.array([[[60.0, 45.0]]], np.float32), np.ones((1, 1), np.int64),
                          mask_logits=pred.low_res_logits[:, :1])
    assert refined.masks.shape == (1, 1, 90, 240)
    areas = seg.input_frame_areas(emb, pred.low_res_logits[0], (0.0,))[:, 0]
    squares = [(torch.nn.functional.interpolate(lr[None, None], size=(seg.image_size,) * 2, mode="bilinear",
                                                align_corners=False) > 0).sum() for lr in pred.low_res_logits[0]]
    assert torch.allclose(areas.float(), torch.stack(squares).float(), rtol=0.02, atol=16)
    whole = np.ones((90, 240), bool)
    assert torch.allclose(seg.mask_to_grid(whole, emb), torch.ones(grid))


def test_weights_are_found_in_a_folder_the_cache_or_named_as_missing(tmp_path, monkeypatch, offline_hf_hub):
    from samtext.errors import SamtextError
    from samtext.models import clear_model_cache, load_sam
    from samtext.models.weights import WeightsUnavailableError, resolve_hf_sam
    from samtext.models.tiny import build_tiny_sam2

    folder = tmp_path / "my_sam2"
    build_tiny_sam2().save_pretrained(folder)
    image = _image()
    clear_model_cache()
    expected = load_sam("tiny-sam2", device="cpu", precision="fp32").embed(image).features
    from_folder = load_sam("sam2.1_hiera_tiny", checkpoint=str(folder), device="cpu", precision="fp32")
    assert from_folder.name == "sam2.1_hiera_tiny"
    torch.testing.assert_close(from_folder.embed(image).features, expected)
    # the Hugging Face cache layout of the repository, found offline by its name
    cache = offline_hf_hub
    snapshot = cache / "models--facebook--sam2.1-hiera-tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for f in os.listdir(folder):
        os.symlink(folder / f, snapshot / f)
    (cache / "models--facebook--sam2.1-hiera-tiny" / "refs").mkdir()
    (cache / "models--facebook--sam2.1-hiera-tiny" / "refs" / "main").write_text("a" * 40)
    assert resolve_hf_sam("sam2.1_hiera_tiny") == str(snapshot)
    clear_model_cache()
    torch.testing.assert_close(load_sam("sam2.1_hiera_tiny", device="cpu", precision="fp32").embed(image).features,
                               expected)
    # missing: one line that says what, where from, and where to put it; a file instead of a folder: refused
    with pytest.raises(WeightsUnavailableError, match=r"facebook/sam3 .*SAM License.*sam_checkpoint=<a folder"):
        resolve_hf_sam("sam3")
    zoo = tmp_path / "zoo" / "segment-anything-3-image-torch"
    zoo.mkdir(parents=True)
    (zoo / "sam3.pt").write_bytes(b"x")
    monkeypatch.setenv("FIFTYONE_MODEL_ZOO_DIR", str(tmp_path / "zoo"))
    assert resolve_hf_sam("sam3") == str(zoo / "sam3.pt")  # Meta's format, converted on loading
    with pytest.raises(SamtextError, match=r"sam3.pt is not a readable PyTorch checkpoint"):
        load_sam("sam3", device="cpu", precision="fp32")
    elsewhere = tmp_path / "weights.bin"
    elsewhere.mkdir()
    with pytest.raises(WeightsUnavailableError, match="not a folder of transformers weights .* or Meta's sam3.pt"):
        resolve_hf_sam("sam3", str(elsewhere))
    clear_model_cache()


@pytest.fixture
def pets(db):
    return make_pets_dataset(pets_stems()[:6])


@pytest.mark.parametrize("name", HF_TINY)
def test_every_sam_action_runs_on_sam2_and_sam3(pets, name):
    """Reference, text, proposals (+ map) and few-shot, each through the SDK on SAM 2.1 / SAM 3: every target
    labelled once, the run record naming the model."""
    import samtext

    ds = pets
    n = len(ds)
    model = dict(sam_model=name, device="cpu")
    reference = ds.first().id
    summary = samtext.annotate_by_reference(ds, "cat", reference=reference, reference_field="ground_truth",
                                            out_field="ref", min_similarity=None, **model)
    assert (summary.labelled, summary.failed) == (n - 1, 0) and summary.instances > 0
    summary = samtext.annotate_by_text(ds, "cat", clip_model="tiny", out_field="text", threshold=0.0,
                                       max_proposals=8, **model)
    assert (summary.labelled, summary.failed) == (n, 0) and summary.instances > 0
    summary = samtext.compute_mask_proposals(ds, out_field="props", clip_model="tiny", points_per_side=4,
                                             pred_iou_thresh=0.0, stability_score_thresh=0.0, min_area=0, **model)
    assert (summary.labelled, summary.failed) == (n, 0) and summary.instances >= n
    picked = ds.values("props.detections.id", unwind=True)[:3]
    summary = samtext.annotate_by_examples(ds, {"cat": samtext.Exemplars(label_ids=picked)},
                                           proposals_field="props", out_field="shots", threshold=0.5)
    assert (summary.labelled, summary.failed) == (n, 0) and summary.instances >= len(picked)
    for field in ("ref", "text", "props"):  # each SAM action's run record names the model
        records = samtext_record(ds, field)
        assert len(records) == 1 and records[0]["settings"]["sam_model"] == name, records


def samtext_record(ds, field):
    from samtext.run.records import samtext_records

    return [config for config in samtext_records(ds).values() if config.get("out_field") == field]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", HF_TINY)
def test_a_batch_of_eight_in_bf16_on_cuda(name):
    from samtext.models import clear_model_cache, load_sam

    clear_model_cache()
    seg = load_sam(name, device="cuda", precision="bf16")
    images = [_image(seed=i) for i in range(8)]
    embeddings = seg.embed_batch(images) if seg.encoder_batch >= 8 else [seg.embed(im) for im in images]
    assert len(embeddings) == 8 and embeddings[0].features.device.type == "cuda"
    pred = seg.predict(embeddings[0], np.array([[[40.0, 30.0]]], np.float32), np.ones((1, 1), np.int64))
    assert pred.masks.shape == (1, 1, 150, 200)
    clear_model_cache()


@pytest.mark.parametrize("name", HF_TINY)
def test_the_app_operators_offer_and_run_sam2_and_sam3(pets, name):
    """Through FiftyOne's operator executor, as the App calls them: the forms list SAM 2.1 and SAM 3 among the
    models, and the reference and text operators run on them."""
    import fiftyone.operators as foo

    from conftest import PLUGIN_NAME
    from samtext.models.registry import SAM_MODELS

    assert {"sam2.1_hiera_tiny", "sam2.1_hiera_large", "sam3", name} <= set(SAM_MODELS)
    ds = pets
    ref = ds.first()
    result = foo.execute_operator(PLUGIN_NAME + "/annotate_by_reference_mask", {"dataset": ds, "params": dict(
        class_name="cat", reference_sample=ref.id, reference_field="ground_truth", sam_model=name, device="cpu",
        gate="off", out_field="app_ref")})
    assert result.error is None and ds.count("app_ref") == len(ds) - 1
    result = foo.execute_operator(PLUGIN_NAME + "/annotate_by_text", {"dataset": ds, "params": dict(
        prompts="cat", sam_model=name, clip_model="tiny", device="cpu", threshold=0.0, out_field="app_text")})
    assert result.error is None and ds.count("app_text") == len(ds)


def test_text_by_sam3_concepts_end_to_end(pets):
    """localizer='sam3' through the SDK and the operator, on SAM 3's tiny detector (every part of the real model,
    random weights): every sample gets a label, the record names the localizer and no CLIP; another SAM with
    localizer='sam3' is refused before anything is created."""
    import fiftyone.operators as foo

    import samtext
    from conftest import PLUGIN_NAME

    ds = pets
    summary = samtext.annotate_by_text(ds, "cat; dog", localizer="sam3", sam_model="tiny-sam3", device="cpu",
                                       threshold=0.0, out_field="concepts", negative_prompts="not the sofa")
    assert (summary.labelled, summary.failed) == (len(ds), 0) and summary.instances > 0
    record = samtext_record(ds, "concepts")[0]
    assert record["settings"]["localizer"] == "sam3" and "clip_model" not in record["settings"]
    assert {"cat", "dog"} <= set(ds.mask_targets["concepts"].values())
    summary = samtext.annotate_by_text(ds, "cat", localizer="sam3", sam_model="tiny-sam3", device="cpu",
                                       out_field="concepts_default")
    assert (summary.labelled, summary.failed) == (len(ds), 0)
    assert summary.instances or "SAM 3 scored no instance at threshold=0.5" in summary.notes[0]
    with pytest.raises(ValueError, match="localizer='sam3' reads the prompt with SAM 3: set sam_model='sam3'"):
        samtext.annotate_by_text(ds, "cat", localizer="sam3", sam_model="tiny", out_field="nope")
    assert not ds.has_sample_field("nope")
    result = foo.execute_operator(PLUGIN_NAME + "/annotate_by_text", {"dataset": ds, "params": dict(
        prompts="cat", localizer="sam3", sam_model="tiny-sam3", device="cpu", threshold=0.0, out_field="app_c")})
    assert result.error is None and ds.count("app_c") == len(ds)


def test_one_shot_with_sam3_on_a_canvas(pets):
    """method='sam3': SDK and operator on the tiny detector; every target labelled once; a non-SAM 3 model refused
    before anything is created."""
    import fiftyone.operators as foo

    import samtext
    from conftest import PLUGIN_NAME

    ds = pets
    ref = ds.first()
    summary = samtext.annotate_by_reference(ds, "cat", reference=ref.id, reference_field="ground_truth",
                                            method="sam3", sam_model="tiny-sam3", device="cpu", min_similarity=None,
                                            out_field="ref3")
    assert (summary.labelled, summary.failed) == (len(ds) - 1, 0) and summary.instances >= len(ds) - 1
    assert samtext_record(ds, "ref3")[0]["settings"]["method"] == "sam3"
    with pytest.raises(ValueError, match="method='sam3' finds the reference's object with SAM 3"):
        samtext.annotate_by_reference(ds, "cat", reference=ref.id, reference_field="ground_truth", method="sam3",
                                      sam_model="tiny", out_field="nope")
    assert not ds.has_sample_field("nope")
    result = foo.execute_operator(PLUGIN_NAME + "/annotate_by_reference_mask", {"dataset": ds, "params": dict(
        class_name="cat", reference_sample=ref.id, reference_field="ground_truth", method="sam3",
        sam_model="tiny-sam3", device="cpu", gate="off", out_field="app_ref3")})
    assert result.error is None and ds.count("app_ref3") == len(ds) - 1


def test_few_shot_with_sam3_exemplars_end_to_end(pets):
    """method='sam3' of few-shot through the SDK and the operator, on the tiny detector: the exemplars (proposals
    picked by id, as a lasso gives them) are read from their images; every sample labelled; mask-field exemplars
    and a non-SAM 3 model refused before anything is created."""
    import fiftyone.operators as foo

    import samtext
    from conftest import PLUGIN_NAME

    ds = pets
    samtext.compute_mask_proposals(ds, out_field="props", sam_model="tiny", device="cpu", embedder=None,
                                   points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_area=0)
    picked = ds.values("props.detections.id", unwind=True)
    assert len(picked) >= 6
    summary = samtext.annotate_by_examples(ds, {"cat": samtext.Exemplars(label_ids=picked[:4],
                                                                         negative_ids=picked[4:6])},
                                           proposals_field="props", method="sam3", sam3_model="tiny-sam3",
                                           sam3_threshold=0.0, device="cpu", out_field="shots3")
    assert (summary.labelled, summary.failed) == (len(ds), 0)  # random weights: what it finds is arbitrary
    record = samtext_record(ds, "shots3")[0]
    assert record["settings"]["method"] == "sam3" and "scoring" not in record["settings"]
    assert record["learnt"]["exemplars"]["cat"] == dict(positives=4, negatives=2)
    with pytest.raises(ValueError, match="not mask fields"):
        samtext.annotate_by_examples(ds, {"cat": samtext.Exemplars(mask_field="ground_truth")},
                                     proposals_field="props", method="sam3", sam3_model="tiny-sam3", out_field="no1")
    with pytest.raises(ValueError, match="sam3_model must be a SAM 3 model"):
        samtext.annotate_by_examples(ds, {"cat": picked}, proposals_field="props", method="sam3",
                                     sam3_model="tiny", out_field="no2")
    assert not ds.has_sample_field("no1") and not ds.has_sample_field("no2")
    result = foo.execute_operator(PLUGIN_NAME + "/annotate_by_examples", {"dataset": ds, "params": dict(
        class_name="cat", proposals_field="props", exemplar_ids=picked[:5], method="sam3", sam3_model="tiny-sam3",
        sam3_threshold=0.0, device="cpu", out_field="app_shots3")})
    assert result.error is None and ds.count("app_shots3") == len(ds)
