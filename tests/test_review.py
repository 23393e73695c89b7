"""Review of pseudo-labels, the loop from approved labels back into a rerun, and export: on a real database."""

import json
import os

import numpy as np
import pytest

from doubles import BLUE, GREEN, RED, YELLOW, FakeSegmenter

pytestmark = pytest.mark.usefixtures("db")


def _blank(tmp_path, n, size=(60, 80)):
    import fiftyone as fo
    from PIL import Image

    ds = fo.Dataset()
    for k in range(n):
        path = str(tmp_path / ("img_%d.png" % k))
        Image.fromarray(np.full(size + (3,), 90, np.uint8)).save(path)
        ds.add_sample(fo.Sample(filepath=path, index=k))
    return ds


def _box(size, y0, x0, y1, x1, value=1):
    m = np.zeros(size, np.uint8)
    m[y0:y1, x0:x1] = value
    return m


@pytest.fixture
def reviewed(tmp_path):
    """Six labels, each with one known problem (or none), and a second field that agrees on some of them."""
    import fiftyone as fo

    size = (60, 80)
    ds = _blank(tmp_path, 6, size)
    good = _box(size, 10, 10, 40, 50)
    fragmented = np.zeros(size, np.uint8)
    for k in range(7):
        fragmented[5:15, 2 + 11 * k: 9 + 11 * k] = 1
    masks = [good, np.zeros(size, np.uint8), _box(size, 0, 0, 2, 2), np.ones(size, np.uint8), fragmented, good]
    confidences = [0.9, 0.8, 0.9, 0.9, 0.9, 0.2]
    for sample, mask, conf in zip(ds.iter_samples(autosave=True), masks, confidences):
        sample["pseudo"] = fo.Segmentation(mask=mask, confidence=conf)
        other = good if sample.index != 0 else _box(size, 40, 50, 60, 80)  # sample 0: the other field disagrees
        sample["other"] = fo.Segmentation(mask=other * 7)
    ds.mask_targets = {"pseudo": {1: "cat"}, "other": {7: "cat"}}
    ds.save()
    return ds


def test_review_flags_each_problem_tags_rejects_and_saves_the_worst_first_view(reviewed):
    import samtext

    ds = reviewed
    report = samtext.review(ds, "pseudo", compare_field="other", min_confidence=0.5, max_fragments=5,
                            min_fragment_pixels=10)
    flags = {s.index: s["pseudo"].review_flags for s in ds}
    assert flags[0] == ["disagreement"]
    assert flags[1] == ["empty", "disagreement"]  # empty, while the other field has the cat
    assert "tiny" in flags[2] and "whole_image" in flags[3] and "fragments" in flags[4]
    assert flags[5] == ["low_confidence"]
    assert ds.first()["pseudo"].agreement == pytest.approx(0.0)
    assert ds.skip(5).first()["pseudo"].agreement == pytest.approx(1.0)
    assert report.reviewed == 6 and report.flagged["fragments"] == 1 and report.flagged["empty"] == 1
    rejected = {s.index for s in ds.match_labels(tags=report.reject_tag, fields="pseudo")}
    assert rejected == {0, 1, 2, 3, 4, 5}  # every one has a rejecting flag (empty+disagreement, too)
    view = ds.load_saved_view(report.view_name)
    scores = view.values("pseudo.review_score")
    assert scores == sorted(scores) and len(view) == 6
    # the App can sort and filter by the attributes: they are declared in the schema
    assert "review_score" in ds.get_field("pseudo").get_field_schema()


def test_approved_labels_are_never_rejected_and_a_second_review_replaces_the_first(reviewed):
    import samtext

    ds = reviewed
    low = ds.match({"index": 5}).first()
    low["pseudo"].tags = ["approved"]
    low.save()
    report = samtext.review(ds, "pseudo", min_confidence=0.5)
    rejected = {s.index for s in ds.match_labels(tags=report.reject_tag, fields="pseudo")}
    assert 5 not in rejected and report.approved == 1
    assert 5 not in set(ds.load_saved_view(report.view_name).values("index"))
    report = samtext.review(ds, "pseudo", min_confidence=None, reject=["whole_image"])
    assert {s.index for s in ds.match_labels(tags=report.reject_tag, fields="pseudo")} == {3}


def test_review_bad_arguments_change_nothing(reviewed):
    import samtext

    ds = reviewed
    for kwargs, message in ((dict(reject=["blurry"]), "unknown review flag"),
                            (dict(min_area=0.5, max_area=0.1), "min_area < max_area"),
                            (dict(compare_field="pseudo"), "itself"),
                            (dict(compare_field="nope"), "not a field")):
        with pytest.raises(ValueError, match=message):
            samtext.review(ds, "pseudo", **kwargs)
    with pytest.raises(ValueError, match="fo.Segmentation"):
        samtext.review(ds, "index")
    assert not any(label.has_field("review_flags") for label in ds.values("pseudo"))


def test_export_writes_the_kept_labels_as_masks_and_as_coco(reviewed, tmp_path):
    import samtext
    from PIL import Image

    ds = reviewed
    samtext.review(ds, "pseudo", min_confidence=None, reject=["whole_image"])
    out = samtext.export_labels(ds, "pseudo", str(tmp_path / "seg"))
    assert (out["exported"], out["skipped_rejected"]) == (5, 1)
    masks = sorted(os.listdir(tmp_path / "seg" / "labels"))
    assert len(masks) == 5
    first = np.asarray(Image.open(tmp_path / "seg" / "labels" / masks[0]))
    assert set(np.unique(first)) <= {0, 1}
    out = samtext.export_labels(ds, "pseudo", str(tmp_path / "coco"), format="coco", export_media=False)
    labels = json.load(open(tmp_path / "coco" / "labels.json"))
    assert [c["name"] for c in labels["categories"]] == ["cat"]
    assert len(labels["images"]) == 5
    per_image = {}
    for ann in labels["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert sorted(per_image.values()) == [1, 1, 1, 7]  # good x2, tiny, fragmented (7 pieces); empty has none
    with pytest.raises(ValueError, match="not empty"):
        samtext.export_labels(ds, "pseudo", str(tmp_path / "coco"), format="coco")
    with pytest.raises(ValueError, match="unknown export format"):
        samtext.export_labels(ds, "pseudo", str(tmp_path / "x"), format="voc")
    assert json.load(open(tmp_path / "seg" / "classes.json")) == {"1": "cat"}
    # the folder of the images themselves is refused, even with overwrite: replacing it would delete them
    with pytest.raises(ValueError, match="holds the dataset's own files"):
        samtext.export_labels(ds, "pseudo", str(tmp_path), overwrite=True)
    assert all(os.path.isfile(p) for p in ds.values("filepath"))
    # a mask corrected in the App (the segmentation) is what COCO gets, not the run's old objects
    sample = ds.match({"index": 0}).first()
    sample["pseudo"].mask = _box((60, 80), 0, 0, 10, 10)
    sample.save()
    samtext.export_labels(ds, "pseudo", str(tmp_path / "coco"), format="coco", export_media=False, overwrite=True)
    anns = json.load(open(tmp_path / "coco" / "labels.json"))["annotations"]
    assert any(a["bbox"] == [0.0, 0.0, 10.0, 10.0] for a in anns)


# ---------------------------------------------------------------------------------------- the loop


def _iou(a, b):
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


@pytest.fixture
def fruit(tmp_path, monkeypatch):
    """Scenes where the class "fruit" is a red disc in some images and a yellow one in others (a green box
    beside it), a reference showing only a red one, and a known-answer segmenter."""
    import fiftyone as fo

    import samtext.actions.by_reference as sref
    from conftest import make_scenes_dataset

    scenes = [[("disc", RED, 50, 60), ("rect", GREEN, 110, 140)],
              [("disc", RED, 100, 50), ("rect", GREEN, 40, 150)],
              [("disc", RED, 60, 140), ("rect", BLUE, 120, 50)],
              [("disc", YELLOW, 50, 60), ("rect", GREEN, 110, 140)],
              [("disc", YELLOW, 110, 90), ("rect", GREEN, 40, 40)],
              [("disc", YELLOW, 70, 150), ("rect", BLUE, 110, 40)]]
    ds, truth = make_scenes_dataset(scenes, tmp_path)
    ref = ds.first()
    ref["gt"] = fo.Segmentation(mask=truth[0][0][1].astype(np.uint8) * 255)
    ref.save()
    double = FakeSegmenter()
    monkeypatch.setattr(sref, "load_sam", lambda *a, **k: double)
    return ds, truth


def _fruit_ious(ds, truth):
    return {s.scene: _iou(s["fruit"].get_mask() > 0, truth[s.scene][0][1]) for s in ds.exists("fruit")}


def test_a_rerun_from_an_approved_corrected_label_moves_the_other_labels_toward_it(fruit):
    import samtext
    import samtext.run.records as records

    ds, truth = fruit
    samtext.annotate_by_reference(ds, "fruit", reference=ds.first().id, reference_field="gt", out_field="fruit",
                                  sam_model="tiny", min_similarity=0.5)
    before = _fruit_ious(ds, truth)
    assert min(before[k] for k in (1, 2)) > 0.8 and max(before[k] for k in (3, 4, 5)) == 0.0

    # a person corrects scene 3 (draws the yellow fruit) and approves it
    fixed = ds.match({"scene": 3}).first()
    fixed["fruit"].mask = truth[3][0][1].astype(np.uint8)
    fixed["fruit"].tags = ["approved"]
    fixed.save()
    untouched = ds.match({"scene": 1}).first()["fruit"].id

    summary = samtext.rerun_from_approved(ds, "fruit")
    assert summary.status == "completed" and summary.targets == 4  # not the reference, not the approved one
    after = _fruit_ious(ds, truth)
    assert min(after[k] for k in (4, 5)) > 0.8  # moved toward the approved label
    assert min(after[k] for k in (1, 2)) > 0.8  # and the red ones stay right
    assert after[3] == 1.0 and "approved" in ds.match({"scene": 3}).first()["fruit"].tags
    assert ds.match({"scene": 1}).first()["fruit"].id != untouched  # relabelled
    record = records.read_run(ds, records.run_key_for("fruit"))
    approved = record["settings"]["approved"]
    assert approved["label_ids"] == [fixed["fruit"].id] and approved["sample_ids"] == [fixed.id]
    assert set(record["settings"]["reference_ids"]) == {ds.first().id, fixed.id}
    assert len(ds.exists("fruit_approved")) == 2  # the reference and the approved label, as they were


def test_rerun_refusals_name_the_problem(fruit):
    import samtext

    ds, truth = fruit
    with pytest.raises(ValueError, match="no samtext run record"):
        samtext.rerun_from_approved(ds, "gt")
    samtext.annotate_by_reference(ds, "fruit", reference=ds.first().id, reference_field="gt", out_field="fruit",
                                  sam_model="tiny", min_similarity=0.5)
    with pytest.raises(ValueError, match="no label of 'fruit' is approved"):
        samtext.rerun_from_approved(ds, "fruit")
    with pytest.raises(ValueError, match="fixed"):
        samtext.rerun_from_approved(ds, "fruit", overwrite=False)


# ---------------------------------------------------------------------------------------- operators


def _op(name):
    from conftest import PLUGIN_NAME

    return "%s/%s" % (PLUGIN_NAME, name)


def test_review_and_export_operators_run_through_fiftyone(reviewed, tmp_path):
    import fiftyone.operators as foo

    ds = reviewed
    params = dict(field="pseudo", compare_field="other", reject_empty=False, reject_disagreement=False)
    result = foo.execute_operator(_op("review_labels"), {"dataset": ds, "params": params})
    assert result.error is None, result.error
    assert result.result["reviewed"] == 6 and result.result["rejected"] == 4  # tiny, whole, fragments, low
    assert "samtext_to_review" in ds.list_saved_views()
    params = dict(field="pseudo", export_dir=str(tmp_path / "out"))
    result = foo.execute_operator(_op("export_labels"), {"dataset": ds, "params": params})
    assert result.error is None, result.error
    assert result.result["exported"] == 2 and len(os.listdir(tmp_path / "out" / "labels")) == 2


def test_rerun_operator_relabels_from_approved_labels(fruit):
    import fiftyone.operators as foo

    import samtext

    ds, truth = fruit
    samtext.annotate_by_reference(ds, "fruit", reference=ds.first().id, reference_field="gt", out_field="fruit",
                                  sam_model="tiny", min_similarity=0.5)
    fixed = ds.match({"scene": 4}).first()
    fixed["fruit"].mask = truth[4][0][1].astype(np.uint8)
    fixed.tags = ["approved"]  # a sample tag works too
    fixed.save()
    result = foo.execute_operator(_op("rerun_from_approved"), {"dataset": ds, "params": dict(field="fruit")})
    assert result.error is None, result.error
    after = _fruit_ious(ds, truth)
    assert min(after[k] for k in (3, 5)) > 0.8



def test_a_field_still_being_written_is_read_with_a_warning_by_review_and_evaluate(reviewed):
    import samtext
    import samtext.run.records as records

    ds = reviewed
    records.register_run(ds, records.run_key_for("pseudo"), dict(action="annotate_by_reference", settings={},
                                                         runs={"abc": records.new_entry()}))  # alive
    report = samtext.review(ds, "pseudo")
    assert report.reviewed == 6 and "still being written" in report.warnings[0] and "abc" in report.warnings[0]
    report = samtext.evaluate(ds, "pseudo", "other", eval_key=None)
    assert report.images == 6 and "still being written" in report.warnings[0]
    with pytest.raises(ValueError, match="still being written"):
        samtext.train(ds, "pseudo", epochs=1)


def test_a_sample_tag_approves_too_and_masks_in_files_are_read(reviewed, tmp_path):
    import fiftyone as fo
    from PIL import Image

    import samtext

    ds = reviewed
    whole = ds.match({"index": 3}).first()
    path = str(tmp_path / "whole.png")
    Image.fromarray(np.ones((60, 80), np.uint8)).save(path)
    whole["pseudo"] = fo.Segmentation(mask_path=path, confidence=0.9)
    whole.tags = ["approved"]
    whole.save()
    report = samtext.review(ds, "pseudo", min_confidence=None, reject=["whole_image"])
    assert report.flagged["whole_image"] == 1 and report.rejected == 0 and report.approved == 1
    assert ds.match({"index": 3}).first()["pseudo"].review_flags == ["whole_image"]
    assert 3 not in set(ds.load_saved_view(report.view_name).values("index"))
    # the saved view covers the reviewed view only
    report = samtext.review(ds.match({"index": {"$lt": 2}}), "pseudo", view_name="firsts")
    assert set(ds.load_saved_view("firsts").values("index")) <= {0, 1}


def test_a_second_rerun_forgets_an_unapproved_label_and_shards_share_one_copy(fruit):
    import samtext
    import samtext.run.records as records

    ds, truth = fruit
    samtext.annotate_by_reference(ds, "fruit", reference=ds.first().id, reference_field="gt", out_field="fruit",
                                  sam_model="tiny", min_similarity=0.5)
    first, second = ds.match({"scene": 3}).first(), ds.match({"scene": 4}).first()
    for sample in (first, second):
        sample["fruit"].mask = truth[sample.scene][0][1].astype(np.uint8)
        sample["fruit"].tags = ["approved"]
        sample.save()
    samtext.rerun_from_approved(ds, "fruit")
    second = ds[second.id]
    second["fruit"].tags = []  # the person takes the approval back
    second.save()
    unapproved = second["fruit"].id

    # the operator's way: prepare once, then each shard (as a worker would)
    assert samtext.prepare_rerun_from_approved(ds, "fruit") == 4
    copied = ds.exists("fruit_approved").values("id")
    summaries = [samtext.rerun_from_approved(ds, "fruit", shard=(k, 2)) for k in range(2)]
    assert sum(s.labelled for s in summaries) == 4 and ds.exists("fruit_approved").values("id") == copied
    record = records.read_run(ds, records.run_key_for("fruit"))
    assert set(record["settings"]["reference_ids"]) == {ds.first().id, first.id}  # not the unapproved one
    assert record["settings"]["approved"]["original_reference_ids"] == [ds.first().id]
    assert len(record["runs"]) == 2  # both shards recorded under the one record
    assert ds[second.id]["fruit"].id != unapproved  # relabelled
    assert min(_fruit_ious(ds, truth)[k] for k in (1, 2, 4, 5)) > 0.8


def test_training_leaves_out_the_labels_a_review_rejected(reviewed, tmp_path):
    import samtext

    ds = reviewed
    samtext.review(ds, "pseudo", min_confidence=None, reject=["whole_image"])
    summary = samtext.train(ds, "pseudo", str(tmp_path / "m.pt"), epochs=1, image_size=32, batch_size=2,
                            val_fraction=0.0, backbone_weights=None)
    assert (summary.skipped_rejected, summary.train_samples) == (1, 5)
    summary = samtext.train(ds, "pseudo", str(tmp_path / "all.pt"), epochs=1, image_size=32, batch_size=2,
                            val_fraction=0.0, backbone_weights=None, skip_tag=None)
    assert (summary.skipped_rejected, summary.train_samples) == (0, 6)


def test_train_operator_queues_by_default_and_trains_now_when_asked_then_predicts(reviewed, tmp_path):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    ds = reviewed
    model = str(tmp_path / "op.pt")
    params = dict(epochs=1, image_size=32, batch_size=2, val_fraction=0.0, model_path=model, backbone_weights=None)
    op = foo.get_operator(_op("train_segmentation_model"))
    assert op.config.default_choice_to_delegated is True
    op(ds, "pseudo", **params)  # the operator's own default: a delegated run for a worker
    ops = DelegatedOperationService().list_operations(dataset_name=ds.name)
    assert [o.operator for o in ops] == [_op("train_segmentation_model")] and not os.path.exists(model)
    result = op(ds, "pseudo", delegate=False, **params)
    assert result.error is None, result.error
    assert result.result["status"] == "completed" and result.result["train_samples"] == 6 and os.path.isfile(model)
    result = foo.execute_operator(_op("predict_with_model"), {"dataset": ds, "params": dict(
        model_path=model, out_field="predicted", device="cpu")})
    assert result.error is None, result.error
    assert len(ds.exists("predicted")) == 6 and ds.mask_targets["predicted"] == {1: "cat"}
    import samtext

    report = samtext.evaluate(ds, "predicted", "pseudo", eval_key=None)  # the test view is the training view
    assert any(w.startswith("6 of the 6 evaluated samples were in the training split") for w in report.warnings)


def test_export_keeps_masks_of_images_with_one_name_in_different_folders(db, tmp_path):
    """cam1/0001.jpg and cam2/0001.jpg: each gets its own mask file (FiftyOne's exporter names them by file name,
    so one overwrote the other); one image used by two samples is refused before anything is written."""
    import fiftyone as fo
    import samtext
    from PIL import Image

    samples = []
    for i, cam in enumerate(("cam1", "cam2")):
        (tmp_path / cam).mkdir()
        path = str(tmp_path / cam / "0001.jpg")
        Image.new("RGB", (40, 30), (10 * i, 0, 0)).save(path)
        mask = np.zeros((30, 40), np.uint8)
        mask[i * 10:(i + 1) * 10] = 1
        samples.append(fo.Sample(filepath=path, cats=fo.Segmentation(mask=mask)))
    ds = fo.Dataset()
    ds.add_samples(samples)
    out = samtext.export_labels(ds, "cats", str(tmp_path / "out"))
    written = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "out" / "labels")
                     for d, _, fs in os.walk(tmp_path / "out" / "labels") for f in fs)
    assert out["exported"] == 2 and written == ["cam1/0001.png", "cam2/0001.png"]
    for cam, sample in zip(("cam1", "cam2"), ds):
        exported = np.asarray(Image.open(tmp_path / "out" / "labels" / cam / "0001.png"))
        assert (exported > 0).sum() == (sample.cats.mask > 0).sum() and np.array_equal(exported > 0, sample.cats.mask > 0)

    ds.add_sample(fo.Sample(filepath=samples[0].filepath, cats=fo.Segmentation(mask=np.ones((30, 40), np.uint8))))
    with pytest.raises(ValueError, match="used by several samples"):
        samtext.export_labels(ds, "cats", str(tmp_path / "again"))
    assert not os.path.exists(tmp_path / "again")
