"""Issue 19's list, one test each: ways to lose data, refusals that left something behind, raw crashes and
misleading messages. Every refusal is a :class:`samtext.SamtextError` naming the parameter (or field) and the bad
value, and leaves the dataset and the disk as they were. Real database, tiny models, pets photos."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import PETS, make_pets_dataset, pets_stems

TINY = dict(sam_model="tiny", device="cpu")


@pytest.fixture
def ds(db):
    """cat_000 (its mask in ``ground_truth``, 0/255) and 4 targets, each with its true mask."""
    return make_pets_dataset(pets_stems(animal="cat", n=3) + pets_stems(animal="dog", n=2))


def _snapshot(ds):
    """What a refused call must leave as it was."""
    ds.reload()
    return (sorted(ds.get_field_schema()), sorted(ds.list_runs()), sorted(ds.list_brain_runs()),
            dict(ds.mask_targets), len(ds), sorted(ds.list_evaluations()))


def _refused(call, *words):
    """Runs ``call``; asserts a SamtextError whose message holds every one of ``words``; returns the message."""
    import samtext

    with pytest.raises(samtext.SamtextError) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    return message


def _reference_run(ds, **kw):
    import samtext

    kw = dict(dict(reference=ds.first(), reference_field="ground_truth", out_field="cats", min_similarity=None, **TINY),
              **kw)
    return samtext.annotate_by_reference(ds, kw.pop("class_name", "cat"), **kw)


def _proposals(ds, field="props"):
    import samtext

    return samtext.compute_mask_proposals(ds, out_field=field, embedder="clip", clip_model="tiny",
                                          clip_pretrained=None, points_per_side=4, pred_iou_thresh=0.0,
                                          stability_score_thresh=0.0, min_area=0, **TINY)


# --- exports never delete what they did not write ------------------------------------------------------------


def _mask_files(ds, field, folder):
    """Writes ``field`` on every sample as PNG masks under ``folder``; returns their paths."""
    import fiftyone as fo

    os.makedirs(folder, exist_ok=True)
    paths = []
    for s in ds:
        path = os.path.join(folder, "%s.png" % s.id)
        Image.fromarray(np.asarray(s.ground_truth.get_mask())).save(path)
        s[field] = fo.Segmentation(mask_path=path)
        s.save()
        paths.append(path)
    return paths


def test_export_overwrite_keeps_other_files_in_the_folder(ds, tmp_path):
    import samtext

    ds.mask_targets = {"cats": {255: "cat"}, "other": {255: "cat"}}
    ds.save()
    _mask_files(ds, "cats", str(tmp_path / "cats_masks"))
    export_dir = tmp_path / "export"
    other = _mask_files(ds, "other", str(export_dir / "labels"))  # another field's masks live in the folder
    other += [str(export_dir / "labels_instances" / "a.png")]
    os.makedirs(export_dir / "labels_instances")
    Image.new("L", (4, 4)).save(other[-1])
    before = {p: open(p, "rb").read() for p in other}
    result = samtext.export_labels(ds, "cats", str(export_dir), overwrite=True, export_media=False)
    assert result["exported"] == len(ds)
    assert {p: open(p, "rb").read() for p in other} == before  # untouched
    assert len(os.listdir(export_dir / "labels")) == 2 * len(ds)
    again = samtext.export_labels(ds.limit(2), "cats", str(export_dir), overwrite=True, export_media=False)
    assert again["exported"] == 2 and {p: open(p, "rb").read() for p in other} == before
    assert len(os.listdir(export_dir / "labels")) == len(ds) + 2  # the earlier export's files went, not the others'


def test_export_refuses_to_replace_a_file_it_did_not_write(ds, tmp_path):
    import samtext

    export_dir = tmp_path / "export"
    os.makedirs(export_dir)
    (export_dir / "classes.json").write_text("mine")
    _refused(lambda: samtext.export_labels(ds, "ground_truth", str(export_dir), overwrite=True), "classes.json",
             "did not write")
    assert os.listdir(export_dir) == ["classes.json"] and (export_dir / "classes.json").read_text() == "mine"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".samtext-export")]  # no staging left behind


def test_export_leaves_out_unreadable_samples_by_name_and_writes_nothing_half(ds, tmp_path):
    import fiftyone as fo
    import samtext

    ds.mask_targets = {"cats": {255: "cat"}}
    ds.save()
    paths = _mask_files(ds, "cats", str(tmp_path / "masks"))
    os.remove(paths[1])  # a missing mask
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    bad_image = ds.skip(2).first()
    bad_image.filepath = str(broken)
    bad_image.save()
    gone = ds.skip(3).first()  # an image that is not there
    gone.filepath = str(tmp_path / "gone.jpg")
    gone.save()
    result = samtext.export_labels(ds, "cats", str(tmp_path / "out"))
    assert result["exported"] == len(ds) - 3 and result["failed"] == 3
    ids = ds.values("id")
    assert any(ids[1] in e and "not found" in e for e in result["errors"])
    assert any(ids[2] in e and "broken.jpg" in e for e in result["errors"])
    assert any(ids[3] in e and "gone.jpg" in e for e in result["errors"])
    assert all("Traceback" not in e and "Errno" not in e for e in result["errors"]), result["errors"]
    # a failure inside FiftyOne's exporter leaves the folder as it was
    ds.mask_targets = {"cats": {255: "cat"}}
    target = tmp_path / "out2"
    sample = ds.first()
    sample["cats"] = fo.Segmentation(mask=np.zeros((4, 4, 5), np.float32))
    sample.save()
    _refused(lambda: samtext.export_labels(ds.limit(1), "cats", str(target)), "nothing was written")
    assert not target.exists()


@pytest.mark.parametrize("case", ["file", "under_a_file"])
def test_export_dir_that_is_a_file(ds, tmp_path, case):
    import samtext

    f = tmp_path / "a_file"
    f.write_text("x")
    where = f if case == "file" else f / "sub"
    _refused(lambda: samtext.export_labels(ds, "ground_truth", str(where)), "export_dir", "a file, not a folder")
    assert f.read_text() == "x"


def test_a_label_approved_after_rejection_is_exported_and_trained(ds, tmp_path):
    import samtext
    from samtext.actions.train import scan_samples
    from samtext.run import class_maps as lm

    ds.mask_targets = {"ground_truth": {255: "cat"}}
    ds.save()
    sample = ds.skip(1).first()
    sample.ground_truth.tags = ["samtext:reject", "approved"]
    sample.save()
    other = ds.skip(2).first()
    other.ground_truth.tags = ["samtext:reject"]
    other.save()
    result = samtext.export_labels(ds, "ground_truth", str(tmp_path / "out"), export_media=False)
    assert (result["exported"], result["skipped_rejected"]) == (len(ds) - 1, 1)
    plan = scan_samples(ds, "ground_truth", lm.ClassMapReader(ds, "ground_truth", ["cat"]), "samtext:reject")
    assert plan.skipped_rejected == 1 and sample.id in plan.ids and other.id not in plan.ids


# --- ground truth, exemplars, references and other runs' fields are never outputs ------------------------------


def test_few_shot_into_the_field_its_exemplar_masks_come_from_is_refused(ds):
    import samtext

    _proposals(ds)
    before = _snapshot(ds)
    masks = [m.tobytes() for m in (s.ground_truth.get_mask() for s in ds)]
    _refused(lambda: samtext.annotate_by_examples(
        ds, {"cat": samtext.Exemplars(mask_field="ground_truth", mask_samples=[ds.first().id], mask_class=255)},
        proposals_field="props", out_field="ground_truth", device="cpu"), "ground_truth",
        "reads")
    assert _snapshot(ds) == before
    assert [m.tobytes() for m in (s.ground_truth.get_mask() for s in ds)] == masks


def test_an_other_runs_instances_field_is_not_an_output(ds):
    _reference_run(ds)
    before = _snapshot(ds)
    _refused(lambda: _proposals(ds, field="cats_instances"), "cats_instances", "instances of samtext field 'cats'")
    assert _snapshot(ds) == before


def test_a_reference_field_and_an_evaluated_ground_truth_are_not_outputs(ds):
    import samtext

    _reference_run(ds)
    _reference_run(ds, out_field="dogs", reference_field="cats", reference=ds.skip(1).first())  # cats: a reference
    ds.mask_targets = {"cats": {1: "cat"}, "ground_truth": {255: "cat"}}
    ds.save()
    before = _snapshot(ds)
    msg = _refused(lambda: _reference_run(ds, out_field="ground_truth", reference_field="cats",
                                          reference=ds.skip(1).first()), "ground_truth")
    assert "input of the samtext run" in msg or "reads" in msg
    _refused(lambda: _proposals(ds, field="cats"), "cats", "input of the samtext run of 'dogs'")
    assert _snapshot(ds) == before
    samtext.evaluate(ds, "cats", "ground_truth", eval_key="e")
    ds.clone_sample_field("ground_truth", "gt2")
    ds.mask_targets["gt2"] = {255: "cat"}
    ds.save()
    samtext.evaluate(ds, "cats", "gt2", eval_key="e2")
    _refused(lambda: _reference_run(ds, out_field="gt2"), "gt2", "ground truth of evaluation 'e2'")


# --- classes at pixel value 0 -------------------------------------------------------------------------------


def test_a_class_named_at_pixel_value_0_is_a_class(ds):
    import samtext

    ds.clone_sample_field("ground_truth", "camvid")
    ds.mask_targets = {"camvid": {0: "Sky", 255: "Cat"}, "pred": {0: "Sky", 255: "Cat"}}
    ds.save()
    ds.clone_sample_field("camvid", "pred")
    report = samtext.evaluate(ds, "pred", "camvid", eval_key=None)
    assert "Sky" in report.class_iou and report.class_iou["Sky"] == pytest.approx(1.0)
    from samtext.actions.train import training_classes

    assert training_classes(ds, "camvid", ["Sky"], None) == ["Sky"]
    before = _snapshot(ds)
    _refused(lambda: _reference_run(ds, out_field="camvid"), "camvid", "Sky", "background")
    assert _snapshot(ds) == before


# --- run records: dead runs, two writers ------------------------------------------------------------------------


def test_a_dead_run_is_closed_as_interrupted_and_consumers_go_on(ds, monkeypatch, tmp_path):
    import samtext
    from samtext.actions.train import check_not_running
    from samtext.run import records

    _reference_run(ds)
    key = records.run_key_for("cats")
    # what a run killed with -9 leaves: a "running" entry whose process is gone and whose heartbeat stopped
    dead = records.new_entry(shard=None, overwrite=False, targets=4)
    dead.update(pid=2 ** 22 + 7, heartbeat=dead["heartbeat"] - 5)
    records.update_run(ds, key, **{"runs.deadbeef0000": dead})
    assert records.running_runs(ds, "cats") == ("annotate_by_reference", [])  # the process is gone: dead now
    assert records.read_run(ds, key)["runs"]["deadbeef0000"]["status"] == "interrupted"
    # another host's run: dead once its heartbeat is older than the limit
    far = dict(records.new_entry(), host="elsewhere", pid=1, heartbeat=dead["heartbeat"])
    records.update_run(ds, key, **{"runs.far000000000": far})
    assert records.running_runs(ds, "cats")[1] == ["far000000000"]
    assert samtext.export_labels(ds, "cats", str(tmp_path / "e"))["warnings"]  # still running: a warning
    _refused(lambda: check_not_running(ds, "cats"), "far000000000", "still being written")  # train refuses
    monkeypatch.setenv("SAMTEXT_STALE_AFTER_S", "1")
    records.update_run(ds, key, **{"runs.far000000000.heartbeat": far["heartbeat"] - 60})
    check_not_running(ds, "cats")  # train, the first to read the record, takes the field and closes the run
    assert records.read_run(ds, key)["runs"]["far000000000"]["status"] == "interrupted"
    assert records.running_runs(ds, "cats")[1] == []
    assert not samtext.export_labels(ds, "cats", str(tmp_path / "e2"))["warnings"]


def test_two_actions_into_one_field_at_once_the_second_is_refused(ds):
    from samtext.run import records

    _reference_run(ds, out_field="cats")
    key = records.run_key_for("cats")
    records.update_run(ds, key, **{"runs.live00000000": records.new_entry()})  # this process: alive
    before = _snapshot(ds)
    _refused(lambda: _reference_run(ds, out_field="cats", method="stitch", clip_model="tiny", clip_pretrained=None,
                                    overwrite=True), "cats", "being written right now")
    assert _snapshot(ds) == before


def test_two_runs_started_together_keep_both_entries(ds):
    """Threads stand in for processes: both pass their checks, then race to create the record."""
    import threading

    from samtext.run import driver, records
    from samtext.actions.by_reference import iter_annotate_by_reference

    gate = threading.Barrier(2)
    original = driver.open_outputs

    def together(*a, **k):
        gate.wait(timeout=60)
        return original(*a, **k)

    driver.open_outputs = together
    try:
        results = []

        def run(view):
            results.append(driver.run_with_progress(iter_annotate_by_reference(
                view, "cat", reference=ds.first(), reference_field="ground_truth", out_field="cats",
                min_similarity=None, **TINY)))

        ids = ds.values("id")
        threads = [threading.Thread(target=run, args=(ds.select(ids[k::2] + [ids[0]]),)) for k in (0, 1)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        driver.open_outputs = original
    assert len(results) == 2
    entries = records.read_run(ds, records.run_key_for("cats"))["runs"]
    assert len(entries) == 2 and {e["status"] for e in entries.values()} == {"completed"}
    assert ds.count("cats") == len(ds) - 1


# --- parameters: the name, the value, the fix; nothing created ---------------------------------------------------


def test_bad_parameters_are_named_and_leave_nothing(ds, tmp_path):
    import samtext

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    before = _snapshot(ds)
    _refused(lambda: samtext.annotate_by_text(ds, 123, **TINY), "prompts", "123")
    _refused(lambda: _reference_run(ds, mask_dir=str(a_file)), "mask_dir", "a_file")
    _refused(lambda: _proposals_with(ds, embeddings_dir=str(a_file)), "embeddings_dir", "a_file")
    _refused(lambda: _reference_run(ds, min_similarity=float("nan")), "min_similarity", "nan")
    assert _snapshot(ds) == before


def _proposals_with(ds, **kw):
    import samtext

    return samtext.compute_mask_proposals(ds, out_field="props", clip_model="tiny", clip_pretrained=None, **TINY, **kw)


def test_map_and_rerun_parameters(ds):
    import samtext

    _proposals(ds)
    before = _snapshot(ds)
    _refused(lambda: samtext.compute_proposal_map(ds, "props", fit_cap=0), "fit_cap", "0")
    msg = _refused(lambda: samtext.compute_proposal_map(ds, "props", brain_key="bad key"), "brain_key", "bad key")
    assert "output field" not in msg
    _refused(lambda: samtext.compute_proposal_map(ds, "props", num_clusters="many"), "num_clusters", "many")
    assert _snapshot(ds) == before
    _reference_run(ds)
    s = ds.skip(1).first()
    s.cats.tags = ["approved"]
    s.save()
    before = _snapshot(ds)
    _refused(lambda: samtext.rerun_from_approved(ds, "cats", max_approved=0), "max_approved", "0")
    _refused(lambda: samtext.rerun_from_approved(ds, "cats", min_similarity=float("nan")), "min_similarity")
    assert _snapshot(ds) == before


def test_exemplar_parameters_speak_of_exemplars(ds):
    import samtext

    _proposals(ds)
    before = _snapshot(ds)
    msg = _refused(lambda: samtext.annotate_by_examples(
        ds, {"cat": samtext.Exemplars(mask_field="ground_truth", mask_samples=["nope"])}, proposals_field="props",
        device="cpu"), "mask_samples", "nope")
    assert "reference" not in msg
    _refused(lambda: samtext.annotate_by_examples(ds, {"cat": samtext.Exemplars(clusters=["red"])},
                                                  proposals_field="props"), "clusters", "red")
    _refused(lambda: samtext.annotate_by_examples(ds, {"cat": samtext.Exemplars(tag="x")}, proposals_field="props",
                                                  threshold="high"), "threshold", "high")
    assert _snapshot(ds) == before


def test_evaluate_and_review_messages(ds):
    import samtext

    _reference_run(ds)
    msg = _refused(lambda: samtext.evaluate(ds, "cats", "ground_truth", gt_targets={"horse": 255}), "gt_targets",
                   "horse")
    assert "RGB" not in msg and "{255: 'horse'}" in msg
    _refused(lambda: samtext.evaluate(ds, "cats", "cats"), "cats", "itself")
    msg = _refused(lambda: samtext.review(ds, "cats", compare_field="nothing_here"), "compare_field", "nothing_here")
    assert "ground truth" not in msg
    ds.add_sample_field("declared", __import__("fiftyone").EmbeddedDocumentField,
                        embedded_doc_type=__import__("fiftyone").Segmentation)
    msg = _refused(lambda: samtext.train(ds, "declared", epochs=1), "declared", "no label")
    assert "no class names" not in msg


def test_a_many_channel_float_mask_is_named_as_such(ds):
    import fiftyone as fo

    ref = ds.first()
    ref["ground_truth"] = fo.Segmentation(mask=np.random.rand(*ref.ground_truth.get_mask().shape, 5).astype(np.float32))
    ref.save()
    msg = _refused(lambda: _reference_run(ds), "5 channels")
    assert "empty" not in msg


# --- training and prediction ------------------------------------------------------------------------------------


def test_predict_on_cuda_without_cuda_and_an_unwritable_model_path(ds, tmp_path):
    import samtext
    import torch

    if not torch.cuda.is_available():
        _refused(lambda: samtext.predict(ds, str(tmp_path / "m.pt"), device="cuda"), "device", "cuda")
    ds.mask_targets = {"ground_truth": {255: "cat"}}
    ds.save()
    before = _snapshot(ds)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    train = dict(epochs=1, arch="lraspp", backbone_weights=None)
    _refused(lambda: samtext.train(ds, "ground_truth", model_path=str(a_file / "m.pt"), **train), "model_path",
             "a_file")
    _refused(lambda: samtext.train(ds, "ground_truth", model_path=str(tmp_path), **train), "model_path", "folder")
    if os.getuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        os.chmod(locked, 0o500)
        try:
            _refused(lambda: samtext.train(ds, "ground_truth", model_path=str(locked / "m.pt"), **train),
                     "model_path", "permission")
        finally:
            os.chmod(locked, 0o700)
    assert _snapshot(ds) == before


def test_a_truncated_jpeg_is_left_out_of_training_and_all_background_says_so(ds, tmp_path):
    import samtext

    ds.mask_targets = {"ground_truth": {255: "cat"}}
    ds.save()
    truncated = tmp_path / "truncated.jpg"
    data = open(ds.skip(1).first().filepath, "rb").read()
    truncated.write_bytes(data[: len(data) // 3])
    s = ds.skip(1).first()
    s.filepath = str(truncated)
    s.save()
    summary = samtext.train(ds, "ground_truth", model_path=str(tmp_path / "m.pt"), epochs=2, arch="lraspp", backbone_weights=None,
                            image_size=64, batch_size=2, val_fraction=0.0, device="cpu")
    assert summary.status == "completed"
    assert any(s.id in str(e) for e in summary.errors)
    for sample in ds:
        sample.ground_truth.mask = np.zeros_like(sample.ground_truth.get_mask())
        sample.save()
    empty = samtext.train(ds, "ground_truth", model_path=str(tmp_path / "m2.pt"), epochs=1, arch="lraspp", backbone_weights=None,
                          image_size=64, batch_size=2, val_fraction=0.0, device="cpu")
    assert any("background" in n for n in empty.notes)


# --- runs -----------------------------------------------------------------------------------------------------


def test_a_summary_counts_only_samples_that_still_exist(ds):
    import samtext
    from samtext.run import driver

    victim = ds.skip(3).first().id
    events = samtext.iter_annotate_by_reference(ds, "cat", reference=ds.first(), reference_field="ground_truth",
                                                out_field="cats", min_similarity=None, batch_size=100, **TINY)

    def delete_once(done, total):
        if done == 1:
            ds.delete_samples([victim])

    summary = driver.run_with_progress(events, delete_once)
    assert summary.labelled == ds.count("cats") == len(ds) - 1
    assert any("deleted" in n for n in summary.notes)


def test_resuming_proposals_on_a_cloned_dataset(ds):
    _proposals(ds)
    first = ds.first()
    first.props = None
    first.save()
    clone = ds.clone()
    summary = _proposals(clone)
    assert summary.labelled == 1 and summary.skipped_existing == len(ds) - 1


def test_evaluating_a_field_without_any_label_warns(ds):
    import fiftyone as fo
    import samtext

    ds.add_sample_field("declared", fo.EmbeddedDocumentField, embedded_doc_type=fo.Segmentation)
    report = samtext.evaluate(ds, "declared", "ground_truth", gt_targets={255: "cat"}, pred_targets={255: "cat"},
                              eval_key=None)
    assert report.missing_predictions == len(ds) and "no evaluated sample has a label in 'declared'" in report.warnings[0]


def test_export_over_an_earlier_one_never_leaves_half_and_ignores_a_forged_manifest(ds, tmp_path):
    """New files go in before the earlier export's other files go; a manifest entry pointing outside the folder is
    never followed."""
    import samtext

    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    target = tmp_path / "out"
    samtext.export_labels(ds, "ground_truth", str(target), export_media=False)
    manifest = target / ".samtext_export.json"
    entries = json.loads(manifest.read_text()) + ["../precious.txt", str(outside)]
    manifest.write_text(json.dumps(entries))
    again = samtext.export_labels(ds.limit(2), "ground_truth", str(target), overwrite=True, export_media=False)
    assert again["exported"] == 2 and outside.read_text() == "keep me"
    assert len(os.listdir(target / "labels")) == 2
    assert not [n for n in os.listdir(target) if n.startswith(".samtext-export-")]
