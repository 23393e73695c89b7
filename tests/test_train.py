"""Training a segmentation network on a label field and predicting with it: checkpoints, resume, what is
trained on and what is left out, bad inputs, and the prediction action. Tiny sizes (64 px, 1-2 epochs, a handful
of pets photos); the proof that training learns something is tests/test_train_pets.py."""

import os

import numpy as np
import pytest
import torch

from conftest import PETS, make_pets_dataset, pets_stems

TINY = dict(image_size=64, batch_size=4, backbone_weights=None)


def cat_dataset(cats=3, dogs=0, field="cat_label"):
    """Pets photos with ``field``: the cats' masks (255 = cat, named "cat"), and an empty mask for the dogs."""
    import fiftyone as fo

    ds = make_pets_dataset(pets_stems("unlabeled", "cat", cats) + pets_stems("unlabeled", "dog", dogs))
    values = {}
    for sid, stem, gt in zip(*ds.values(["id", "stem", "ground_truth"])):
        mask = gt.mask if stem.startswith("cat") else np.zeros_like(gt.mask)
        values[sid] = fo.Segmentation(mask=mask)
    ds.set_values(field, values, key_field="id")
    ds.mask_targets = {field: {255: "cat"}}
    ds.save()
    return ds


# ---------------------------------------------------------------------------------------- the pipeline


def _pairs(n=6):
    """Synthetic pairs: a red rectangle (class 1) on grey, sizes varying."""
    def load(i):
        k = int(i)
        h, w = 40 + 4 * k, 56
        image = np.full((h, w, 3), 60, np.uint8)
        cmap = np.zeros((h, w), np.uint8)
        image[8:28, 10 + k:34 + k] = (220, 40, 40)
        cmap[8:28, 10 + k:34 + k] = 1
        return image, cmap

    return [str(i) for i in range(n)], load


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    from samtext.pipelines import training as T

    ids, load = _pairs()
    train_ids, val_ids = T.split_ids(ids, 0.34, seed=0)
    assert len(val_ids) == 2 and sorted(train_ids + val_ids) == sorted(ids)
    assert T.split_ids(list(reversed(ids)), 0.34, seed=0) == (train_ids, val_ids)  # order-independent
    config = T.TrainConfig(classes=["red"], epochs=1, **TINY)
    path = str(tmp_path / "m.pt")
    events = []
    result = T.fit(T.PairDataset(train_ids, load), T.PairDataset(val_ids, load), config, path,
                   progress=lambda *e: events.append(e))
    assert result.epochs_done == 1 and result.backbone_start.startswith("scratch")
    assert [e[:4] for e in events] == [(1, 1, 1, 1), (1, 1, 1, 1)]  # 4 training pairs = 1 step; then the epoch end
    assert events[-1][4]["end_of_epoch"] and set(events[-1][4]["val_iou"]) == {"background", "red"}

    state = torch.load(path, weights_only=True)  # plain values only: safe loading works
    assert state["format"] == T.CHECKPOINT_FORMAT and state["epoch"] == 1 and state["classes"] == ["red"]
    assert state["train_ids"] == train_ids and state["val_ids"] == val_ids and state["seed"] == 0
    assert state["config"] == config.to_dict() and {"model", "optimizer", "scheduler"} <= set(state)
    assert not [f for f in os.listdir(tmp_path) if f != "m.pt"]  # the temporary file was renamed

    predictor = T.SegPredictor.from_checkpoint(path)
    image, _ = load("3")
    cmap, conf = predictor(image)
    assert cmap.shape == conf.shape == image.shape[:2] and cmap.dtype == np.uint8 and conf.dtype == np.float32
    assert set(np.unique(cmap)) <= {0, 1} and ((conf >= 0.5) & (conf <= 1.0)).all()

    with pytest.raises(ValueError, match="pass resume=True to continue it, restart=True"):
        T.fit(T.PairDataset(train_ids, load), None, config, path, resume=False)
    with pytest.raises(ValueError, match=r"another configuration \(lr: 0.002 -> 0.01\).*restart=True"):
        T.fit(T.PairDataset(train_ids, load), None, T.TrainConfig(classes=["red"], epochs=1, lr=0.01, **TINY), path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read the model checkpoint"):
        T.load_checkpoint(str(tmp_path / "junk.pt"))


def test_scores_and_transforms():
    from samtext.pipelines import training as T

    target = np.array([[0, 0, 1, 1], [0, 255, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 1, 1, 0]], np.uint8)
    ious, miou = T.iou_from_confusion(T.confusion(pred, target, 2))
    assert ious == pytest.approx([2 / 4, 3 / 5]) and miou == pytest.approx((0.5 + 0.6) / 2)  # 255 left out
    assert T.iou_from_confusion(T.confusion(pred * 0, target * 0, 3))[0][1:] == [None, None]

    rng = np.random.default_rng(0)
    image = np.zeros((30, 90, 3), np.uint8)
    cmap = np.ones((30, 90), np.uint8)
    for _ in range(5):
        x, y = T.train_transform(image, cmap, 64, rng)
        assert x.shape == (3, 64, 64) and y.shape == (64, 64) and set(y.unique().tolist()) <= {1, T.IGNORE}
    x, part = T.letterbox(image, 64)
    assert x.shape == (3, 64, 64) and part == (21, 64)


def test_backbone_weights_auto_imagenet_none(tmp_path, monkeypatch, caplog):
    import torchvision
    import torchvision.models._api as api

    from samtext.models import segnets

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    _, start = segnets.build_segnet("lraspp", 2, "auto")  # nothing cached: from scratch, with a warning
    assert start == segnets.SCRATCH and "training from scratch" in caplog.text

    def offline(url, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(segnets.BackboneWeightsError, match="could not get the ImageNet weights.*backbone_weights=None"):
        segnets.build_segnet("lraspp", 2, "imagenet")

    monkeypatch.undo()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = segnets.cached_weights_path("lraspp")  # a file where torchvision keeps it: "auto" takes it
    os.makedirs(os.path.dirname(cached))
    torch.manual_seed(1)
    backbone = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    torch.save(backbone, cached)
    model, start = segnets.build_segnet("lraspp", 3, "auto")
    assert start == "imagenet: MobileNet_V3_Large_Weights.IMAGENET1K_V1"
    assert torch.equal(model.backbone["0"][0].weight, backbone["features.0.0.weight"])
    assert model.classifier.low_classifier.out_channels == 3
    with pytest.raises(ValueError, match="backbone_weights must be"):
        segnets.build_segnet("lraspp", 2, "coco")
    with pytest.raises(ValueError, match="unknown arch"):
        segnets.build_segnet("unet", 2)


# ------------------------------------------------------------------------------------------- the SDK


def test_resume_after_interruption(db, tmp_path):
    import samtext.actions.train as st
    from samtext.run import records

    ds = cat_dataset(cats=5)
    path = str(tmp_path / "cat.pt")

    def stop_after_first_epoch(epoch, epochs, step, steps, metrics):
        if metrics.get("end_of_epoch"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        st.train(ds, "cat_label", path, epochs=2, progress=stop_after_first_epoch, **TINY)
    record = records.read_run(ds, "samtext_train_cat_label")
    assert record["status"] == "canceled" and record["epochs_done"] == 1 and record["epochs"] == 2
    assert torch.load(path, weights_only=True)["epoch"] == 1

    summary = st.train(ds, "cat_label", path, epochs=2, **TINY)
    assert (summary.status, summary.start_epoch, summary.epochs_done) == ("completed", 1, 2)
    assert [h["epoch"] for h in summary.history] == [1, 2]
    record = records.read_run(ds, "samtext_train_cat_label")
    assert record["status"] == "completed" and record["epochs_done"] == 2 and record["start_epoch"] == 1
    assert record["model_path"] == path and record["classes"] == ["cat"] and record["settings"]["epochs"] == 2
    assert record["train_samples"] + record["val_samples"] == 5 and record["backbone_start"].startswith("scratch")

    again = st.train(ds, "cat_label", path, epochs=2, **TINY)  # nothing left to do
    assert (again.start_epoch, again.epochs_done) == (2, 2)
    with pytest.raises(ValueError, match=r"another configuration \(epochs: 2 -> 3\)"):
        st.train(ds, "cat_label", path, epochs=3, **TINY)
    ds.take(1).set_field("cat_label", None).save()  # other samples: another data digest
    with pytest.raises(ValueError, match="samples_digest"):
        st.train(ds, "cat_label", path, epochs=2, **TINY)
    restarted = st.train(ds, "cat_label", path, epochs=1, restart=True, **TINY)
    assert (restarted.start_epoch, restarted.epochs_done, restarted.skipped_unlabelled) == (0, 1, 1)


def test_empty_masks_train_as_background_and_unlabelled_are_skipped(db, tmp_path, monkeypatch):
    import samtext.actions.train as st

    monkeypatch.setenv("SAMTEXT_MODELS_DIR", str(tmp_path / "models"))
    ds = cat_dataset(cats=3, dogs=2)
    extra = ds.first().copy()  # a sample without a label in the field
    extra.clear_field("cat_label")
    ds.add_sample(extra)
    summary = st.train(ds, "cat_label", epochs=1, val_fraction=0, **TINY)
    assert summary.train_samples == 5 and summary.val_samples == 0
    assert summary.background_only == 2 and summary.skipped_unlabelled == 1 and summary.failed == 0
    assert summary.model_path == str(tmp_path / "models" / ("%s_cat_label.pt" % ds.name))
    assert os.path.isfile(summary.model_path) and summary.best_val_miou is None


def test_refuses_bad_inputs(db, tmp_path):
    import fiftyone as fo

    import samtext.actions.train as st
    from samtext.run import records

    ds = cat_dataset(cats=2)
    path = str(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="training view is empty"):
        st.train(ds.limit(0), "cat_label", path, **TINY)
    with pytest.raises(ValueError, match="'nope' is not a field"):
        st.train(ds, "nope", path, **TINY)
    ds.set_values("kind", [fo.Classification(label="cat")] * len(ds))
    with pytest.raises(ValueError, match="'kind' holds Classification"):
        st.train(ds, "kind", path, **TINY)
    with pytest.raises(ValueError, match="has no class 'dog'; its classes are \\['cat'\\]"):
        st.train(ds, "cat_label", path, classes=["dog"], **TINY)
    with pytest.raises(ValueError, match="no class names.*classes=\\['cat'\\].*label_targets"):
        st.train(ds, "ground_truth", path, **TINY)  # 0/255 masks that nothing names
    with pytest.raises(ValueError, match="label_field 'cat_label' has no labels in these 2 samples"):
        st.train(ds.set_field("cat_label", None), "cat_label", path, **TINY)

    records.register_run(ds, records.run_key_for("cat_label"), dict(action="annotate_by_text", runs={
        "a1b2": dict(status="completed"), "c3d4": records.new_entry()}))  # alive: this process
    with pytest.raises(ValueError, match="still being written by samtext.*run c3d4.*allow_running=True"):
        st.train(ds, "cat_label", path, **TINY)
    assert not os.path.exists(path) and "samtext_train_cat_label" not in ds.list_runs()  # nothing written


def test_unreadable_samples_are_left_out_and_named(db, tmp_path):
    import fiftyone as fo
    from PIL import Image

    import samtext.actions.train as st

    ds = cat_dataset(cats=3)
    stem = pets_stems("unlabeled", "cat")[5]
    mask = np.asarray(Image.open(os.path.join(PETS, "masks", stem + ".png")))
    good = os.path.join(PETS, "images", stem + ".jpg")
    half = np.ascontiguousarray(mask[::2, ::2])  # the same aspect ratio at half the size: resized, kept
    cropped = np.ascontiguousarray(mask[:, : mask.shape[1] // 2])  # another aspect ratio: left out
    ds.add_samples([fo.Sample(filepath=str(tmp_path / "missing.jpg"), cat_label=fo.Segmentation(mask=mask)),
                    fo.Sample(filepath=good, cat_label=fo.Segmentation(mask=half)),
                    fo.Sample(filepath=good, cat_label=fo.Segmentation(mask=cropped))])
    missing_id, cropped_id = ds.skip(3).first().id, ds.last().id
    summary = st.train(ds, "cat_label", str(tmp_path / "m.pt"), epochs=1, val_fraction=0, **TINY)
    assert summary.train_samples == 4 and summary.failed == 2 and summary.status == "completed"
    errors = {e.sample_id: e for e in summary.errors}
    assert "file not found" in errors[missing_id].message and errors[missing_id].filepath.endswith("missing.jpg")
    assert "do not match" in errors[cropped_id].message and errors[cropped_id].filepath == good
    assert missing_id in summary.to_dict()["errors"][0] + summary.to_dict()["errors"][1]


def test_predict_writes_segmentation_and_resumes(db, tmp_path):
    import fiftyone as fo

    import samtext.actions.train as st

    ds = cat_dataset(cats=4, dogs=1)
    path = str(tmp_path / "m.pt")
    trained = st.train(ds.limit(4), "cat_label", path, epochs=1, val_fraction=0.25, **TINY)
    assert trained.train_samples == 3
    assert st.training_overlap(ds, path) == 3

    summary = st.predict(ds, path, out_field="pred")
    assert summary.labelled == 5 and summary.failed == 0 and summary.status == "completed"
    assert ds.mask_targets["pred"] == {1: "cat"}
    assert ds.get_field("pred").document_type is fo.Segmentation and not ds.has_field("pred_instances")
    for sample in ds:
        label = sample["pred"]
        assert label.mask.shape == sample["ground_truth"].mask.shape[:2]
        assert set(np.unique(label.mask)) <= {0, 1} and 0.0 <= label.confidence <= 1.0
    record = ds.get_run_info("samtext_pred").config.serialize()
    assert record["action"] == "predict" and record["settings"]["model_path"] == path
    assert record["learnt"]["training_overlap"] == 3

    again = st.predict(ds, path, out_field="pred")  # a rerun skips what is done
    assert again.labelled == 0 and again.skipped_existing == 5
    st.train(ds.limit(4), "cat_label", path, epochs=2, restart=True, **TINY)  # another model in the same file
    with pytest.raises(ValueError, match="other settings.*model"):
        st.predict(ds, path, out_field="pred")
    with pytest.raises(ValueError, match="no model checkpoint"):
        st.predict(ds, str(tmp_path / "none.pt"), out_field="pred2")


def test_other_ways_to_name_the_classes(db, tmp_path):
    import fiftyone as fo

    import samtext.actions.train as st
    from samtext.run import records

    ds = cat_dataset(cats=3)
    one = dict(epochs=1, val_fraction=0, **TINY)
    by_targets = st.train(ds, "ground_truth", str(tmp_path / "a.pt"), label_targets={255: "cat"}, **one)
    binary = st.train(ds, "ground_truth", str(tmp_path / "b.pt"), classes=["cat"], **one)  # unnamed 0/255 masks
    assert by_targets.classes == binary.classes == ["cat"] and by_targets.train_samples == binary.train_samples == 3

    ds.set_values("cat_objects", [fo.Detections(detections=[fo.Detection.from_mask(gt.mask == 255, label="cat")])
                                  for gt in ds.values("ground_truth")])
    detections = st.train(ds, "cat_objects", str(tmp_path / "c.pt"), **one)
    assert detections.classes == ["cat"] and detections.train_samples == 3 and detections.background_only == 0
    with pytest.raises(ValueError, match="label_targets names the values of a fo.Segmentation field"):
        st.train(ds, "cat_objects", str(tmp_path / "c.pt"), label_targets={1: "cat"}, **one)

    records.register_run(ds, records.run_key_for("cat_label"), dict(action="annotate_by_text", runs={
        "c3d4": records.new_entry()}))  # alive: this process
    forced = st.train(ds, "cat_label", str(tmp_path / "d.pt"), allow_running=True, **one)
    assert forced.status == "completed"


def test_a_file_lost_during_training_is_left_out_and_named(db, tmp_path):
    import shutil

    import samtext.actions.train as st
    from samtext.run import records

    ds = cat_dataset(cats=3)
    sample = ds.first()
    copy = str(tmp_path / "copy.jpg")
    shutil.copy(sample.filepath, copy)
    sample.filepath = copy
    sample.save()

    def lose_it(epoch, epochs, step, steps, metrics):
        if os.path.exists(copy):
            os.remove(copy)

    summary = st.train(ds, "cat_label", str(tmp_path / "m.pt"), epochs=2, val_fraction=0, progress=lose_it, **TINY)
    assert summary.status == "completed" and summary.epochs_done == 2 and summary.failed == 1
    assert sample.id in str(summary.errors[0]) and "file not found" in str(summary.errors[0])
    record = records.read_run(ds, "samtext_train_cat_label")
    assert record["status"] == "completed" and record["failed"] == 1
