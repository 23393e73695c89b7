"""Bad and unusual input through the SDK on a real dataset, with the tiny models: a bad target is reported
by sample and the run goes on; a bad reference stops the run up front with a ValueError naming it."""

import gc
import logging
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import PETS, PLUGIN_NAME, make_pets_dataset, pets_stems

URI = PLUGIN_NAME + "/annotate_by_reference_mask"
TINY = dict(sam_model="tiny", device="cpu")
REF_STEM = "cat_000"  # 394x500 (W x H)


def _gt(stem=REF_STEM):
    """The pets mask of ``stem``: ``(H, W)`` uint8 0/255."""
    return np.asarray(Image.open(os.path.join(PETS, "masks", stem + ".png")))


def _upright_shape(path):
    with Image.open(path) as img:
        w, h = ImageOps.exif_transpose(img).size
    return h, w


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


@pytest.fixture
def base(db):
    """cat_000 (reference, mask in ``ground_truth``) and cat_001 (a good target)."""
    ds = make_pets_dataset([REF_STEM, "cat_001"])
    return ds, ds.first()


def _add(ds, *paths):
    """Adds image targets, in order; returns their sample ids."""
    import fiftyone as fo

    return ds.add_samples([fo.Sample(filepath=str(p)) for p in paths])


def _run(samples, ref, **kw):
    import samtext

    kw.setdefault("reference_field", "ground_truth")
    kw.setdefault("out_field", "out")
    return samtext.annotate_by_reference(samples, "cat", reference=ref, **TINY, **kw)


def _check_label(ds, sid, field="out"):
    import fiftyone as fo

    sample = ds[sid]
    label = sample[field]
    assert isinstance(label, fo.Segmentation), (sample.filepath, label)
    mask = label.get_mask()
    assert mask.shape == _upright_shape(sample.filepath)
    assert set(np.unique(mask).tolist()) <= {0, 1}
    assert 0.0 <= label.confidence <= 1.0
    return mask


def _assert_failed_named(summary, ds, bad_ids, message):
    assert summary.failed == len(bad_ids)
    assert [e.sample_id for e in summary.errors] == list(bad_ids)
    for sid, err in zip(bad_ids, summary.errors):
        path = ds[sid].filepath
        assert err.filepath == path
        assert sid in str(err) and path in str(err)
        assert message in err.message, err.message
        assert ds[sid]["out"] is None
    assert summary.to_dict()["errors"] == [str(e) for e in summary.errors]


def _good_after(ds, ref, bad_path, tmp_path):
    """ref, then the bad target, then a good target (a copy of cat_002) after it."""
    good = tmp_path / "good.jpg"
    good.write_bytes(open(os.path.join(PETS, "images", "cat_002.jpg"), "rb").read())
    return _add(ds, bad_path, good)


# --- bad targets: reported by sample, the run goes on -------------------------------------------------


def test_missing_image_file(base, tmp_path):
    ds, ref = base
    bad, good = _good_after(ds, ref, tmp_path / "gone.jpg", tmp_path)
    summary = _run(ds, ref)
    assert (summary.targets, summary.labelled) == (3, 2)
    _assert_failed_named(summary, ds, [bad], "file not found")
    _check_label(ds, good)


def test_corrupt_image_file(base, tmp_path):
    ds, ref = base
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG at all" + os.urandom(512))
    bad, good = _good_after(ds, ref, path, tmp_path)
    summary = _run(ds, ref)
    assert (summary.targets, summary.labelled) == (3, 2)
    _assert_failed_named(summary, ds, [bad], "cannot read image")
    _check_label(ds, good)


def test_truncated_jpeg(base, tmp_path):
    ds, ref = base
    data = open(os.path.join(PETS, "images", "cat_003.jpg"), "rb").read()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    bad, good = _good_after(ds, ref, path, tmp_path)
    summary = _run(ds, ref)
    assert summary.labelled == 2
    _assert_failed_named(summary, ds, [bad], "cannot read image")
    _check_label(ds, good)


def _gradient(h, w):
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    return np.stack([np.broadcast_to(y, (h, w)), np.broadcast_to(x, (h, w)), (y + x) / 2 * np.ones((h, w))],
                    axis=2).astype(np.uint8)


def _write_case(case, tmp_path):
    """An image file of an unusual kind; returns ``(path, upright (H, W))``."""
    rgb = np.asarray(Image.open(os.path.join(PETS, "images", "cat_001.jpg")).convert("RGB"))  # 313x450
    if case == "grayscale_jpeg":
        path = tmp_path / "gray.jpg"
        Image.fromarray(rgb).convert("L").save(path)
        return path, (313, 450)
    if case == "grayscale_png":
        path = tmp_path / "gray.png"
        Image.fromarray(rgb).convert("L").save(path)
        return path, (313, 450)
    if case == "rgba_png":
        path = tmp_path / "rgba.png"
        alpha = np.full(rgb.shape[:2] + (1,), 128, np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA").save(path)
        return path, (313, 450)
    if case == "png_16bit":
        path = tmp_path / "deep.png"
        gray = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.uint16) * 257
        Image.fromarray(gray).save(path)
        assert Image.open(path).mode.startswith("I")
        return path, (313, 450)
    if case == "exif_rotated_jpeg":
        path = tmp_path / "rotated.jpg"
        img = Image.fromarray(rgb)  # stored 450 wide, 313 high; orientation 6 shows it 313 wide, 450 high
        exif = img.getexif()
        exif[0x0112] = 6
        img.save(path, exif=exif)
        return path, (450, 313)
    if case == "large_6000x4000":
        path = tmp_path / "large.jpg"
        Image.fromarray(_gradient(4000, 6000)).save(path, quality=80)
        return path, (4000, 6000)
    if case == "tiny_8x8":
        path = tmp_path / "tiny.png"
        Image.fromarray(rgb[:8, :8].copy()).save(path)
        return path, (8, 8)
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["grayscale_jpeg", "grayscale_png", "rgba_png", "png_16bit", "exif_rotated_jpeg", "large_6000x4000",
     "tiny_8x8"],
)
def test_unusual_target_images_are_labelled(base, tmp_path, case):
    ds, ref = base
    path, shape = _write_case(case, tmp_path)
    (sid,) = _add(ds, path)
    summary = _run(ds.select(sid), ref, save_prompts=True)
    assert (summary.targets, summary.labelled, summary.failed) == (1, 1, 0), summary.errors
    mask = _check_label(ds, sid)
    assert mask.shape == shape
    for kp in ds[sid]["out_prompts"].keypoints:
        for x, y in kp.points:
            assert 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0


def test_matcher_failure_on_one_sample_does_not_stop_the_others(base, tmp_path, monkeypatch):
    import samtext.actions.by_reference as sref

    ds, ref = base
    extra = _add(ds, os.path.join(PETS, "images", "cat_002.jpg"), os.path.join(PETS, "images", "dog_000.jpg"))
    real_build = sref.build_matcher
    calls = []

    class Flaky:
        def __init__(self, matcher):
            self.matcher = matcher

        def __getattr__(self, name):
            return getattr(self.matcher, name)

        def __call__(self, image):
            calls.append(image.shape)
            if len(calls) == 2:
                raise RuntimeError("boom in the matcher")
            return self.matcher(image)

    def build_matcher(*args, **kwargs):
        return Flaky(real_build(*args, **kwargs))

    monkeypatch.setattr(sref, "build_matcher", build_matcher)
    summary = _run(ds, ref)
    assert len(calls) == 3
    bad = extra[0]  # targets in dataset order: cat_001, cat_002 (fails), dog_000
    assert (summary.targets, summary.labelled) == (3, 2)
    _assert_failed_named(summary, ds, [bad], "RuntimeError: boom in the matcher")
    _check_label(ds, ds.skip(1).first().id)
    _check_label(ds, extra[1])


def test_operator_reports_failures(base, tmp_path):
    """Through FiftyOne's execution: the run finishes and its notification counts the failure."""
    import fiftyone.operators as foo

    ds, ref = base
    bad, good = _good_after(ds, ref, tmp_path / "gone.jpg", tmp_path)
    params = dict(class_name="cat", reference_sample=ref.id, reference_field="ground_truth", out_field="out",
                  sam_model="tiny", device="cpu", save_prompts=False)
    result = foo.execute_operator(URI, {"dataset": ds, "params": params})
    (note,) = [r["params"] for r in result.executor.to_json()["requests"] if r["operator_uri"] == "notify"]
    assert "labelled 2 images" in note["message"] and "1 failed" in note["message"]
    assert note["variant"] == "error"
    assert ds[bad]["out"] is None
    _check_label(ds, good)


# --- bad references: a ValueError naming the reference, before anything is written -------------------


def _set_ref_mask(ref, mask=None, field="ground_truth", **kw):
    import fiftyone as fo

    ref[field] = fo.Segmentation(mask=mask, **kw) if mask is not None else fo.Segmentation(**kw)
    ref.save()


def _assert_nothing_written(ds, field="out"):
    assert field not in ds.get_field_schema()
    assert "samtext_" + field not in ds.list_runs()
    assert field not in ds.mask_targets


def test_empty_reference_mask(base):
    ds, ref = base
    _set_ref_mask(ref, np.zeros_like(_gt()))
    with pytest.raises(ValueError, match="empty") as info:
        _run(ds, ref)
    assert ref.id in str(info.value) and ref.filepath in str(info.value)
    _assert_nothing_written(ds)


def test_empty_reference_mask_names_the_sample_once(base):
    ds, ref = base
    _set_ref_mask(ref, np.zeros_like(_gt()))
    with pytest.raises(ValueError) as info:
        _run(ds, ref)
    assert str(info.value).count(ref.id) == 1, str(info.value)


def test_all_foreground_reference_mask_is_refused(base):
    """A mask that covers the whole image leaves nothing to tell the object from: refused, nothing written."""
    ds, ref = base
    _set_ref_mask(ref, np.full_like(_gt(), 255))
    with pytest.raises(ValueError, match="covers all of the image") as info:
        _run(ds, ref)
    assert ref.id in str(info.value)
    _assert_nothing_written(ds)


def test_reference_mask_same_aspect_other_resolution_works(base):
    import samtext

    ds, ref = base
    gt = _gt()
    small = np.asarray(Image.fromarray(gt).resize((197, 250), Image.NEAREST))
    _set_ref_mask(ref, small)
    (reference,), _ = samtext.load_references(ds, ref, "cat", "ground_truth")
    assert reference.mask.shape == gt.shape
    assert _iou(reference.mask, gt > 0) > 0.95
    summary = _run(ds, ref)
    assert (summary.labelled, summary.failed) == (1, 0)


def test_reference_mask_other_aspect_is_an_error_naming_sizes(base):
    ds, ref = base
    _set_ref_mask(ref, np.asarray(Image.fromarray(_gt()).resize((300, 300), Image.NEAREST)))
    with pytest.raises(ValueError) as info:
        _run(ds, ref)
    msg = str(info.value)
    assert "300x300" in msg and "394x500" in msg and ref.id in msg
    _assert_nothing_written(ds)


def test_reference_mask_values_0_1(base):
    import samtext

    ds, ref = base
    gt = _gt()
    _set_ref_mask(ref, (gt > 0).astype(np.uint8))
    (reference,), _ = samtext.load_references(ds, ref, "cat", "ground_truth")
    assert np.array_equal(reference.mask, gt > 0)
    assert _run(ds, ref).labelled == 1


def _palette_png(path, values):
    img = Image.fromarray(values.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * (256 * 3 - 9))
    img.save(path)
    assert Image.open(path).mode == "P"
    return str(path)


def test_palette_reference_mask_as_path(base, tmp_path):
    import samtext

    ds, ref = base
    gt = _gt() > 0
    path = _palette_png(tmp_path / "palette.png", gt)
    (reference,), _ = samtext.load_references(ds, ref, "cat", reference_mask=path)
    assert np.array_equal(reference.mask, gt)
    summary = _run(ds, ref, reference_field=None, reference_mask=path)
    assert (summary.labelled, summary.failed) == (1, 0)


@pytest.mark.parametrize("kind", ["palette", "rgb_0_255"])
def test_reference_field_with_color_mask_path(base, tmp_path, kind):
    ds, ref = base
    gt = _gt() > 0
    if kind == "palette":
        path = _palette_png(tmp_path / "palette.png", gt)
    else:
        path = str(tmp_path / "rgb.png")
        Image.fromarray(np.repeat((gt * 255).astype(np.uint8)[..., None], 3, axis=2)).save(path)
    _set_ref_mask(ref, mask_path=path)
    summary = _run(ds, ref)
    assert (summary.labelled, summary.failed) == (1, 0)


def test_reference_field_with_grayscale_mask_path(base, tmp_path):
    """A Segmentation stored as an "L" PNG on disk (how the pets and PerSeg masks come)."""
    ds, ref = base
    _set_ref_mask(ref, mask_path=os.path.join(PETS, "masks", REF_STEM + ".png"))
    summary = _run(ds, ref)
    assert (summary.labelled, summary.failed) == (1, 0)


def _multiclass():
    """0 background, 1 a sofa (the top band), 2 the cat."""
    gt = _gt() > 0
    values = np.zeros(gt.shape, np.uint8)
    values[:60] = 1
    values[gt] = 2
    return values


def test_multiclass_reference_mask_needs_the_class_value(base):
    ds, ref = base
    _set_ref_mask(ref, _multiclass())
    with pytest.raises(ValueError) as info:
        _run(ds, ref)
    msg = str(info.value)
    assert "reference_class_value" in msg and "[1, 2]" in msg and ref.id in msg
    _assert_nothing_written(ds)


def test_multiclass_reference_mask_with_class_value(base):
    import samtext

    ds, ref = base
    values = _multiclass()
    _set_ref_mask(ref, values)
    (reference,), _ = samtext.load_references(ds, ref, "cat", "ground_truth", reference_class_value=2)
    assert np.array_equal(reference.mask, values == 2)
    summary = _run(ds, ref, reference_class_value=2)
    assert (summary.labelled, summary.failed) == (1, 0)
    with pytest.raises(ValueError, match="reference_class_value 7 does not occur"):
        _run(ds, ref, reference_class_value=7, out_field="other")


def test_multiclass_reference_mask_class_from_mask_targets(base):
    import samtext

    ds, ref = base
    values = _multiclass()
    _set_ref_mask(ref, values)
    ds.mask_targets = {"ground_truth": {1: "sofa", 2: "cat"}}
    ds.save()
    (reference,), _ = samtext.load_references(ds, ref, "cat", "ground_truth")
    assert np.array_equal(reference.mask, values == 2)
    summary = _run(ds, ref)
    assert (summary.labelled, summary.failed) == (1, 0)
    assert ds.mask_targets["out"] == {1: "cat"} and ds.mask_targets["ground_truth"] == {1: "sofa", 2: "cat"}


@pytest.mark.parametrize("kind", ["path", "bytes", "array"])
def test_reference_mask_given_directly(base, kind):
    import samtext

    ds, ref = base
    path = os.path.join(PETS, "masks", REF_STEM + ".png")
    source = {"path": path, "bytes": open(path, "rb").read(), "array": _gt()}[kind]
    (reference,), ids = samtext.load_references(ds, ref.id, "cat", reference_mask=source)
    assert ids == [ref.id] and np.array_equal(reference.mask, _gt() > 0)
    summary = _run(ds, ref.id, reference_field=None, reference_mask=source)
    assert (summary.labelled, summary.failed) == (1, 0)
    assert ds.get_run_info("samtext_out").config.settings["reference_field"] is None


def test_reference_mask_bytes_not_an_image(base):
    ds, ref = base
    with pytest.raises(ValueError, match="cannot read image") as info:
        _run(ds, ref, reference_field=None, reference_mask=b"not a png")
    assert ref.id in str(info.value)
    _assert_nothing_written(ds)


def test_reference_detections_with_instance_masks(base):
    import fiftyone as fo
    import samtext

    ds, ref = base
    gt = _gt() > 0
    h, w = gt.shape
    ys, xs = np.nonzero(gt)
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    det = fo.Detection(label="cat", bounding_box=[x1 / w, y1 / h, (x2 - x1) / w, (y2 - y1) / h],
                       mask=gt[y1:y2, x1:x2])
    ref["dets"] = fo.Detections(detections=[det])
    ref.save()
    (reference,), _ = samtext.load_references(ds, ref, "cat", "dets")
    assert _iou(reference.mask, gt) > 0.95
    summary = _run(ds, ref, reference_field="dets")
    assert (summary.labelled, summary.failed) == (1, 0)


def test_reference_problems_name_the_reference(base, tmp_path):
    import fiftyone as fo

    ds, ref = base
    # the reference sample has no mask in the field
    (other,) = _add(ds, os.path.join(PETS, "images", "cat_002.jpg"))
    with pytest.raises(ValueError, match="is empty") as info:
        _run(ds, other)
    assert other in str(info.value)
    # its image is missing
    gone = fo.Sample(filepath=str(tmp_path / "gone.jpg"), ground_truth=fo.Segmentation(mask=_gt()))
    ds.add_sample(gone)
    with pytest.raises(ValueError, match="file not found") as info:
        _run(ds, gone)
    assert gone.id in str(info.value)
    # no reference at all, no mask source, an upload with two references
    with pytest.raises(ValueError, match="no reference"):
        _run(ds, None)
    with pytest.raises(ValueError, match="reference_field"):
        _run(ds, ref, reference_field=None)
    with pytest.raises(ValueError, match="exactly one"):
        _run(ds, [ref, ds.last()], reference_field=None, reference_mask=_gt())
    _assert_nothing_written(ds)


@pytest.mark.parametrize("name", ["", "   ", None])
def test_empty_class_name(base, name):
    import samtext

    ds, ref = base
    with pytest.raises(ValueError, match="class_name"):
        samtext.annotate_by_reference(ds, name, reference=ref, reference_field="ground_truth", out_field="out",
                                      **TINY)
    _assert_nothing_written(ds)


@pytest.mark.parametrize("name", ["", "has space", "1st", "a.b"])
def test_invalid_output_field_name(base, name):
    ds, ref = base
    with pytest.raises(ValueError, match="output field .* is not a valid name"):
        _run(ds, ref, out_field=name)


# --- the output field --------------------------------------------------------------------------------


def test_output_field_of_another_type(base):
    """A string field set on some samples: ValueError, and the field untouched."""
    import fiftyone as fo

    ds, ref = base
    _add(ds, os.path.join(PETS, "images", "cat_002.jpg"))
    ds.add_sample_field("taken", fo.StringField)
    sample = ds.skip(1).first()
    sample["taken"] = "keep me"
    sample.save()
    before = ds.values("taken")
    with pytest.raises(ValueError, match="already exists with type StringField"):
        _run(ds, ref, out_field="taken")
    assert ds.values("taken") == before
    assert isinstance(ds.get_field_schema()["taken"], fo.StringField)
    assert "taken" not in ds.mask_targets and "samtext_taken" not in ds.list_runs()


def test_output_field_of_another_label_type(base):
    import fiftyone as fo

    ds, ref = base
    target = ds.skip(1).first()
    target["boxes"] = fo.Detections(detections=[fo.Detection(label="cat", bounding_box=[0.1, 0.1, 0.5, 0.5])])
    target.save()
    _add(ds, os.path.join(PETS, "images", "cat_002.jpg"))
    with pytest.raises(ValueError, match="Detections"):
        _run(ds, ref, out_field="boxes")
    assert ds.count("boxes.detections") == 1
    assert ds.get_field_schema()["boxes"].document_type is fo.Detections


def test_output_field_of_another_type_set_everywhere(base):
    import fiftyone as fo

    ds, ref = base
    ds.add_sample_field("taken", fo.StringField)
    ds.set_values("taken", ["x"] * len(ds))
    with pytest.raises(ValueError, match="already exists"):
        _run(ds, ref, out_field="taken")


def test_prompts_field_of_another_type(base):
    import fiftyone as fo

    ds, ref = base
    ds.add_sample_field("out_prompts", fo.StringField)
    with pytest.raises(ValueError, match="out_prompts"):
        _run(ds, ref, save_prompts=True)
    assert not ds.has_field("out") and not ds.has_field("out_instances")
    assert "samtext_out" not in ds.list_runs()


def test_empty_view(base):
    ds, ref = base
    summary = _run(ds.match({"stem": "no such stem"}), ref)
    assert (summary.targets, summary.labelled, summary.failed, summary.skipped_existing) == (0, 0, 0, 0)
    _assert_nothing_written(ds)
    # a view holding only the reference is as empty
    summary = _run(ds.select(ref.id), ref)
    assert summary.targets == 0
    _assert_nothing_written(ds)


def test_existing_labels_kept_without_overwrite_and_replaced_with_it(base):
    import fiftyone as fo

    ds, ref = base
    (second,) = _add(ds, os.path.join(PETS, "images", "cat_002.jpg"))
    first = ds.skip(1).first()
    h, w = _upright_shape(first.filepath)
    first["out"] = fo.Segmentation(mask=np.ones((h, w), np.uint8), confidence=0.123, note="by hand")
    first.save()
    ds.mask_targets = {"out": {1: "cat"}}  # the hand-made masks are named
    ds.save()
    label_id = first["out"].id

    summary = _run(ds, ref)
    assert (summary.targets, summary.labelled, summary.skipped_existing) == (1, 1, 1)
    kept = ds[first.id]["out"]
    assert kept.id == label_id and kept.confidence == 0.123 and kept["note"] == "by hand"
    assert kept.get_mask().all()
    _check_label(ds, second)

    summary = _run(ds, ref, overwrite=True)
    assert (summary.targets, summary.labelled, summary.skipped_existing) == (2, 2, 0)
    replaced = ds[first.id]["out"]
    assert replaced.id != label_id and replaced.confidence != 0.123 and "similarity" in replaced
    _check_label(ds, first.id)


# --- interruption and resume -------------------------------------------------------------------------


@pytest.fixture
def five(db):
    """cat_000 (reference) and 4 targets."""
    ds = make_pets_dataset(pets_stems(animal="cat", n=3) + pets_stems(animal="dog", n=2))
    return ds, ds.first()


def test_rerun_after_interruption_labels_only_the_rest(five):
    import samtext

    ds, ref = five
    kw = dict(reference=ref, reference_field="ground_truth", out_field="out", **TINY)
    gen = samtext.iter_annotate_by_reference(ds, "cat", **kw)
    assert next(gen) == (0, 4)
    assert next(gen) == (1, 4)
    assert next(gen) == (2, 4)
    gen.close()  # the interruption: the writer flushes what was done
    assert ds.count("out") == 2
    done_first = dict(zip(*ds.exists("out").values(["id", "out.id"])))

    summary = samtext.annotate_by_reference(ds, "cat", **kw)
    assert (summary.targets, summary.labelled, summary.skipped_existing, summary.failed) == (2, 2, 2, 0)
    assert ds.count("out") == 4
    for sid, label_id in done_first.items():
        assert ds[sid]["out"].id == label_id  # the first run's labels were not redone
    assert ds[ref.id]["out"] is None


def test_interrupt_during_sdk_run_keeps_done_labels(five):
    import samtext

    ds, ref = five

    def progress(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        samtext.annotate_by_reference(ds, "cat", reference=ref, reference_field="ground_truth", out_field="out",
                                      progress=progress, **TINY)
    try:
        # the traceback is still alive here, as in a notebook (sys.last_traceback) or an outer handler
        assert info.tb is not None
        assert ds.has_field("out") and ds.count("out") == 2
    finally:
        del info  # let the generator finish (and flush) before the dataset is deleted
        gc.collect()
