""""Annotate by few-shot examples" end to end through a real database: proposals of synthetic scenes written by
the proposals action's own driver run (with the region segmenter double in place of SAM, so that the right
answer is known), exemplars picked by label id, tag and cluster, negatives, several classes, and bad input."""

import dataclasses
import os

import numpy as np
import pytest
from PIL import Image

from conftest import make_scenes_dataset
from samtext.run.fields import detection_mask
from doubles import BLUE, GREEN, LOOKALIKE_FEATURES, ORANGE, RED, FakeSegmenter, draw_objects

SCENES = [  # (kind, colour, y, x) per image
    [("disc", RED, 40, 40), ("rect", BLUE, 110, 130), ("disc", GREEN, 120, 40)],
    [("rect", RED, 40, 140), ("disc", RED, 120, 60), ("disc", ORANGE, 50, 50)],
    [("disc", BLUE, 40, 40), ("rect", ORANGE, 120, 140), ("disc", RED, 110, 50)],
    [("disc", GREEN, 60, 60), ("rect", BLUE, 120, 140)],
]


@pytest.fixture
def scenes(db, tmp_path):
    """A dataset of the scenes with proposals in "props" (SAM-pooled embeddings of the double's features);
    returns it and, per sample, the true masks of its objects with their colours."""
    ds, truth = make_scenes_dataset(SCENES, tmp_path)
    summary = _propose(ds)
    assert summary.labelled == len(SCENES) and summary.failed == 0
    return ds, truth


def _propose(ds):
    """Proposals in "props" through the proposals action's driver run, the double in SAM's place."""
    from samtext.run import driver
    from samtext.pipelines.embeddings import EmbeddedProposals
    from samtext.pipelines.proposals import ProposalGenerator, ProposalSettings
    from samtext.actions.mask_proposals import proposals_action

    double = EmbeddedProposals(ProposalGenerator(FakeSegmenter(features=LOOKALIKE_FEATURES, noise=0.1),
                                                 ProposalSettings(points_per_side=16)), "sam")
    action = dataclasses.replace(proposals_action(ProposalSettings(sam_model="tiny", embedder="sam")), build=lambda: double)
    return driver.run_with_progress(driver.iter_run(ds, action, out_field="props"))


def _proposal_id(ds, truth, sample_index, colour, nth=0):
    """The id of the proposal that is the ``nth`` object of ``colour`` in sample ``sample_index``."""
    sample = ds.skip(sample_index).first()
    dets = sample["props"]
    h, w = dets.image_height, dets.image_width
    target = [m for c, m in truth[sample_index] if c == colour][nth]
    for det in dets.detections:
        mask = detection_mask(det, (h, w))
        if (mask & target).sum() > 0.95 * (mask | target).sum():
            return det.id
    raise AssertionError("no proposal for that object")


def _labelled(ds, truth, field, colours_to_values):
    """For every object of every sample, whether the written mask gives it its colour's value (0 = none)."""
    ok = []
    for sample, objects in zip(ds, truth):
        mask = sample[field].get_mask()
        for colour, m in objects:
            want = colours_to_values.get(colour, 0)
            ok.append((mask[m] == want).mean() > 0.97)
    return ok


def test_one_exemplar_labels_its_kind_everywhere(scenes):
    import samtext

    ds, truth = scenes
    exemplar = _proposal_id(ds, truth, 0, RED)
    summary = samtext.annotate_by_examples(ds, {"red": [exemplar]}, proposals_field="props", out_field="reds")
    assert summary.labelled == len(SCENES) and summary.failed == 0
    assert ds.mask_targets["reds"] == {1: "red"}
    assert all(_labelled(ds, truth, "reds", {RED: 1}))
    n_red = sum(c == RED for objects in truth for c, _ in objects)
    assert summary.instances == n_red and ds.count("reds_instances.detections") == n_red
    assert ds.match({"filepath": {"$regex": "scene_3"}}).first()["reds"].empty_reason
    config = ds.get_run_info("samtext_reds").config
    assert config.action == "annotate_by_examples" and config.settings["examples"]["red"]["label_ids"] == [exemplar]
    assert config.learnt["exemplars"]["red"] == {"positives": 1, "negatives": 0}


def test_negative_tag_and_two_classes(scenes):
    import samtext

    ds, truth = scenes
    red, blue = _proposal_id(ds, truth, 0, RED), _proposal_id(ds, truth, 0, BLUE)
    orange = _proposal_id(ds, truth, 1, ORANGE)
    ds.select_labels(ids=[orange], fields="props").tag_labels("not_red")
    examples = {"red": samtext.Exemplars(label_ids=[red], negative_tag="not_red"), "blue": [blue]}
    samtext.annotate_by_examples(ds, examples, proposals_field="props", out_field="two", threshold=0.4)
    assert ds.mask_targets["two"] == {1: "red", 2: "blue"}
    assert all(_labelled(ds, truth, "two", {RED: 1, BLUE: 2}))  # orange (a look-alike of red) stays 0
    loose = samtext.annotate_by_examples(ds, {"red": [red]}, proposals_field="props", out_field="loose",
                                         threshold=0.4)
    assert loose.labelled == len(SCENES)
    assert all(_labelled(ds, truth, "loose", {RED: 1, ORANGE: 1})), "without the negative, orange passes at 0.4"


def test_whole_cluster_as_exemplars(scenes):
    import samtext

    ds, truth = scenes
    samtext.compute_proposal_map(ds, field="props", num_clusters="auto")
    red = _proposal_id(ds, truth, 0, RED)
    (cluster,) = ds.select_labels(ids=[red], fields="props").values("props.detections.cluster", unwind=True)
    samtext.annotate_by_examples(ds, {"red": samtext.Exemplars(clusters=[cluster])}, proposals_field="props",
                                 out_field="by_cluster")
    assert all(_labelled(ds, truth, "by_cluster", {RED: 1}))


def test_bad_exemplars_are_refused_before_anything_is_written(scenes):
    import fiftyone as fo
    import samtext

    ds, truth = scenes
    red = _proposal_id(ds, truth, 0, RED)
    other = fo.Dataset()
    other.add_samples([fo.Sample(filepath=p) for p in ds.values("filepath")[:2]])
    _propose(other)
    first = ds.first()
    first["boxes"] = fo.Detections(detections=[fo.Detection(label="red", bounding_box=[0.1, 0.1, 0.2, 0.2])])
    first.save()
    cases = [
        ({"red": [first["boxes"].detections[0].id]}, {}, "not a proposal in field 'props'"),  # another field
        ({"red": ["0123456789ab0123456789ab"]}, {}, "recomputed since"),
        ({"red": ["abc"]}, {}, "not a label id"),
        ({"red": []}, {}, "no exemplars"),
        ({"red": samtext.Exemplars(clusters=[99])}, {}, "no clusters|does not exist"),
        ({"red": samtext.Exemplars(tag="nothing")}, {}, "label tag"),
        ({"": [red]}, {}, "non-empty name"),
        ({"red": [red]}, {"proposals_field": "missing"}, "no field 'missing'"),
        ({"red": [red]}, {"scoring": "mean"}, "scoring"),
        ({"red": [red]}, {"out_field": "props"}, "reads"),
        ({"red": {"labels": [red]}}, {}, "unknown exemplar key"),
    ]
    for examples, kwargs, match in cases:
        kwargs = dict(dict(proposals_field="props", out_field="bad"), **kwargs)
        with pytest.raises(ValueError, match=match):
            samtext.annotate_by_examples(ds, examples, **kwargs)
    with pytest.raises(ValueError, match="not a proposal in field 'props' of dataset"):
        samtext.annotate_by_examples(other, {"red": [red]}, proposals_field="props")
    assert "bad" not in ds.get_field_schema() and "samtext_bad" not in ds.list_runs()


def test_samples_without_proposals_are_not_targets_and_missing_vectors_are_errors(scenes, tmp_path):
    import fiftyone as fo
    import samtext

    ds, truth = scenes
    path = os.path.join(str(tmp_path), "new.png")
    Image.fromarray(draw_objects([("disc", RED, 50, 50)])[0]).save(path)
    new = ds.add_sample(fo.Sample(filepath=path))
    # a proposal added by hand to the last scene has no stored embedding
    last = ds.skip(len(SCENES) - 1).first()
    mask = np.zeros((160, 192), bool)
    mask[5:20, 5:20] = True
    last["props"].detections.append(fo.Detection.from_mask(mask, label="proposal"))
    last.save()
    summary = samtext.annotate_by_examples(ds, {"red": [_proposal_id(ds, truth, 0, RED)]}, proposals_field="props",
                                           out_field="with_gap")
    assert summary.targets == len(SCENES), "the sample without proposals is not a target"
    assert summary.labelled == len(SCENES) - 1 and summary.failed == 1
    assert summary.errors[0].sample_id == last.id and "no stored embedding" in summary.errors[0].message
    assert ds[new]["with_gap"] is None


URI = "@samtext/samtext/annotate_by_examples"


def _extended(stage):
    """A lasso's view stage as the App sends it to operators: the embeddings route's ``{"_cls", "kwargs"}``,
    kept by the App as extended stages ``{class path: kwargs}``."""
    d = stage._serialize(include_uuid=False)
    return {d["_cls"]: dict(d["kwargs"])}


def _red_ids(ds, truth):
    return sorted([_proposal_id(ds, truth, 0, RED), _proposal_id(ds, truth, 1, RED, 1)])


@pytest.mark.parametrize("how", ["patches view lasso", "samples view lasso", "extended selection", "selected labels",
                                 "patches selected in the grid"])
def test_operator_takes_the_app_selection_as_exemplars(scenes, how):
    import fiftyone.core.stages as fos
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    ds, truth = scenes
    picked = _red_ids(ds, truth)
    params = dict(class_name="red", proposals_field="props", out_field="op_red")  # no target: the whole dataset
    ctx = {"params": params}
    if how == "patches view lasso":  # the lasso's stage on a patches view of the plot's field: Select(patch ids)
        ctx.update(view=ds.to_patches("props"), extended=_extended(fos.Select(picked)))
    elif how == "samples view lasso":  # on a samples view: MatchLabels(fields=[field], ids=label ids)
        ctx.update(dataset=ds, extended=_extended(fos.MatchLabels(fields=["props"], ids=picked)))
    elif how == "extended selection":
        ctx.update(dataset=ds, extended_selection=picked)
    elif how == "patches selected in the grid":  # a patch's id is its label's id
        ctx.update(view=ds.to_patches("props"), selected=picked)
    else:
        sample_ids = ds.select_labels(ids=picked, fields="props").values("id")
        ctx.update(dataset=ds, selected_labels=[
            {"label_id": i, "sample_id": s, "field": "props"} for i, s in zip(picked, sorted(sample_ids))])

    view = ctx.get("view") or ds.view()
    request = dict(ctx, dataset_name=ds.name, view=view._serialize())
    request.pop("dataset", None)
    form = foo.get_operator(URI).resolve_input(ExecutionContext(request_params=request)).type.properties
    assert form["picked"].view.label.startswith("2 proposals")

    result = foo.execute_operator(URI, ctx)
    assert result.error is None, result.error
    ds.reload()
    config = ds.get_run_info("samtext_op_red").config
    assert sorted(config.settings["examples"]["red"]["label_ids"]) == picked
    assert ds.count("op_red") == len(SCENES), "the whole dataset is labelled, not only the lassoed samples"
    assert all(_labelled(ds, truth, "op_red", {RED: 1}))


def test_operator_by_tag_and_delegated(scenes):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    ds, truth = scenes
    ds.select_labels(ids=_red_ids(ds, truth), fields="props").tag_labels("red_example")
    op = foo.get_operator(URI)
    queued = op(ds, "red", delegate=True, proposals_field="props", exemplar_source="tag",
                exemplar_tag="red_example", out_field="later_red")
    assert queued.delegated and "later_red" not in ds.get_field_schema()
    svc = DelegatedOperationService()
    (done,) = svc.execute_queued_operations(operator=URI, dataset_name=ds.name)
    assert done.error is None, done.error
    ds.reload()
    assert all(_labelled(ds, truth, "later_red", {RED: 1}))


def test_operator_placement_and_empty_selection(scenes):
    import fiftyone.operators as foo
    import fiftyone.operators.types as types
    from fiftyone.operators.executor import ExecutionContext

    ds, _ = scenes
    op = foo.get_operator(URI)
    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": {}})
    assert op.resolve_placement(ctx).place == types.Places.EMBEDDINGS_ACTIONS
    props = op.resolve_input(ctx).type.properties
    assert props["proposals_field"].default == "props" and "how" in props  # nothing picked: says how
    with pytest.raises(Exception, match="no exemplars"):
        foo.execute_operator(URI, {"dataset": ds, "params": dict(class_name="red", proposals_field="props",
                                                                 out_field="nothing_picked")})


def test_a_view_that_hides_the_fields_labels_the_same_and_skips_what_is_done(scenes):
    import samtext

    ds, truth = scenes
    red = _proposal_id(ds, truth, 0, RED)
    hidden = ds.select_fields()  # neither the proposals nor the output field are in the view
    first = samtext.annotate_by_examples(hidden, {"red": [red]}, proposals_field="props", out_field="hid")
    assert first.labelled == len(SCENES) and first.failed == 0
    assert all(_labelled(ds, truth, "hid", {RED: 1}))
    again = samtext.annotate_by_examples(ds.exclude_fields("hid"), {"red": [red]}, proposals_field="props",
                                         out_field="hid")
    assert again.labelled == 0 and again.skipped_existing == len(SCENES)


# ------------------------------------------------------------------------------ exemplars given as masks


@pytest.fixture
def double_embedder(monkeypatch):
    """Mask exemplars embedded by the proposals' own double: ``samtext.models.load_sam("tiny")``, which the
    proposals record names, gives the region double (the embedder itself is rebuilt by samtext's code)."""
    import samtext.models

    double = FakeSegmenter(features=LOOKALIKE_FEATURES, noise=0.1)
    monkeypatch.setattr(samtext.models, "load_sam", lambda name, *a, **k: double if name == "tiny" else None)
    return double


def _add_drawn_sample(ds, tmp_path, objects, field, values, targets):
    """A new sample (no proposals) whose ``field`` is a Segmentation of its objects with the given values."""
    import fiftyone as fo

    img, masks = draw_objects(objects)
    path = os.path.join(str(tmp_path), "drawn_%s.png" % field)
    Image.fromarray(img).save(path)
    drawn = np.zeros(img.shape[:2], np.uint8)
    for m, v in zip(masks, values):
        drawn[m] = v
    sample = ds[ds.add_sample(fo.Sample(filepath=path, **{field: fo.Segmentation(mask=drawn)}))]
    ds.mask_targets = dict(ds.mask_targets, **{field: targets})
    ds.save()
    return sample


def test_masks_drawn_in_another_field_are_exemplars(scenes, tmp_path, double_embedder):
    """An unseen image with a hand-drawn segmentation labels every red and blue object of the scenes; the
    drawn image has no proposals and is not a target."""
    import samtext

    ds, truth = scenes
    _add_drawn_sample(ds, tmp_path, [("disc", RED, 50, 60), ("rect", BLUE, 110, 130)], "drawn", [1, 2],
                      {1: "red", 2: "blue"})
    summary = samtext.annotate_by_examples(
        ds, {"red": samtext.Exemplars(mask_field="drawn"), "blue": samtext.Exemplars(mask_field="drawn")},
        proposals_field="props", out_field="from_drawn")
    assert summary.targets == len(SCENES) and summary.failed == 0
    assert ds.mask_targets["from_drawn"] == {1: "red", 2: "blue"}
    assert all(_labelled(ds, truth, "from_drawn", {RED: 1, BLUE: 2}))
    assert double_embedder.embed_calls == 2  # the drawn image, once per class
    learnt = ds.get_run_info("samtext_from_drawn").config.learnt["exemplars"]
    assert learnt == {"red": {"positives": 1, "negatives": 0}, "blue": {"positives": 1, "negatives": 0}}


def test_approved_detections_feed_the_next_run(scenes, double_embedder):
    """The review loop: labels approved into a Detections field (here: one red object of scene 1, as a
    reviewer keeps it) are the exemplars of the next run; a pixel value names a class of an unnamed mask."""
    import fiftyone as fo
    import samtext

    ds, truth = scenes
    sample = ds.skip(1).first()
    red_mask = [m for c, m in truth[1] if c == RED][1]
    sample["approved"] = fo.Detections(detections=[fo.Detection.from_mask(red_mask, label="red")])
    sample.save()
    samtext.annotate_by_examples(ds, {"red": samtext.Exemplars(mask_field="approved", mask_samples=[sample.id])},
                                 proposals_field="props", out_field="next_run")
    assert all(_labelled(ds, truth, "next_run", {RED: 1}))
    # a segmentation without mask targets: the class is a pixel value
    unnamed = ds.skip(2).first()
    blue = [m for c, m in truth[2] if c == BLUE][0]
    unnamed["painted"] = fo.Segmentation(mask=(blue * 255).astype(np.uint8))
    unnamed.save()
    samtext.annotate_by_examples(ds, {"blue": samtext.Exemplars(mask_field="painted", mask_class=255)},
                                 proposals_field="props", out_field="painted_run")
    assert all(_labelled(ds, truth, "painted_run", {BLUE: 1}))


def test_bad_mask_exemplars_are_refused(scenes, tmp_path, double_embedder):
    import fiftyone as fo
    import samtext

    ds, truth = scenes
    first = ds.first()
    first["kind"] = fo.Classification(label="red")
    first["approved"] = fo.Detections(detections=[fo.Detection(label="red", bounding_box=[0.1, 0.1, 0.2, 0.2])])
    first["unnamed"] = fo.Segmentation(mask=np.zeros((160, 192), np.uint8))
    first.save()
    cases = [
        (dict(mask_field="nowhere"), "not a field"),
        (dict(mask_field="kind"), "holds Classification"),
        (dict(mask_field="props"), "is the proposals field"),
        (dict(mask_field="approved"), "no detection labelled 'red' with a mask"),
        (dict(mask_field="unnamed"), "not in the mask targets"),
        (dict(mask_field="unnamed", mask_class=3), "no exemplar of 3 found"),
        (dict(mask_samples=[first.id]), "without a mask field"),
        (dict(mask_field="approved", mask_samples=["0123456789ab0123456789ab"]), "no sample with this ID"),
    ]
    for spec, match in cases:
        with pytest.raises(ValueError, match=match):
            samtext.annotate_by_examples(ds, {"red": samtext.Exemplars(**spec)}, proposals_field="props",
                                         out_field="bad")
    assert "bad" not in ds.get_field_schema()


def test_mask_exemplars_use_the_weights_the_proposals_used():
    from samtext.actions.exemplars import proposals_embedder
    from samtext.settings import ExamplesSettings

    with pytest.raises(ValueError, match="pass its path as clip_checkpoint"):
        proposals_embedder(dict(embedder="clip", clip_model="tiny", clip_checkpoint="mine.pt"))
    with pytest.raises(ValueError, match="not the weights file"):
        proposals_embedder(dict(embedder="sam", sam_model="tiny", sam_checkpoint="a.pth"),
                           ExamplesSettings(sam_checkpoint="/x/b.pth"))
    with pytest.raises(ValueError, match="without embeddings"):
        proposals_embedder(dict(embedder=None))


def test_a_proposal_copied_into_a_mask_field_matches_as_its_label_id_does(db, tmp_path):
    """With the real tiny SAM and CLIP: the embedder rebuilt from the proposals record (CLIP model, crop
    context) gives a copied proposal's mask its stored vector, so both ways of giving it label the same."""
    import fiftyone as fo
    import samtext

    from conftest import pets_stems, PETS

    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=os.path.join(PETS, "images", s + ".jpg")) for s in pets_stems(n=3)])
    samtext.compute_mask_proposals(ds, out_field="props", sam_model="tiny", embedder="clip", clip_model="tiny",
                                   crop_context=0.2, points_per_side=4, pred_iou_thresh=0.0,
                                   stability_score_thresh=0.0, min_area=50)
    sample = ds.first()
    det = sample["props"].detections[0]
    size = (sample["props"].image_height, sample["props"].image_width)
    sample["approved"] = fo.Detections(detections=[fo.Detection.from_mask(detection_mask(det, size),
                                                                          label="thing")])
    sample.save()
    by_id = samtext.annotate_by_examples(ds, {"thing": [det.id]}, proposals_field="props", out_field="by_id",
                                         threshold=0.99)
    by_mask = samtext.annotate_by_examples(ds, {"thing": samtext.Exemplars(mask_field="approved")},
                                           proposals_field="props", out_field="by_mask", threshold=0.99)
    assert by_id.instances >= 1 and by_mask.instances == by_id.instances
    for s in ds:
        a, b = s["by_id"].get_mask(), s["by_mask"].get_mask()
        assert (a == b).all()


def test_operator_takes_masks_of_another_field(scenes, tmp_path, double_embedder):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    ds, truth = scenes
    drawn = _add_drawn_sample(ds, tmp_path, [("disc", RED, 50, 60)], "drawn", [7], {7: "crimson"})
    op = foo.get_operator(URI)
    ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, selected=[drawn.id],
                                               params=dict(exemplar_source="masks", proposals_field="props")))
    form = op.resolve_input(ctx).type
    assert form.properties["mask_field"].type.values == ["drawn"]  # the proposals field is not offered
    assert form.properties["mask_selected_only"].default is True
    op(ds, "red", proposals_field="props", exemplar_source="masks", mask_field="drawn", mask_class="crimson",
       out_field="op_drawn")
    ds.reload()
    assert all(_labelled(ds, truth, "op_drawn", {RED: 1}))
    assert ds.get_run_info("samtext_op_drawn").config.settings["examples"]["red"]["mask_field"] == "drawn"


def test_a_rerun_from_an_approved_correction_adds_its_look_to_the_exemplars(scenes, double_embedder):
    """Red exemplar only: the orange objects stay unlabelled. A person paints sample 1's orange disc into its
    label and approves it; the rerun labels the orange rect of sample 2 too, and leaves sample 1 as corrected."""
    import samtext
    import samtext.run.records as records

    ds, truth = scenes
    red = _proposal_id(ds, truth, 0, RED)
    samtext.annotate_by_examples(ds, {"red": [red]}, proposals_field="props", out_field="reds")
    assert _labelled(ds, truth, "reds", {RED: 1}) == [True] * sum(map(len, truth))
    fixed = ds.skip(1).first()
    corrected = fixed["reds"].get_mask().copy()
    corrected[[m for c, m in truth[1] if c == ORANGE][0]] = 1
    fixed["reds"].mask = corrected
    fixed["reds"].tags = ["approved"]
    fixed.save()

    summary = samtext.rerun_from_approved(ds, "reds")
    assert summary.targets == len(SCENES) - 1 and summary.failed == 0
    assert _labelled(ds, truth, "reds", {RED: 1, ORANGE: 1}) == [True] * sum(map(len, truth))
    assert np.array_equal(ds.skip(1).first()["reds"].get_mask(), corrected)
    record = records.read_run(ds, records.run_key_for("reds"))
    spec = record["settings"]["examples"]["red"]
    assert spec["label_ids"] == [red] and spec["mask_field"] == "reds_approved" and spec["mask_samples"] == [fixed.id]
    assert record["settings"]["approved"]["label_ids"] == [fixed["reds"].id]
