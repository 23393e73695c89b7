"""Nothing already in the dataset is lost or silently renamed, every argument is checked before anything is
created, and the run driver keeps its promises (resume with the same settings, run records, fail-fast,
interruption). Real database, tiny models, pets images."""

import os

import numpy as np
import pytest

from conftest import PETS, make_pets_dataset, pets_stems

TINY = dict(sam_model="tiny", device="cpu", min_similarity=None)


@pytest.fixture
def ds(db):
    """cat_000 (the reference, mask in ``ground_truth``) and 4 targets."""
    ds = make_pets_dataset(pets_stems(animal="cat", n=3) + pets_stems(animal="dog", n=2))
    return ds


def _run(samples, **kw):
    import samtext

    ref = samples._root_dataset.first()
    kw.setdefault("reference", ref)
    kw.setdefault("reference_field", "ground_truth")
    kw.setdefault("out_field", "out")
    for k, v in TINY.items():
        kw.setdefault(k, v)
    return samtext.annotate_by_reference(samples, kw.pop("class_name", "cat"), **kw)


def _snapshot(ds):
    """Everything a failed call must leave as it was."""
    return (sorted(ds.get_field_schema()), sorted(ds.list_runs()), dict(ds.mask_targets), len(ds))


def _hand_label(ds, sample, field, value=1, **attrs):
    import fiftyone as fo
    from PIL import Image

    w, h = Image.open(sample.filepath).size
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : h // 2, w // 4 : w // 2] = value
    sample[field] = fo.Segmentation(mask=mask, **attrs)
    sample.save()
    return mask


# --- "already labelled" is read from the dataset --------------------------------------------------------


@pytest.mark.parametrize("hide", ["exclude_fields", "select_fields"])
def test_a_view_that_hides_the_output_field_does_not_overwrite(ds, hide):
    ds.mask_targets = {"out": {1: "cat"}}
    ds.save()
    labelled = ds.skip(1).first()
    mask = _hand_label(ds, labelled, "out", note="by hand")
    label_id = labelled["out"].id
    view = ds.exclude_fields("out") if hide == "exclude_fields" else ds.select_fields("ground_truth")
    assert not view.has_field("out")
    summary = _run(view)
    assert (summary.targets, summary.skipped_existing, summary.labelled) == (3, 1, 3)
    kept = ds[labelled.id]["out"]
    assert kept.id == label_id and kept["note"] == "by hand" and np.array_equal(kept.get_mask(), mask)
    assert ds.count("out") == 4


# --- class values --------------------------------------------------------------------------------------


def test_a_new_class_in_an_existing_field_gets_its_own_value(ds):
    """Running "zebra" into a field of "horse" masks keeps the horses horses."""
    ds.mask_targets = {"animals": {1: "horse"}}
    ds.save()
    horse_sample = ds.skip(1).first()
    horse = _hand_label(ds, horse_sample, "animals")
    summary = _run(ds, class_name="zebra", out_field="animals")
    assert summary.labelled == 3 and summary.skipped_existing == 1
    assert ds.mask_targets["animals"] == {1: "horse", 2: "zebra"}
    assert np.array_equal(ds[horse_sample.id]["animals"].get_mask(), horse)  # untouched, still value 1
    for sample in ds.skip(2):
        values = set(np.unique(sample["animals"].get_mask()).tolist())
        assert values <= {0, 2}, values
        assert all(d.label == "zebra" for d in sample["animals_instances"].detections)
    assert ds.get_run_info("samtext_animals").config.classes == {"2": "zebra"}
    # the same class again keeps its value, even with overwrite
    _run(ds, class_name="zebra", out_field="animals", overwrite=True)
    assert ds.mask_targets["animals"] == {1: "horse", 2: "zebra"}


def test_a_class_the_field_already_names_keeps_its_value(ds):
    ds.default_mask_targets = {1: "dog", 7: "cat"}
    ds.mask_targets = {"ground_truth": {255: "cat"}}
    ds.save()
    _run(ds, out_field="fresh")
    assert ds.mask_targets["fresh"] == {1: "dog", 7: "cat"}
    assert set(np.unique(ds.skip(1).first()["fresh"].get_mask()).tolist()) <= {0, 7}


def test_a_field_of_unnamed_masks_is_refused(ds):
    _hand_label(ds, ds.skip(1).first(), "theirs", value=3)
    before = _snapshot(ds)
    with pytest.raises(ValueError, match="no class names"):
        _run(ds, out_field="theirs")
    assert _snapshot(ds) == before


def test_rgb_mask_targets_are_refused(ds):
    ds.mask_targets = {"rgb": {"#ff0000": "cat"}}
    ds.save()
    with pytest.raises(ValueError, match="RGB"):
        _run(ds, out_field="rgb")


# --- outputs that would overwrite inputs ----------------------------------------------------------------


@pytest.mark.parametrize("out_field", ["ground_truth", "gt"])
def test_the_reference_field_is_never_an_output(ds, out_field):
    import fiftyone as fo

    if out_field == "gt":  # the instances field would be the reference field
        ds.clone_sample_field("ground_truth", "gt_instances")
        ds.add_sample_field("gt", fo.EmbeddedDocumentField, embedded_doc_type=fo.Segmentation)
        reference_field = "gt_instances"
    else:
        reference_field = "ground_truth"
    before = _snapshot(ds)
    gt = [s.get_mask().copy() for s in ds.values(reference_field) if s is not None]
    with pytest.raises(ValueError, match="reads"):
        _run(ds, out_field=out_field, reference_field=reference_field)
    assert _snapshot(ds) == before
    assert all(np.array_equal(a, b.get_mask()) for a, b in zip(gt, [s for s in ds.values(reference_field) if s]))


def test_relative_mask_dir_stores_absolute_paths(ds, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(ds, mask_dir="masks", save_prompts=True)
    for sample in ds.skip(1):
        path = sample["out"].mask_path
        assert os.path.isabs(path) and path.startswith(str(tmp_path)) and os.path.isfile(path)
        for det in sample["out_instances"].detections:
            assert os.path.isabs(det.mask_path) and os.path.isfile(det.mask_path)
    assert ds.get_run_info("samtext_out").config.mask_dir == str(tmp_path / "masks")
    monkeypatch.chdir(PETS)  # another working directory: the paths still open
    assert ds.skip(1).first()["out"].get_mask().ndim == 2


# --- everything is checked before anything is created ---------------------------------------------------


BAD = [
    (dict(method="nope"), "unknown method 'nope'"),
    (dict(sam_model="vit_q"), "unknown sam_model 'vit_q'"),
    (dict(method="stitch", clip_model="ViT-Q-99"), "unknown clip_model 'ViT-Q-99'"),
    (dict(precision="fp16"), "precision"),
    (dict(device="cuda:3"), "no CUDA GPU"),
    (dict(device="gpu please"), "not a torch device"),
    (dict(min_similarity="high"), "min_similarity"),
    (dict(clip_threshold=1.5), "clip_threshold"),
    (dict(max_instances=0), "max_instances"),
    (dict(batch_size=0), "batch_size"),
    (dict(fail_fast=-1), "fail_fast"),
    (dict(shard=(2, 2)), "shard"),
    (dict(out_field="bad name"), "not a valid name"),
    (dict(class_name="  "), "class_name"),
    (dict(reference="abc"), "'abc' is not a sample ID"),
    (dict(reference="0123456789abcdef01234567"), "no sample with this ID"),
    (dict(reference_field="nowhere"), "reference_field 'nowhere' is not a field"),
    (dict(reference_class_value="cat"), "reference_class_value must be"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m for _, m in BAD])
def test_bad_arguments_create_nothing(ds, kwargs, message):
    import torch

    if "cuda" in str(kwargs.get("device")) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = _snapshot(ds)
    with pytest.raises(ValueError) as info:
        _run(ds, **kwargs)
    assert message in str(info.value)
    assert "KeyError" not in str(info.value) and "filepath" not in str(info.value)
    assert _snapshot(ds) == before


def test_a_class_value_given_as_text_is_the_number(ds):
    from PIL import Image

    ref = ds.first()
    gt = np.asarray(Image.open(os.path.join(PETS, "masks", ref["stem"] + ".png")))
    values = np.where(gt > 0, 200, 0).astype(np.uint8)
    values[:40] = 100  # another class
    import fiftyone as fo

    ref["ground_truth"] = fo.Segmentation(mask=values)
    ref.save()
    summary = _run(ds, reference_class_value="200")
    assert summary.labelled == 4
    assert ds.get_run_info("samtext_out").config.settings["reference_class_value"] == 200


def test_box_only_detections_say_they_have_no_masks(ds):
    import fiftyone as fo

    ref = ds.first()
    ref["boxes"] = fo.Detections(detections=[fo.Detection(label="cat", bounding_box=[0.1, 0.1, 0.5, 0.5])])
    ref.save()
    with pytest.raises(ValueError, match="carry no instance masks") as info:
        _run(ds, reference_field="boxes")
    assert ref.id in str(info.value)


# --- resume -------------------------------------------------------------------------------------------


def test_resume_with_other_settings_is_refused_unless_overwrite(ds):
    import samtext

    gen = samtext.iter_annotate_by_reference(ds, "cat", reference=ds.first(), reference_field="ground_truth",
                                             out_field="out", **TINY)
    next(gen), next(gen), next(gen)
    gen.close()
    assert ds.count("out") == 2
    before = _snapshot(ds)
    with pytest.raises(ValueError) as info:
        _run(ds, max_instances=3)
    assert "max_instances: 10 -> 3" in str(info.value) and "overwrite=True" in str(info.value)
    assert _snapshot(ds) == before and ds.count("out") == 2
    summary = _run(ds)  # the same settings: resumes
    assert (summary.targets, summary.skipped_existing) == (2, 2)
    summary = _run(ds, max_instances=3, overwrite=True)
    assert summary.targets == 4
    assert ds.get_run_info("samtext_out").config.settings["max_instances"] == 3


def test_the_run_record_keeps_start_end_and_summary_of_each_run(ds):
    first = _run(ds.limit(3))
    second = _run(ds)
    config = ds.get_run_info("samtext_out").config
    runs = config.runs
    assert len(runs) == 2 and config.last_run in runs
    for run, summary in zip(sorted(runs.values(), key=lambda r: r["started"]), (first, second)):
        assert run["status"] == "completed" and run["started"] <= run["finished"]
        assert run["summary"]["labelled"] == summary.labelled and run["summary"]["targets"] == summary.targets
    assert "gate_in_use" in config.learnt and config.learnt["models"]["sam"] == "tiny"
    assert config.samtext_version and config.fiftyone_version


# --- fail fast --------------------------------------------------------------------------------------------


def test_a_run_whose_first_samples_all_fail_stops_with_one_error(ds, tmp_path):
    import fiftyone as fo
    import samtext

    broken = fo.Dataset()
    broken.add_samples([fo.Sample(filepath=str(tmp_path / ("missing_%d.jpg" % i))) for i in range(8)])
    with pytest.raises(samtext.RunStopped) as info:
        _run(broken, reference=ds.first(), fail_fast=3)
    msg = str(info.value)
    assert "first 3 samples all failed" in msg and "missing_0.jpg" in msg and "file not found" in msg
    assert broken.count("out") == 0  # the run had opened its field and record; it wrote no label
    runs = broken.get_run_info("samtext_out").config.runs
    (run,) = runs.values()
    assert run["status"] == "stopped" and run["summary"]["failed"] == 3
    # fail_fast=0 never stops: every sample is tried and reported
    summary = _run(broken, reference=ds.first(), fail_fast=0, out_field="out2")
    assert (summary.failed, summary.labelled, len(summary.errors)) == (8, 0, 8)


def test_failures_after_a_success_do_not_stop_the_run(ds, tmp_path):
    import fiftyone as fo

    ds.add_samples([fo.Sample(filepath=str(tmp_path / ("missing_%d.jpg" % i))) for i in range(4)])
    summary = _run(ds, fail_fast=2)
    assert summary.status == "completed" and (summary.labelled, summary.failed) == (4, 4)


# --- interruption ---------------------------------------------------------------------------------------


def test_an_interrupted_run_flushes_and_records_how_it_ended(ds):
    import samtext

    gen = samtext.iter_annotate_by_reference(ds, "cat", reference=ds.first(), reference_field="ground_truth",
                                             out_field="out", batch_size=100, **TINY)
    assert next(gen) == (0, 4)
    next(gen), next(gen), next(gen)
    gen.close()  # what Ctrl-C, or the App's cancel, does to the generator
    assert ds.count("out") == 3 and ds.count("out_instances") == 3
    (run,) = ds.get_run_info("samtext_out").config.runs.values()
    assert run["status"] == "canceled" and run["summary"]["labelled"] == 3
