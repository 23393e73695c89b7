"""End to end "Annotate by reference mask" on real data and a real database, with the tiny models: through
the SDK, through FiftyOne's operator execution (immediate and delegated) and through the operator's
``__call__``. The tiny models' masks are meaningless; what is checked is everything around them."""

import base64
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import PETS, PLUGIN_NAME, make_pets_dataset, pets_stems

URI = PLUGIN_NAME + "/annotate_by_reference_mask"
# the gate off: the tiny random SAM's masks would rarely pass it, and these tests check what is written
TINY = dict(sam_model="tiny", device="cpu", min_similarity=None)


def _image_size(path):
    """``(H, W)`` of the upright image."""
    with Image.open(path) as img:
        w, h = ImageOps.exif_transpose(img).size
    return h, w


def check_labels(samples, field, class_name="cat"):
    """Every sample of ``samples`` holds a valid binary Segmentation of ``class_name`` in ``field``."""
    import fiftyone as fo

    dataset = samples._dataset
    assert dataset.mask_targets[field] == {1: class_name}
    schema = dataset.get_field_schema()
    assert schema[field].document_type is fo.Segmentation
    n = 0
    for sample in samples.select_fields([field, field + "_instances"]):
        label = sample[field]
        assert isinstance(label, fo.Segmentation), (sample.filepath, label)
        mask = label.get_mask()
        assert mask.shape == _image_size(sample.filepath), sample.filepath
        assert set(np.unique(mask).tolist()) <= {0, 1}
        assert 0.0 <= label.confidence <= 1.0
        check_instances(sample, field, mask)
        n += 1
    return n


def check_instances(sample, field, semantic):
    """``<field>_instances`` holds one Detection per object, whose masks rasterise to the semantic mask."""
    import fiftyone as fo

    dets = sample[field + "_instances"]
    assert isinstance(dets, fo.Detections), (sample.filepath, dets)
    assert len(dets.detections) == sample[field].num_instances
    h, w = semantic.shape
    union = np.zeros((h, w), bool)
    for det in dets.detections:
        assert det.label == "cat" and 0.0 <= det.confidence <= 1.0 and det.has_mask
        union |= det.to_segmentation(frame_size=(w, h), target=1).get_mask() > 0
    # FiftyOne's own box round trip (relative coordinates) may move an edge pixel: compare by IoU
    fg = semantic > 0
    assert (union & fg).sum() >= 0.95 * (union | fg).sum()
    assert (len(dets.detections) == 0) == (not semantic.any())


def check_run(dataset, field, method="prior", class_name="cat", reference_ids=None):
    key = "samtext_" + field
    assert key in dataset.list_runs()
    config = dataset.get_run_info(key).config
    settings = config.settings
    assert settings["method"] == method
    assert settings["class_name"] == class_name
    assert config.out_field == field
    assert config.action == "annotate_by_reference"
    assert config.classes == {"1": class_name}
    (run,) = config.runs.values()
    assert run["status"] == "completed" and run["started"] <= run["finished"]
    summary = run["summary"]
    assert summary["labelled"] >= 1 and summary["labelled"] + summary["failed"] == summary["targets"]
    if reference_ids is not None:
        assert list(settings["reference_ids"]) == list(reference_ids)
    return settings


def check_prompts(samples, field):
    import fiftyone as fo

    schema = samples._dataset.get_field_schema()
    assert schema[field + "_prompts"].document_type is fo.Keypoints
    for sample in samples.select_fields(field + "_prompts"):
        kps = sample[field + "_prompts"]
        assert isinstance(kps, fo.Keypoints)
        names = {kp.label for kp in kps.keypoints}
        assert names <= {"positive", "negative"} and "positive" in names
        for kp in kps.keypoints:
            for x, y in kp.points:
                assert 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0


@pytest.fixture
def pets(db):
    """3 cats and a dog; the first cat is the reference."""
    ds = make_pets_dataset(pets_stems(animal="cat", n=3) + pets_stems(animal="dog", n=1))
    return ds, ds.first()


@pytest.fixture
def large_photos(db, tmp_path):
    """Photos of 1,277-1,282 px (pets cats scaled up, as a phone photo is larger than SAM's input): the first is
    the reference, its mask given as a ``mask_path`` PNG (0/255), the other two are the targets."""
    import fiftyone as fo
    from PIL import Image

    ds = fo.Dataset()
    samples = []
    for stem, side in zip(pets_stems(animal="cat", n=3), (1280, 1277, 1282)):
        path = str(tmp_path / (stem + ".jpg"))
        Image.open(os.path.join(PETS, "images", stem + ".jpg")).resize((side, side), Image.BICUBIC).save(path)
        s = fo.Sample(filepath=path, stem=stem)
        if not samples:
            mask_path = str(tmp_path / (stem + "_mask.png"))
            Image.open(os.path.join(PETS, "masks", stem + ".png")).resize((side, side), Image.NEAREST).save(mask_path)
            s["ground_truth"] = fo.Segmentation(mask_path=mask_path)
        samples.append(s)
    ds.add_samples(samples)
    return ds, ds.first()


def _targets(ds, ref):
    return ds.exclude([ref.id])


# --- SDK ---------------------------------------------------------------------------------------------


def test_sdk_prior_on_pets(pets):
    import samtext

    ds, ref = pets
    seen = []
    summary = samtext.annotate_by_reference(
        ds, "cat", reference=ref, reference_field="ground_truth", out_field="cat_masks", save_prompts=True,
        progress=lambda done, total: seen.append((done, total)), **TINY
    )
    assert (summary.targets, summary.labelled, summary.failed, summary.skipped_existing) == (3, 3, 0, 0)
    assert summary.errors == [] and summary.field == "cat_masks" and summary.run_key == "samtext_cat_masks"
    assert 0 <= summary.empty <= summary.labelled
    assert seen[0] == (0, 3) and seen[-1] == (3, 3) and len(seen) == 4
    assert check_labels(_targets(ds, ref), "cat_masks") == 3
    ref.reload()
    assert ref["cat_masks"] is None and ref["cat_masks_prompts"] is None  # the reference is not relabelled
    assert ref["ground_truth"] is not None
    config = check_run(ds, "cat_masks", reference_ids=[ref.id])
    assert config["reference_field"] == "ground_truth" and config["sam_model"] == "tiny"
    check_prompts(_targets(ds, ref), "cat_masks")
    # the dog is labelled too (as a cat mask, possibly empty): every target gets a label
    dog = ds.match({"stem": {"$regex": "^dog"}}).first()
    assert dog["cat_masks"] is not None
    assert summary.to_dict()["labelled"] == 3


def test_sdk_stitch_on_pets(pets):
    import samtext

    ds, ref = pets
    summary = samtext.annotate_by_reference(
        ds, "cat", reference=ref.id, reference_field="ground_truth", out_field="stitched", method="stitch",
        clip_model="tiny", num_prompt_sets=2, **TINY
    )
    assert (summary.targets, summary.labelled, summary.failed) == (3, 3, 0)
    assert check_labels(_targets(ds, ref), "stitched") == 3
    config = check_run(ds, "stitched", method="stitch", reference_ids=[ref.id])
    assert config["clip_model"] == "tiny" and config["num_prompt_sets"] == 2
    assert "stitched_prompts" not in ds.get_field_schema()  # save_prompts defaults to False in the SDK
    assert ds.first()["stitched"] is None


@pytest.mark.parametrize("method", ["prior", "stitch"])
def test_sdk_on_large_photos(large_photos, method):
    import samtext

    ds, ref = large_photos
    field = "large_" + method
    summary = samtext.annotate_by_reference(
        ds, "cat", reference=ref, reference_field="ground_truth", out_field=field, method=method,
        clip_model="tiny", num_prompt_sets=2, save_prompts=True, **TINY
    )
    assert (summary.targets, summary.labelled, summary.failed) == (2, 2, 0), summary.errors
    targets = _targets(ds, ref)
    assert check_labels(targets, field) == 2
    shapes = sorted(s[field].get_mask().shape for s in targets)
    assert shapes == [(1277, 1277), (1282, 1282)]
    check_run(ds, field, method=method, reference_ids=[ref.id])
    check_prompts(targets, field)
    ref.reload()
    assert ref[field] is None


def test_sdk_view_target_labels_only_the_view(pets):
    import samtext

    ds, ref = pets
    view = ds.exclude([ref.id]).take(2, seed=1)
    ids = set(view.values("id"))
    summary = samtext.annotate_by_reference(
        view, "cat", reference=ref, reference_field="ground_truth", out_field="some", **TINY
    )
    assert (summary.targets, summary.labelled) == (2, 2)
    assert set(ds.exists("some").values("id")) == ids
    assert check_labels(ds.select(list(ids)), "some") == 2
    assert ds.count("some") == 2


def test_sdk_match_view_with_the_reference_in_it(pets):
    import samtext

    ds, ref = pets
    cats = ds.match({"stem": {"$regex": "^cat"}})
    summary = samtext.annotate_by_reference(
        cats, "cat", reference=ref, reference_field="ground_truth", out_field="cats_only", **TINY
    )
    assert (summary.targets, summary.labelled) == (2, 2)  # 3 cats in the view, one is the reference
    assert ds.match({"stem": {"$regex": "^dog"}}).first()["cats_only"] is None
    assert ds.count("cats_only") == 2


def test_sdk_several_references(pets):
    import samtext

    ds, _ = pets
    refs = ds.match({"stem": {"$regex": "^cat"}}).limit(2)
    ref_ids = refs.values("id")
    summary = samtext.annotate_by_reference(
        ds, "cat", reference=ref_ids, reference_field="ground_truth", out_field="two_refs", **TINY
    )
    assert (summary.targets, summary.labelled) == (2, 2)
    assert set(ds.exists("two_refs").values("id")).isdisjoint(ref_ids)
    check_run(ds, "two_refs", reference_ids=ref_ids)


def test_operator_several_references_comma_separated(pets):
    import fiftyone.operators as foo

    ds, _ = pets
    ref_ids = ds.match({"stem": {"$regex": "^cat"}}).limit(2).values("id")
    params = dict(class_name="cat", reference_sample=", ".join(ref_ids), reference_field="ground_truth",
                  out_field="two_refs_op", **TINY)
    foo.execute_operator(URI, {"dataset": ds, "params": params})
    assert ds.count("two_refs_op") == 2
    assert set(ds.exists("two_refs_op").values("id")).isdisjoint(ref_ids)
    check_run(ds, "two_refs_op", reference_ids=ref_ids)


def test_sdk_rerun_counts_skipped(pets):
    import samtext

    ds, ref = pets
    kw = dict(reference=ref, reference_field="ground_truth", out_field="again", **TINY)
    first = samtext.annotate_by_reference(ds, "cat", **kw)
    assert (first.targets, first.labelled, first.skipped_existing) == (3, 3, 0)
    second = samtext.annotate_by_reference(ds, "cat", **kw)
    assert (second.targets, second.labelled, second.skipped_existing, second.failed) == (0, 0, 3, 0)
    third = samtext.annotate_by_reference(ds, "cat", overwrite=True, **kw)
    assert (third.targets, third.labelled, third.skipped_existing) == (3, 3, 0)


def test_sdk_mask_dir_writes_pngs(pets, tmp_path):
    import samtext

    ds, ref = pets
    summary = samtext.annotate_by_reference(
        ds, "cat", reference=ref, reference_field="ground_truth", out_field="on_disk", mask_dir=str(tmp_path),
        **TINY
    )
    assert summary.labelled == 3
    targets = _targets(ds, ref)
    assert check_labels(targets, "on_disk") == 3
    for sample in targets:
        label = sample["on_disk"]
        assert label.mask is None
        assert label.mask_path == os.path.join(str(tmp_path), "on_disk", sample.id + ".png")
        assert os.path.isfile(label.mask_path)
        png = np.asarray(Image.open(label.mask_path))
        assert png.shape == _image_size(sample.filepath) and png.dtype == np.uint8
        assert set(np.unique(png).tolist()) <= {0, 1}
    assert sorted(os.listdir(tmp_path / "on_disk")) == sorted(i + ".png" for i in targets.values("id"))


# --- operator: FiftyOne's execution ------------------------------------------------------------------


def _params(ref, **kw):
    p = dict(class_name="cat", reference_sample=ref.id, reference_field="ground_truth", sam_model="tiny",
             device="cpu", gate="off")
    p.update(kw)
    return p


def test_execute_operator_immediate(pets):
    import fiftyone.operators as foo

    ds, ref = pets
    result = foo.execute_operator(URI, {"dataset": ds, "params": _params(ref, out_field="op_masks")})
    assert result.error is None
    assert check_labels(_targets(ds, ref), "op_masks") == 3
    assert ds.first()["op_masks"] is None
    check_run(ds, "op_masks", reference_ids=[ref.id])
    check_prompts(_targets(ds, ref), "op_masks")  # the form saves prompts by default
    requests = result.executor.to_json()["requests"]
    uris = [r["operator_uri"] for r in requests]
    assert "set_progress" in uris and "reload_dataset" in uris
    notes = [r["params"] for r in requests if r["operator_uri"] == "notify"]
    assert len(notes) == 1
    assert "labelled 3 images into op_masks" in notes[0]["message"] and notes[0]["variant"] == "success"
    progress = [r["params"]["progress"] for r in requests if r["operator_uri"] == "set_progress"]
    assert progress[0] == 0 and progress[-1] == 1


def test_execute_operator_stitch_and_clip_check(pets):
    import fiftyone.operators as foo

    ds, ref = pets
    params = _params(ref, out_field="op_stitch", method="stitch", clip_model="tiny", num_prompt_sets=2,
                     clip_check=True, clip_threshold=0.0, save_prompts=False)
    foo.execute_operator(URI, {"dataset": ds, "params": params})
    assert check_labels(_targets(ds, ref), "op_stitch") == 3
    config = check_run(ds, "op_stitch", method="stitch")
    assert config["clip_model"] == "tiny" and config["clip_threshold"] == 0.0
    assert "op_stitch_prompts" not in ds.get_field_schema()


def test_execute_operator_on_a_view(pets):
    import fiftyone.operators as foo

    ds, ref = pets
    view = ds.match({"stem": {"$regex": "^dog"}})
    foo.execute_operator(URI, {"view": view, "params": _params(ref, out_field="dog_only")})
    assert ds.count("dog_only") == 1
    assert ds.exists("dog_only").values("id") == view.values("id")


def test_execute_operator_uploaded_mask(pets):
    import fiftyone.operators as foo

    ds, ref = pets
    stem = ref["stem"]
    with open(os.path.join(os.path.dirname(ref.filepath), "..", "masks", stem + ".png"), "rb") as f:
        content = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    params = _params(ref, out_field="uploaded", reference_source="upload",
                     reference_mask={"name": stem + ".png", "type": "image/png", "content": content})
    params.pop("reference_field")
    foo.execute_operator(URI, {"dataset": ds, "params": params})
    assert check_labels(_targets(ds, ref), "uploaded") == 3
    settings = check_run(ds, "uploaded")
    assert settings["reference_field"] is None and settings["reference_mask"].startswith("sha1:")


def test_operator_call(pets):
    import fiftyone.operators as foo

    ds, ref = pets
    op = foo.get_operator(URI)
    result = op(ds, "cat", reference=ref.id, reference_field="ground_truth", out_field="called", sam_model="tiny",
                device="cpu")
    assert result.error is None
    assert check_labels(_targets(ds, ref), "called") == 3
    # on a view: only that view's samples
    view = ds.exclude([ref.id]).limit(1)
    op(view, "cat", reference=ref.id, reference_field="ground_truth", out_field="called_view", sam_model="tiny",
       device="cpu")
    assert ds.exists("called_view").values("id") == view.values("id")


def _delegated_service():
    from fiftyone.operators.delegated import DelegatedOperationService

    return DelegatedOperationService()


def test_delegated_request_is_queued_then_runs(pets):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionRunState

    ds, ref = pets
    svc = _delegated_service()
    result = foo.execute_operator(
        URI, {"dataset": ds, "params": _params(ref, out_field="later")}, request_delegation=True
    )
    assert result.delegated
    queued = svc.get_queued_operations(operator=URI, dataset_name=ds.name)
    assert len(queued) == 1 and queued[0].run_state == ExecutionRunState.QUEUED
    assert queued[0].id == result.result["id"]
    assert "later" not in ds.get_field_schema()  # nothing ran yet

    done = svc.execute_queued_operations(operator=URI, dataset_name=ds.name)
    assert len(done) == 1 and done[0].error is None, done[0].error
    doc = svc.get(queued[0].id)
    assert doc.run_state == ExecutionRunState.COMPLETED
    assert doc.status.progress == 1
    ds.reload()
    assert check_labels(_targets(ds, ref), "later") == 3
    check_run(ds, "later")


def test_operator_call_delegate(pets):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionRunState

    ds, ref = pets
    op = foo.get_operator(URI)
    result = op(ds, "cat", reference=ref.id, reference_field="ground_truth", out_field="called_later",
                sam_model="tiny", device="cpu", delegate=True)
    assert result.delegated
    svc = _delegated_service()
    (doc,) = svc.get_queued_operations(operator=URI, dataset_name=ds.name)
    assert doc.context.request_params["params"]["out_field"] == "called_later"
    svc.execute_queued_operations(operator=URI, dataset_name=ds.name)
    assert svc.get(doc.id).run_state == ExecutionRunState.COMPLETED
    ds.reload()
    assert ds.count("called_later") == 3


def test_delegated_run_keeps_the_summary(pets):
    import fiftyone.operators as foo

    ds, ref = pets
    svc = _delegated_service()
    foo.execute_operator(URI, {"dataset": ds, "params": _params(ref, out_field="summed")}, request_delegation=True)
    (doc,) = svc.get_queued_operations(operator=URI, dataset_name=ds.name)
    svc.execute_queued_operations(operator=URI, dataset_name=ds.name)
    result = svc.get(doc.id).result
    assert result is not None and result.result is not None
    assert result.result["labelled"] == 3 and result.result["field"] == "summed"
