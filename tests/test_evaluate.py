"""samtext.evaluate: per-class IoU/Dice and mIoU against hand-computed values, class matching by name, instance
masks, resizing and skipping, and the FiftyOne evaluation it leaves behind."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import make_pets_dataset, pets_stems

KEY = "samtext_eval"

# Two 2x4 images, classes a (1) and b (2) in both fields. Worked out by hand (rows = gt, cols = pred,
# order background, a, b):
#   image 1: [[3, 0, 1], [1, 1, 0], [0, 0, 2]]   a: IoU 1/2 Dice 2/3; b: IoU 2/3 Dice 4/5
#   image 2: [[2, 2, 0], [0, 4, 0], [0, 0, 0]]   a: IoU 2/3 Dice 4/5; b absent
#   summed:  [[5, 2, 1], [1, 5, 0], [0, 0, 2]]   bg 5/9, a 5/8, b 2/3 (IoU); bg 5/7, a 10/13, b 4/5 (Dice)
GT = [np.array([[1, 1, 0, 0], [2, 2, 0, 0]], np.uint8), np.array([[1, 1, 1, 1], [0, 0, 0, 0]], np.uint8)]
PRED = [np.array([[1, 0, 0, 0], [2, 2, 2, 0]], np.uint8), np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.uint8)]
SUMMED = [[5, 2, 1], [1, 5, 0], [0, 0, 2]]
IMAGE_IOU = [(1 / 2 + 2 / 3) / 2, 2 / 3]
IMAGE_DICE = [(2 / 3 + 4 / 5) / 2, 4 / 5]


def _image(folder, name, size):
    path = os.path.join(str(folder), name + ".png")
    Image.fromarray(np.full(size + (3,), 128, np.uint8)).save(path)
    return path


def _dataset(folder, rows, gt_targets=None, pred_targets=None, kind="segmentation"):
    """A dataset of ``rows = [(image (H, W), gt mask or None, pred mask or None), ...]``; masks as
    ``fo.Segmentation`` or, for the side named by ``kind`` ("gt_detections" / "pred_detections"), as one
    ``fo.Detection`` per class value (labels from that side's targets)."""
    import fiftyone as fo

    ds = fo.Dataset()
    samples = []
    for k, (size, gt, pred) in enumerate(rows):
        s = fo.Sample(filepath=_image(folder, "img_%d" % k, size), index=k)
        for name, mask, targets in (("gt", gt, gt_targets), ("pred", pred, pred_targets)):
            if mask is None:
                continue
            if kind == name + "_detections":
                s[name] = fo.Detections(detections=[fo.Detection.from_mask(mask == v, label=targets[v])
                                                    for v in np.unique(mask) if v])
            else:
                s[name] = fo.Segmentation(mask=mask)
        samples.append(s)
    ds.add_samples(samples)
    for name, targets in (("gt", gt_targets), ("pred", pred_targets)):
        if targets and ds.has_field(name) and ds.get_field(name).document_type is fo.Segmentation:
            ds.mask_targets[name] = targets
    ds.save()
    return ds


def _hand_dataset(folder, **kw):
    targets = {1: "a", 2: "b"}
    return _dataset(folder, [((2, 4), g, p) for g, p in zip(GT, PRED)], gt_targets=targets, pred_targets=targets,
                    **kw)


def _check_hand_values(report):
    assert report.classes == ["background", "a", "b"]
    np.testing.assert_array_equal(report.confusion_matrix, SUMMED)
    assert report.class_iou == pytest.approx({"background": 5 / 9, "a": 5 / 8, "b": 2 / 3})
    assert report.class_dice == pytest.approx({"background": 5 / 7, "a": 10 / 13, "b": 4 / 5})
    assert report.miou == pytest.approx((5 / 9 + 5 / 8 + 2 / 3) / 3)
    assert report.images == 2 and not report.skipped and report.missing_predictions == 0


def test_known_values_summed_over_images(db, tmp_path):
    import samtext.actions.evaluation as se

    ds = _hand_dataset(tmp_path)
    seen = []
    report = se.evaluate(ds, "pred", "gt", progress=lambda done, total: seen.append((done, total)))
    _check_hand_values(report)
    assert seen[-1] == (2, 2)
    # the dataset mIoU sums intersections and unions over the images: class a's is 5/8, while the mean of
    # its per-image IoUs is (1/2 + 2/3) / 2 = 7/12
    assert report.class_iou["a"] != pytest.approx((1 / 2 + 2 / 3) / 2)

    # per sample: the mean over the classes present in that image, stored and sortable
    assert ds.values(KEY + "_iou") == pytest.approx(IMAGE_IOU)
    assert ds.values(KEY + "_dice") == pytest.approx(IMAGE_DICE)
    assert ds.sort_by(KEY + "_iou", reverse=True).values("index") == [1, 0]
    schema = ds.get_field_schema()
    assert KEY + "_iou" in schema and KEY + "_dice" in schema
    d = report.to_dict()
    assert d["miou"] == pytest.approx(report.miou) and d["confusion_matrix"] == SUMMED and d["skipped"] == []
    assert json.loads(json.dumps(d)) == d


def test_fiftyone_evaluation_round_trip(db, tmp_path, capsys):
    import fiftyone.utils.eval.segmentation as fous

    import samtext.actions.evaluation as se

    ds = _hand_dataset(tmp_path)
    before = {f: [m.mask.copy() for m in ds.values(f)] for f in ("gt", "pred")}
    report = se.evaluate(ds, "pred", "gt")
    assert ds.list_evaluations() == [KEY]
    info = ds.get_evaluation_info(KEY)
    assert info.config.type == "segmentation" and info.config.method == "samtext"
    assert (info.config.pred_field, info.config.gt_field) == ("pred", "gt")
    results = ds.load_evaluation_results(KEY, cache=False)  # from the database, not this session's cache
    assert isinstance(results, fous.SegmentationResults)
    np.testing.assert_array_equal(results.pixel_confusion_matrix, report.confusion_matrix)
    assert list(results.classes) == ["background", "a", "b"]
    results.print_report()
    assert "a" in capsys.readouterr().out
    # nothing but the evaluation's fields changed
    for f in ("gt", "pred"):
        assert all(np.array_equal(a, m.mask) for a, m in zip(before[f], ds.values(f)))
    assert ds.mask_targets == {"gt": {1: "a", 2: "b"}, "pred": {1: "a", 2: "b"}}

    # the same key again replaces the evaluation (FiftyOne's rule), another pair of fields is refused
    ds.clone_sample_field("pred", "pred2")
    ds.mask_targets["pred2"] = {1: "a", 2: "b"}
    ds.save()
    se.evaluate(ds, "pred", "gt")
    assert ds.list_evaluations() == [KEY]
    with pytest.raises(ValueError, match="pred_field"):
        se.evaluate(ds, "pred2", "gt")
    # deleting it removes its per-sample fields
    ds.delete_evaluation(KEY)
    assert KEY + "_iou" not in ds.get_field_schema()


@pytest.mark.parametrize("kind", ["pred_detections", "gt_detections"])
def test_detections_field(db, tmp_path, kind):
    import samtext.actions.evaluation as se

    ds = _hand_dataset(tmp_path, kind=kind)
    report = se.evaluate(ds, "pred", "gt")
    _check_hand_values(report)
    assert ds.values(KEY + "_iou") == pytest.approx(IMAGE_IOU)
    assert ds.load_evaluation_results(KEY, cache=False).pixel_confusion_matrix.tolist() == SUMMED


def test_class_matching_by_name(db, tmp_path):
    import samtext.actions.evaluation as se

    gt = np.array([[0, 255, 255, 0], [0, 255, 0, 0]], np.uint8)
    pred = np.array([[0, 1, 0, 0], [0, 1, 1, 0]], np.uint8)
    # cat: tp 2, gt 3, pred 3 -> IoU 2/4; background: tp 4, gt 5, pred 5 -> IoU 4/6
    expect = {"background": 4 / 6, "cat": 2 / 4}

    # a 0/255 ground truth without names against a single-class prediction: binary
    ds = _dataset(tmp_path, [((2, 4), gt, pred)], pred_targets={1: "cat"})
    assert se.evaluate(ds, "pred", "gt").class_iou == pytest.approx(expect)

    # ... and the other way round: an unnamed 0/1 prediction against a named single-class ground truth
    ds = _dataset(tmp_path, [((2, 4), gt, pred)], gt_targets={255: "cat"})
    assert se.evaluate(ds, "pred", "gt").class_iou == pytest.approx(expect)

    # a two-class prediction: the unnamed ground truth needs its value named
    ds = _dataset(tmp_path, [((2, 4), gt, pred)], pred_targets={1: "cat", 2: "dog"})
    with pytest.raises(ValueError, match="gt_targets"):
        se.evaluate(ds, "pred", "gt")
    assert ds.list_evaluations() == [] and KEY + "_iou" not in ds.get_field_schema()
    report = se.evaluate(ds, "pred", "gt", gt_targets={255: "cat"})
    assert report.classes == ["background", "cat"] and report.class_iou == pytest.approx(expect)

    # a multi-class ground truth against a single-class prediction: compared on "cat"; gt "dog" is background
    gt2 = np.array([[0, 2, 2, 1], [0, 2, 0, 1]], np.uint8)
    ds = _dataset(tmp_path, [((2, 4), gt2, pred)], gt_targets={1: "dog", 2: "cat"}, pred_targets={1: "cat"})
    report = se.evaluate(ds, "pred", "gt")
    assert report.classes == ["background", "cat"] and report.class_iou == pytest.approx(expect)

    # no class in common: a clear error listing both fields' classes
    ds = _dataset(tmp_path, [((2, 4), gt2, pred)], gt_targets={1: "dog", 2: "horse"}, pred_targets={1: "cat"})
    with pytest.raises(ValueError) as err:
        se.evaluate(ds, "pred", "gt")
    assert all(w in str(err.value) for w in ("'gt'", "'pred'", "dog", "horse", "cat"))
    ds = _dataset(tmp_path, [((2, 4), gt2, pred)], gt_targets={1: "dog", 2: "cat"}, pred_targets={1: "cat"})
    with pytest.raises(ValueError, match="'dog' is not a class of field 'pred'"):
        se.evaluate(ds, "pred", "gt", classes=["dog"])


def test_bad_fields(db, tmp_path):
    import fiftyone as fo

    import samtext.actions.evaluation as se

    ds = _hand_dataset(tmp_path)
    ds.set_values("label", [fo.Classification(label="a")] * len(ds))
    with pytest.raises(ValueError, match="gt_field 'label' holds Classification"):
        se.evaluate(ds, "pred", "label")
    with pytest.raises(ValueError, match="pred_field 'nope' is not a field"):
        se.evaluate(ds, "nope", "gt")
    assert ds.list_evaluations() == []


def test_resized_skipped_and_missing(db, tmp_path):
    import samtext.actions.evaluation as se

    gt = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
    half = np.array([[1, 1], [0, 0]], np.uint8)  # upsampled: the top half, so a: tp 4, gt 4, pred 8
    rows = [
        ((4, 4), gt, half),  # half resolution: resized
        ((4, 4), gt, np.zeros((4, 2), np.uint8)),  # another aspect ratio: skipped
        ((4, 4), None, half),  # no ground truth: skipped
        ((4, 4), gt, None),  # no prediction: all background
    ]
    ds = _dataset(tmp_path, rows, gt_targets={1: "a"}, pred_targets={1: "a"})
    ids = ds.values("id")
    report = se.evaluate(ds, "pred", "gt")
    assert report.images == 2 and report.missing_predictions == 1
    assert [s.sample_id for s in report.skipped] == ids[1:3]
    assert "2x4 (WxH)" in report.skipped[0].message and "'pred'" in report.skipped[0].message
    assert ids[1] in str(report.skipped[0]) and "no ground truth" in report.skipped[1].message
    d = report.to_dict()
    assert d["skipped_count"] == 2 and ids[1] in d["skipped"][0] and ds.first().filepath not in d["skipped"][0]
    # a: tp 4 (image 1) + 0 (image 4), gt 4 + 4, pred 8 + 0 -> IoU 4 / 12
    assert report.class_iou["a"] == pytest.approx(4 / 12)
    assert ds.values(KEY + "_iou") == pytest.approx([4 / 8, None, None, 0.0])

    # an unreadable image: its ground truth mask gives the size
    os.remove(ds.first().filepath)
    report = se.evaluate(ds, "pred", "gt", eval_key=None)
    assert report.images == 2 and report.class_iou["a"] == pytest.approx(4 / 12)
    assert ds.list_evaluations() == [KEY]  # eval_key=None stores nothing


def test_pets_images(db):
    import fiftyone as fo

    import samtext.actions.evaluation as se

    ds = make_pets_dataset(pets_stems(animal="cat", n=2), gt_field="gt")  # 0/255 masks, no mask_targets
    gts = [s.gt.mask for s in ds]
    shifted = [np.roll(m == 255, 12, axis=1).astype(np.uint8) for m in gts]
    for s, p in zip(ds, shifted):
        s["pred"] = fo.Segmentation(mask=p)
        s.save()
    ds.mask_targets["pred"] = {1: "cat"}
    ds.save()
    report = se.evaluate(ds, "pred", "gt", progress=True)
    g = np.concatenate([m.ravel() == 255 for m in gts])
    p = np.concatenate([m.ravel() == 1 for m in shifted])
    assert report.class_iou["cat"] == pytest.approx((g & p).sum() / (g | p).sum())
    assert report.class_iou["background"] == pytest.approx((~g & ~p).sum() / (~g | ~p).sum())
    per_image = [((m == 255) & (q == 1)).sum() / ((m == 255) | (q == 1)).sum() for m, q in zip(gts, shifted)]
    assert ds.values(KEY + "_iou") == pytest.approx(per_image)
    assert report.confusion_matrix.sum() == sum(m.size for m in gts)  # every pixel, at the images' size


def test_image_size_from_metadata_or_exif(db, tmp_path):
    import fiftyone as fo

    import samtext.actions.evaluation as se

    # a JPEG stored 4 wide x 2 high with EXIF orientation 6 shows 2 wide x 4 high: masks are drawn upright
    path = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(path, exif=exif)
    upright = np.array([[1, 1], [1, 1], [0, 0], [0, 0]], np.uint8)  # (H, W) = (4, 2)
    ds = fo.Dataset()
    ds.add_sample(fo.Sample(filepath=path, gt=fo.Segmentation(mask=upright), pred=fo.Segmentation(mask=upright)))
    ds.mask_targets = {"gt": {1: "a"}, "pred": {1: "a"}}
    ds.save()
    report = se.evaluate(ds, "pred", "gt")
    assert not report.skipped and report.confusion_matrix.tolist() == [[4, 0], [0, 4]]

    # metadata, when computed, gives the size: here twice the masks' resolution
    sample = ds.first()
    sample.metadata = fo.ImageMetadata(width=4, height=8)
    sample.save()
    report = se.evaluate(ds, "pred", "gt")
    assert report.confusion_matrix.tolist() == [[16, 0], [0, 16]]


def test_operator_runs_through_fiftyone_and_names_classes_from_the_form(db, tmp_path):
    """The operator (loaded by FiftyOne's plugin loader) with the form's "255=cat" for an unnamed ground truth."""
    import fiftyone.operators as foo

    from conftest import PLUGIN_NAME

    size = (2, 4)
    gt = [GT[0] * 0 + (GT[0] == 1) * 255, GT[1] * 255]
    pred = [(PRED[0] == 1).astype(np.uint8) * 3, PRED[1] * 3]
    ds = _dataset(tmp_path, [(size, g.astype(np.uint8), p) for g, p in zip(gt, pred)], pred_targets={3: "cat"})
    params = dict(pred_field="pred", gt_field="gt", eval_key="op_eval", gt_targets="255=cat")
    result = foo.execute_operator(PLUGIN_NAME + "/evaluate_segmentations", {"dataset": ds, "params": params})
    assert result.error is None, result.error
    assert result.result["images"] == 2 and result.result["eval_key"] == "op_eval"
    assert [c.split(":")[0] for c in result.result["class_iou"]] == ["background", "cat"]
    assert "op_eval" in ds.list_evaluations() and len(ds.exists("op_eval_iou")) == 2
    params["gt_targets"] = "cat=255"
    with pytest.raises(Exception, match="255=cat"):
        foo.execute_operator(PLUGIN_NAME + "/evaluate_segmentations", {"dataset": ds, "params": params})


def test_void_pixels_are_not_scored_and_boxes_without_masks_are_skipped(db, tmp_path):
    import fiftyone as fo

    size = (2, 4)
    gt = np.array([[1, 1, 255, 0], [0, 0, 255, 0]], np.uint8)  # a VOC-like "void" border
    pred = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], np.uint8)
    ds = _dataset(tmp_path, [(size, gt, pred)], gt_targets={1: "cat", 255: "void"}, pred_targets={1: "cat"})
    report = se_evaluate(ds)
    assert report.confusion_matrix.tolist() == [[3, 1], [0, 2]]  # the 2 void pixels count nowhere
    assert report.class_iou["cat"] == pytest.approx(2 / 3)
    sample = ds.first()
    sample["boxes"] = fo.Detections(detections=[fo.Detection(label="cat", bounding_box=[0, 0, 0.5, 0.5])])
    sample.save()
    report = se_evaluate(ds, gt_field="boxes")
    assert report.images == 0 and "without instance masks" in report.skipped[0].message


def se_evaluate(ds, gt_field="gt"):
    import samtext

    return samtext.evaluate(ds, "pred", gt_field, eval_key=None)
