"""Property test of the public API (hypothesis): random values for every numeric, choice and tag knob of every
SDK entry point. The oracle is this file's own reading of each knob's documented range. A value outside it is
refused with a :class:`samtext.SamtextError` that names the knob, and leaves the dataset and the disk as they
were; any value, in range or not, never gives a raw Python error. The calls target an empty view, so a value
that passes its checks costs nothing to run."""

import math
import os

import pytest

from hypothesis import HealthCheck, given, settings  # a test tool: scripts/setup.sh installs it (requirements-dev.txt)
from hypothesis import strategies as st

from conftest import make_pets_dataset, pets_stems

ANY = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True),
                st.sampled_from([0, 1, 0.5, -1, 32, 1e9, "auto", "", "abc", "0.5", "3"]), st.text(max_size=6),
                st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


def real(lo=None, hi=None, none=False, low_open=False, high_open=False, whole=False, auto=False):
    """The oracle of a number knob: True (in range), False (out of range or not a number), None (a string that
    may spell a number: no claim)."""
    def valid(v):
        if v is None:
            return none
        if auto and v == "auto":
            return True
        if isinstance(v, str):
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if whole and not float(v).is_integer():
            return False
        if lo is not None and (v <= lo if low_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if high_open else v > hi))

    return valid


def choice(options, none=False):
    return lambda v: (v is None and none) or (isinstance(v, str) and v in options)


def tag(none=True):
    return lambda v: (v is None and none) or (isinstance(v, str) and bool(v.strip()))


RUN = dict(batch_size=real(1, whole=True), fail_fast=real(0, whole=True))
MODELS = dict(sam_model=lambda v: v == "tiny" or (None if isinstance(v, str) else False))
KNOBS = {
    "annotate_by_reference": dict(RUN, method=choice(("prior", "stitch")), max_instances=real(1, whole=True),
                                  num_prompt_sets=real(1, whole=True), min_similarity=real(none=True, auto=True),
                                  clip_threshold=real(0, 1, none=True, auto=True)),
    "annotate_by_text": dict(RUN, localizer=choice(("boxes", "patches")), threshold=real(0, 1),
                             region_threshold=real(0, 1, none=True), max_instances=real(1, whole=True),
                             nms_iou=real(0, 1), search_mode=choice(("fast", "quality")),
                             max_proposals=real(1, whole=True), top_k_patches=real(1, whole=True),
                             peak_threshold=real(0, 1, low_open=True)),
    "compute_mask_proposals": dict(RUN, points_per_side=real(1, 128, none=True, whole=True),
                                   pred_iou_thresh=real(0, 1), stability_score_thresh=real(0, 1),
                                   box_nms_thresh=real(0, 1), min_area=real(0, whole=True),
                                   max_proposals=real(1, none=True, whole=True),
                                   embedder=choice(("clip", "sam"), none=True), crop_context=real(0, 1)),
    "compute_proposal_map": dict(num_clusters=real(1, whole=True, auto=True), fit_cap=real(1, whole=True),
                                 seed=real(whole=True)),
    "annotate_by_examples": dict(RUN, threshold=real(-1, 1), scoring=choice(("max", "prototype")),
                                 top_k=real(1, none=True, whole=True)),
    "review": dict(min_confidence=real(0, 1, none=True), min_area=real(0, 0.95, high_open=True),
                   max_fragments=real(1, whole=True), min_fragment_pixels=real(0, whole=True),
                   min_agreement=real(0, 1), reject_tag=tag(none=False)),
    "evaluate": dict(eval_key=lambda v: v is None or (isinstance(v, str) and v.isidentifier()) or
                     (None if isinstance(v, str) else False)),
    "train": dict(image_size=real(32, whole=True), epochs=real(1, whole=True), batch_size=real(1, whole=True),
                  lr=real(0, low_open=True), val_fraction=real(0, 1, high_open=True), seed=real(whole=True),
                  skip_tag=tag()),
    "export_labels": dict(format=choice(("segmentation", "coco")), skip_tag=tag(), approved_tag=tag(none=False)),
    "rerun_from_approved": dict(max_approved=real(1, whole=True), approved_tag=tag(none=False)),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset with a reference, proposals with embeddings, a pseudo-label field with an approved label, and the
    calls of every entry point on an empty view of it."""
    from conftest import _require_db

    _require_db()
    import samtext

    ds = make_pets_dataset(pets_stems(animal="cat", n=2) + pets_stems(animal="dog", n=1))
    ds.persistent = False
    tiny = dict(sam_model="tiny", device="cpu")
    samtext.compute_mask_proposals(ds, out_field="props", embedder="clip", clip_model="tiny", clip_pretrained=None,
                                   points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_area=0,
                                   **tiny)
    samtext.annotate_by_reference(ds, "cat", reference=ds.first(), reference_field="ground_truth", out_field="cats",
                                  min_similarity=None, **tiny)
    s = ds.skip(1).first()
    s.cats.tags = ["approved"]
    s.save()
    label_id = ds.values("props.detections.id", unwind=True)[0]
    empty = ds.limit(0)
    out = tmp_path_factory.mktemp("property")
    calls = {
        "annotate_by_reference": lambda **k: samtext.annotate_by_reference(
            empty, "cat", reference=ds.first(), reference_field="ground_truth", out_field="ref_out",
            **dict(dict(min_similarity=None, **tiny), **k)),
        "annotate_by_text": lambda **k: samtext.annotate_by_text(empty, "cat", out_field="text_out", clip_model="tiny",
                                                                 clip_pretrained=None, **dict(tiny, **k)),
        "compute_mask_proposals": lambda **k: samtext.compute_mask_proposals(
            empty, out_field="props2", clip_model="tiny", clip_pretrained=None, **dict(tiny, **k)),
        "compute_proposal_map": lambda **k: samtext.compute_proposal_map(empty, "props", **k),
        "annotate_by_examples": lambda **k: samtext.annotate_by_examples(empty, {"cat": [label_id]},
                                                                         proposals_field="props", **k),
        "review": lambda **k: samtext.review(empty, "cats", view_name=None, **k),
        "evaluate": lambda **k: samtext.evaluate(empty, "cats", "ground_truth",
                                                 **dict(dict(gt_targets={255: "cat"}), **k)),
        "train": lambda **k: samtext.train(empty, "cats", model_path=str(out / "m.pt"), **k),
        "export_labels": lambda **k: samtext.export_labels(empty, "cats", str(out / "export"),
                                                           **dict(dict(overwrite=True), **k)),
        "rerun_from_approved": lambda **k: samtext.rerun_from_approved(empty, "cats", **dict(tiny, **k)),
    }
    yield ds, calls, out
    ds.delete()


def _state(ds, out):
    ds.reload()
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, names in os.walk(out) for f in names)
    return (sorted(ds.get_field_schema()), sorted(ds.list_runs()), sorted(ds.list_brain_runs()),
            sorted(ds.list_evaluations()), sorted(ds.list_saved_views()), dict(ds.mask_targets),
            ds.values("cats.id"), files)


@pytest.mark.parametrize("entry", sorted(KNOBS))
def test_bad_values_are_named_and_change_nothing(world, entry):
    import samtext

    ds, calls, out = world
    knobs = KNOBS[entry]

    @settings(max_examples=25, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(sorted(knobs)), ANY)
    def check(knob, value):
        expected = knobs[knob](value)
        before = _state(ds, out)
        try:
            calls[entry](**{knob: value})
        except samtext.SamtextError as e:
            if expected is False:
                assert knob in str(e), (knob, value, str(e))
                assert _state(ds, out) == before, (knob, value)
            return
        except Exception as e:  # a raw crash, whatever the value
            raise AssertionError("%s(%s=%r) raised %s: %s" % (entry, knob, value, type(e).__name__, e)) from e
        assert expected is not False, "%s(%s=%r) was accepted" % (entry, knob, value)

    check()
