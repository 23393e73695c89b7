""""Annotate by text" end to end through a real database: known answers with the SAM and CLIP doubles in the
action's place (the driver, the writer and the record are the real ones), the real tiny models through the SDK and
the operator (immediate, called, delegated), and bad input."""

import dataclasses
import os

import numpy as np
import pytest
from PIL import Image

from conftest import make_pets_dataset, make_scenes_dataset, pets_stems
from doubles import BLUE, GREEN, RED, YELLOW, FakeSegmenter, TextClip

URI = "@samtext/samtext/annotate_by_text"
WORDS = {"red": [RED], "blue": [BLUE], "green": [GREEN], "yellow": [YELLOW]}
SCENES = [  # (kind, colour, y, x) per image
    [("disc", RED, 40, 40), ("rect", BLUE, 110, 130)],
    [("disc", RED, 40, 140), ("disc", RED, 120, 50)],  # two instances of one class
    [("disc", GREEN, 60, 60)],  # none of the prompts
]
TINY = dict(sam_model="tiny", clip_model="tiny", device="cpu", threshold=0.0)


@pytest.fixture
def scenes(db, tmp_path):
    return make_scenes_dataset(SCENES, tmp_path)


def _run_with_doubles(ds, prompts, **kwargs):
    """The text action through the real driver (validation, writes, record), its labeller built on the doubles."""
    from samtext.run import driver
    from samtext.pipelines.text import TextLabeller, TextSettings
    from samtext.pipelines.text_boxes import BoxLocalizer
    from samtext.actions.by_text import text_action

    action = text_action(ds, prompts, TextSettings(**dict(dict(sam_model="tiny", clip_model="tiny"), **kwargs)))

    def build():
        clip, settings = TextClip(WORDS), TextSettings()
        return TextLabeller(FakeSegmenter(box_margin=3), clip, action.classes, BoxLocalizer(clip, settings), [], settings)

    action = dataclasses.replace(action, build=build, info=lambda labeller: {})
    return driver.run_with_progress(driver.iter_run(ds, action, out_field="colours", save_prompts=True))


def test_known_answers_through_the_database(scenes):
    import fiftyone as fo

    ds, truth = scenes
    summary = _run_with_doubles(ds, "red thing; blue box; yellow flower")
    assert (summary.labelled, summary.failed, summary.empty) == (3, 0, 1)
    assert ds.mask_targets["colours"] == {1: "red thing", 2: "blue box", 3: "yellow flower"}
    values = {RED: 1, BLUE: 2}
    for sample, objects in zip(ds.sort_by("scene"), truth):
        mask = sample["colours"].get_mask()
        for colour, m in objects:
            assert (mask[m] == values.get(colour, 0)).mean() > 0.9, (sample.scene, colour)
        dets = sample["colours_instances"].detections
        assert len(dets) == sum(c in values for c, _ in objects)
        assert all(0 < d.confidence <= 1 and d.clip_score > 0.5 for d in dets)
    two = ds.match({"scene": 1}).first()
    assert [d.label for d in two["colours_instances"].detections] == ["red thing", "red thing"]
    empty = ds.match({"scene": 2}).first()["colours"]
    assert not empty.get_mask().any() and "yellow flower" in empty.empty_reason
    assert isinstance(ds.first()["colours_prompts"], fo.Keypoints)
    config = ds.get_run_info("samtext_colours").config
    assert config.action == "annotate_by_text" and config.settings["prompts"] == ["red thing", "blue box",
                                                                                   "yellow flower"]


@pytest.fixture
def pets(db):
    return make_pets_dataset(pets_stems("unlabeled", "cat", 2) + pets_stems("unlabeled", "dog", 1))


@pytest.mark.parametrize("localizer, clip_model", [("boxes", "tiny"), ("patches", "tiny-rn")])
def test_sdk_with_the_tiny_models(pets, localizer, clip_model):
    import samtext

    seen = []
    summary = samtext.annotate_by_text(pets, "cat; dog", out_field="animals", localizer=localizer,
                                       progress=lambda d, t: seen.append((d, t)), **dict(TINY, clip_model=clip_model,
                                                                                          max_instances=2))
    assert summary.labelled == 3 and summary.failed == 0 and seen[-1] == (3, 3)
    assert summary.instances >= 3  # at threshold 0 every image gets objects
    assert pets.mask_targets["animals"] == {1: "cat", 2: "dog"}
    for sample in pets:
        mask = sample["animals"].get_mask()
        width, height = Image.open(sample.filepath).size
        assert mask.shape == (height, width)
        assert set(np.unique(mask)) <= {0, 1, 2}
        assert all(d.label in ("cat", "dog") for d in sample["animals_instances"].detections)
    record = pets.get_run_info("samtext_animals").config
    assert record.settings["localizer"] == localizer and record.settings["clip_model"] == clip_model
    # a rerun with the same settings skips what is labelled; other prompts are refused without overwrite
    again = samtext.annotate_by_text(pets, "cat; dog", out_field="animals", localizer=localizer,
                                     **dict(TINY, clip_model=clip_model, max_instances=2))
    assert again.skipped_existing == 3 and again.labelled == 0
    with pytest.raises(ValueError, match="prompts"):
        samtext.annotate_by_text(pets, "cat", out_field="animals", localizer=localizer, **TINY)


def test_existing_classes_keep_their_values(pets):
    import fiftyone as fo
    import samtext

    pets.mask_targets = {"animals": {1: "dog", 7: "sofa"}}
    pets.save()
    pets.add_sample_field("animals", fo.EmbeddedDocumentField, embedded_doc_type=fo.Segmentation)
    samtext.annotate_by_text(pets, "cat; dog", out_field="animals", **TINY)
    assert pets.mask_targets["animals"] == {1: "dog", 7: "sofa", 8: "cat"}


def test_unicode_prompts_name_the_classes(pets):
    import samtext

    samtext.annotate_by_text(pets.limit(1), "chat tigré; 猫", out_field="uni", **TINY)
    assert pets.mask_targets["uni"] == {1: "chat tigré", 2: "猫"}


@pytest.mark.parametrize("prompts, kwargs, message", [
    ("", {}, "no prompts"),
    (" ; ;\n", {}, "only separators"),
    ("a " * 80, {}, "CLIP reads at most 75"),
    (";".join("thing %d" % i for i in range(256)), {}, "at most 255"),
    ("car", {"negative_prompts": "not the car"}, "both a prompt and a negative"),
    ("car", {"localizer": "grid"}, "unknown localizer"),
    ("car", {"threshold": 1.5}, "threshold must be between 0 and 1"),
    ("car", {"search_mode": "slow"}, "selective search mode"),
    ("car", {"patch_sizes": [2]}, "patch sizes"),
    ("car", {"clip_model": "NoSuchCLIP"}, "unknown clip_model"),
])
def test_bad_input_is_refused_and_nothing_is_created(pets, prompts, kwargs, message):
    import samtext

    before = pets.get_field_schema()
    with pytest.raises(ValueError, match=message):
        samtext.annotate_by_text(pets, prompts, out_field="bad", **dict(TINY, **kwargs))
    assert pets.get_field_schema() == before and "samtext_bad" not in pets.list_runs()


def test_broken_and_tiny_images_are_handled(pets, tmp_path):
    import fiftyone as fo
    import samtext

    broken = os.path.join(str(tmp_path), "broken.jpg")
    with open(broken, "wb") as f:
        f.write(b"not a jpeg")
    small = os.path.join(str(tmp_path), "small.png")
    Image.fromarray(np.full((6, 9, 3), 90, np.uint8)).save(small)
    pets.add_samples([fo.Sample(filepath=broken), fo.Sample(filepath=small)])
    pets.first()["ground_truth"]  # untouched below
    summary = samtext.annotate_by_text(pets, "cat", out_field="robust", fail_fast=0, **TINY)
    assert summary.labelled == 4 and summary.failed == 1
    assert "broken.jpg" in str(summary.errors[0])
    assert pets.match({"filepath": small}).first()["robust"].get_mask().shape == (6, 9)
    assert all(s["ground_truth"] is not None for s in pets.exists("stem"))


# --- operator: FiftyOne's execution ------------------------------------------------------------------


def test_operator_immediate_and_on_a_view(pets):
    import fiftyone.operators as foo

    params = dict(prompts="cat; dog", out_field="op_text", **TINY)
    result = foo.execute_operator(URI, {"dataset": pets, "params": params})
    assert result.error is None
    assert pets.count("op_text") == 3 and pets.mask_targets["op_text"] == {1: "cat", 2: "dog"}
    notes = [r["params"] for r in result.executor.to_json()["requests"] if r["operator_uri"] == "notify"]
    assert "labelled 3 images into op_text" in notes[0]["message"]
    assert pets.count("op_text_prompts") == 3  # the form saves prompts by default
    view = pets.match({"stem": {"$regex": "^[a-z]"}}).limit(1)
    foo.execute_operator(URI, {"view": view, "params": dict(params, out_field="op_view", localizer="patches")})
    assert pets.exists("op_view").values("id") == view.values("id")


def test_operator_call_and_delegated(pets):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    op = foo.get_operator(URI)
    result = op(pets, "cat", out_field="called", **TINY)
    assert result.error is None and pets.count("called") == 3
    queued = op(pets, "dog", out_field="later", delegate=True, **TINY)
    assert queued.delegated and "later" not in pets.get_field_schema()
    svc = DelegatedOperationService()
    (doc,) = svc.get_queued_operations(operator=URI, dataset_name=pets.name)
    svc.execute_queued_operations(operator=URI, dataset_name=pets.name)
    assert svc.get(doc.id).run_state == ExecutionRunState.COMPLETED
    pets.reload()
    assert pets.count("later") == 3


def test_operator_form_checks_the_prompts(pets):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    op = foo.get_operator(URI)

    def form(**params):
        ctx = ExecutionContext(request_params={"dataset_name": pets.name, "params": params})
        return op.resolve_input(ctx).type.properties

    props = form(prompts=" ; ")
    assert props["prompts"].invalid and "only separators" in props["prompts"].error_message
    props = form(prompts="car; bus", localizer="patches")
    assert not getattr(props["prompts"], "invalid", False)
    assert "2 classes: car, bus" in props["classes_note"].view.label
    assert "top_k_patches" in props and "max_proposals" not in props
    assert "max_proposals" in form(prompts="car")
    # SAM 3's concept prompt: CLIP's fields go, the SAM model offers SAM 3 only, and another model is refused
    props = form(prompts="car", localizer="sam3")
    assert "clip_model" not in props and props["sam_model"].default == "sam3"
    assert set(props["sam_model"].type.values) == {"sam3", "tiny-sam3"}
    props = form(prompts="car", localizer="sam3", sam_model="vit_b")
    assert props["sam_model"].invalid and "runs on SAM 3" in props["sam_model"].error_message
    assert not getattr(form(prompts="car", sam_model="vit_b")["sam_model"], "invalid", False)
