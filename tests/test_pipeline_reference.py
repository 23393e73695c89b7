"""The reference-mask pipelines (samtext.pipelines.reference) against doubles with known answers
(tests/doubles.py), plus one smoke run of each method with the tiny random SAM and CLIP."""

import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doubles import (  # noqa: E402
    BACKGROUND,
    BLUE,
    GREEN,
    ORANGE,
    RED,
    SCORE_FOUND,
    SCORE_REFINED,
    LOOKALIKE_COSINE,
    LOOKALIKE_FEATURES,
    FakeClip,
    FakeSegmenter,
    ScriptedSegmenter,
    canvas,
    colour_ids,
    COLOUR_INDEX,
    disc,
    rect,
)
from samtext.pipelines.geometry import components, iou, mask_to_box  # noqa: E402
from samtext.pipelines.reference import (  # noqa: E402
    METHODS,
    ClipCheck,
    PriorMatcher,
    Reference,
    StitchMatcher,
    clip_window_scores,
)
from samtext.pipelines.result import Instance, MaskResult  # noqa: E402


# ------------------------------------------------------------------------------------------- scenes


def red_reference(h=64, w=80):
    """A red rectangle (not aligned to the 8-px feature grid) on the background."""
    img = canvas(h, w)
    mask = rect(img, 13, 19, 45, 61, RED)
    return Reference(img, mask, "red")


def blue_reference():
    img = canvas(72, 72)
    mask = disc(img, 36, 36, 20, BLUE)
    return Reference(img, mask, "blue")


def target_with_red(h=93, w=121):
    """Odd-sized target: a red rectangle (the object) and a blue disc (a distractor)."""
    img = canvas(h, w)
    obj = rect(img, 40, 50, 81, 101, RED)
    disc(img, 20, 25, 12, BLUE)
    return img, obj


def target_without_red(h=93, w=121):
    img = canvas(h, w)
    disc(img, 50, 50, 20, BLUE)
    rect(img, 10, 80, 30, 115, GREEN)
    return img


def inside(mask, point):
    x, y = point
    return bool(mask[int(y), int(x)])


# ------------------------------------------------------------------------------------ the doubles


def test_doubles_know_their_answers():
    """The doubles themselves: features, decoder and CLIP give the intended known answers."""
    seg = FakeSegmenter()
    img, obj = target_with_red()
    emb = seg.embed(img)
    assert emb.features.shape == (1, 8, 16, 16)  # 93x121 -> 12x16 cells, padded to a square; 8 colours
    assert seg.valid_grid(emb) == (12, 16)
    # the decoder returns the connected region under the positive point
    pred = seg.predict(emb, np.array([[[60.5, 50.5]]]), np.array([[1]]))
    assert pred.masks.shape == (1, 1, 93, 121) and np.array_equal(pred.masks[0, 0], obj)
    assert pred.logits.shape == (1, 1, 93, 121) and pred.low_res_logits.shape == (1, 1, 93, 121)
    # low-res decoding: no full-size masks, and upscale() gives them back exactly
    low = seg.predict(emb, np.array([[[60.5, 50.5]]]), np.array([[1]]), full_size=False)
    assert low.masks is None and low.logits is None
    assert np.array_equal(seg.upscale(emb, low.low_res_logits[:, 0])[0], obj)
    # a negative point on the same region removes it
    pred = seg.predict(emb, np.array([[[60.5, 50.5], [90.5, 70.5]]]), np.array([[1, 0]]))
    assert not pred.masks.any() and pred.scores[0, 0] == 0.0
    clip = FakeClip()
    p = clip.class_probability(clip.encode_images([img[40:81, 50:101], img[:30, :40]]), "cat")
    assert p[0] == pytest.approx(1.0) and p[1] == pytest.approx(0.0)
    # look-alikes: orange is half red to the segmenter's features and 0.4 red to CLIP
    lookalike = canvas(16, 32)
    rect(lookalike, 0, 0, 16, 16, RED)
    rect(lookalike, 0, 16, 16, 32, ORANGE)
    f = FakeSegmenter(features=LOOKALIKE_FEATURES).embed(lookalike).features[0, :, 0]
    assert float(F.cosine_similarity(f[:, 0], f[:, 2], dim=0)) == pytest.approx(LOOKALIKE_COSINE, abs=1e-5)
    p = clip.class_probability(clip.encode_images([lookalike[:, 16:]]), "cat")
    assert p[0] == pytest.approx(0.4)


# ------------------------------------------------------------------------------------- prior method


def test_prior_points_land_on_and_off_the_object():
    seg = FakeSegmenter()
    img, obj = target_with_red()
    result = PriorMatcher(seg, [red_reference()])(img)
    assert isinstance(result, MaskResult)
    assert result.points.shape == (2, 2) and result.point_labels.tolist() == [1, 0]
    pos, neg = result.points
    assert inside(obj, pos), "the positive point must be on the object: %s" % (pos,)
    h, w = obj.shape
    assert 0 <= neg[0] < w and 0 <= neg[1] < h, "the negative point must lie in the image (valid grid): %s" % (neg,)
    assert not inside(obj, neg), "the negative point must be off the object: %s" % (neg,)
    # the peaks are decoded in a batch at low resolution, a positive point (the peak cell's centre) and the
    # negative one each
    first = seg.predict_calls[0]
    assert first["multimask"] is True and first["full_size"] is False
    assert first["point_coords"].shape[1:] == (2, 2)
    assert (first["point_labels"] == [1, 0]).all()
    assert any(np.allclose(c[0], pos) for c in first["point_coords"])


def test_prior_retries_a_peak_with_the_finer_point_when_the_cell_centre_misses():
    """A bar thinner than a feature cell, off the cell centres: the centre's point lands on the background
    (dropped: its features are not the reference's), the retry at the upsampled peak lands on the bar."""
    seg = FakeSegmenter()
    img = canvas(64, 96)
    bar = rect(img, 13, 10, 20, 90, RED)  # rows 13-19: the cell centres (rows 12 and 20) miss it
    result = PriorMatcher(seg, [red_reference()])(img)
    assert len(result.instances) == 1 and iou(result.mask, bar) > 0.95
    first, second = seg.predict_calls[0], seg.predict_calls[1]
    assert not inside(bar, first["point_coords"][0][0]) and inside(bar, second["point_coords"][0][0])


def test_prior_mask_is_the_object():
    seg = FakeSegmenter()
    img, obj = target_with_red()
    result = PriorMatcher(seg, [red_reference()])(img)
    assert result.mask.shape == obj.shape and result.mask.dtype == bool
    assert iou(result.mask, obj) > 0.95
    assert not result.is_empty and result.empty_reason is None
    assert 0.0 <= result.confidence <= 1.0
    assert result.scores["similarity"] > 0.9
    assert seg.embed_calls == 2  # the reference once, the target once


def test_prior_picks_the_best_scored_multimask_candidate():
    """The double puts the right mask at index 1 on the first call (index 0 is half of the object):
    the matcher must go by the scores, not by the index."""
    seg = FakeSegmenter()
    img, obj = target_with_red()
    result = PriorMatcher(seg, [red_reference()], refine=False)(img)
    assert len(seg.predict_calls) == 1
    assert np.array_equal(result.mask, obj)
    assert result.confidence == pytest.approx(SCORE_FOUND)
    assert result.instances[0].scores["sam_score"] == pytest.approx(SCORE_FOUND)


def test_prior_refinement_keeps_the_right_mask():
    seg = FakeSegmenter()
    img, obj = target_with_red()
    result = PriorMatcher(seg, [red_reference()], refine=True)(img)
    assert len(seg.predict_calls) == 2
    refine = seg.predict_calls[1]
    assert refine["multimask"] is False
    # prompted with the chosen mask's box and its own low-res logits (not candidate 0's)
    np.testing.assert_array_equal(refine["boxes"][0], mask_to_box(obj))
    lowres_obj = seg._low_res(obj)
    np.testing.assert_allclose(refine["mask_logits"][0, 0].numpy(), lowres_obj)
    assert iou(result.mask, obj) > 0.95
    assert result.confidence == pytest.approx(SCORE_REFINED)


def test_prior_refinement_that_comes_back_empty_keeps_the_first_mask():
    seg = FakeSegmenter(refine_empty=True)
    img, obj = target_with_red()
    result = PriorMatcher(seg, [red_reference()], refine=True)(img)
    assert np.array_equal(result.mask, obj)
    assert result.instances[0].scores["sam_score"] == pytest.approx(SCORE_FOUND)


def test_prior_target_without_the_object_is_empty_by_default():
    """The default gate is calibrated on the reference: no parameter is needed for an absent object."""
    seg = FakeSegmenter()
    matcher = PriorMatcher(seg, [red_reference()])
    cal = matcher.calibration
    assert cal["outside"] < matcher.gate < cal["inside"] and matcher.info()["gate_in_use"] == matcher.gate
    result = matcher(target_without_red())
    assert result.is_empty and result.instances == [] and "gate" in result.empty_reason
    assert result.scores["similarity"] < matcher.gate and 0.0 < result.confidence <= 1.0
    assert seg.predict_calls == []
    img, obj = target_with_red()
    assert iou(matcher(img).mask, obj) > 0.95
    # with the gate off, the old behaviour: the most similar thing is labelled, whatever it is
    ungated = PriorMatcher(FakeSegmenter(), [red_reference()], min_similarity=None)
    assert not ungated(target_without_red()).is_empty


def test_prior_target_without_the_object_is_empty_with_min_similarity():
    seg = FakeSegmenter()
    matcher = PriorMatcher(seg, [red_reference()], min_similarity=0.5)
    result = matcher(target_without_red())
    assert result.is_empty and result.mask.shape == (93, 121) and result.mask.dtype == bool
    assert "similarity" in result.empty_reason
    assert result.scores["similarity"] < 0.5
    assert seg.predict_calls == []  # no decoding for a target that resembles nothing
    # the same matcher still finds the object where there is one
    img, obj = target_with_red()
    assert iou(matcher(img).mask, obj) > 0.95


def test_prior_target_without_the_object_is_empty_with_clip_check():
    seg, clip = FakeSegmenter(), FakeClip()
    ref = red_reference()
    check = ClipCheck(clip, "cat", threshold=0.5, references=[ref])
    assert check.reference_score == pytest.approx(1.0) and check.min_probability == pytest.approx(0.5)
    matcher = PriorMatcher(seg, [ref], min_similarity=None, clip_check=check)
    result = matcher(target_without_red())
    assert result.is_empty and "CLIP" in result.empty_reason
    assert result.scores["clip_score"] == pytest.approx(0.0)
    assert result.confidence == pytest.approx(1.0)  # sure the object is absent
    assert set(clip.class_names) == {"cat"}
    img, obj = target_with_red()
    result = matcher(img)
    assert iou(result.mask, obj) > 0.95
    assert result.instances[0].scores["clip_score"] > 0.5
    # one CLIP batch for the reference at the start, then one per target with a crop per instance
    assert clip.encode_calls == [1, 1, 1]


def test_clip_check_scores_each_instance_on_its_own_masked_crop():
    """A thin diagonal bar and a ring fill little of their boxes; a crop of the box is mostly background,
    the masked crop (the rest filled with the neutral colour) is all object. Two objects far apart are
    checked one by one, not as one box."""
    clip = FakeClip()
    img = canvas(120, 160)
    yy, xx = np.mgrid[:120, :160]
    bar = (np.abs((yy - 10) - 0.8 * (xx - 10)) < 2.5) & (xx < 110)
    img[bar] = RED
    ring = disc(img.copy(), 80, 130, 25, RED) & ~disc(img.copy(), 80, 130, 19, RED)
    img[ring] = RED
    check = ClipCheck(clip, "cat", threshold=0.5, references=[red_reference()])
    from samtext.pipelines.geometry import crop_with_context

    assert clip.class_probability(clip.encode_images([crop_with_context(img, mask_to_box(bar))]), "cat")[0] < 0.5
    probs = check.probabilities([img, img], [bar, ring])
    assert (probs > 0.9).all()
    result = MaskResult(img.shape[:2], [Instance(bar, 0.9), Instance(ring, 0.9)], np.zeros((0, 2)), np.zeros(0))
    assert len(check.apply(img, result).instances) == 2


def test_clip_check_drops_only_the_instances_that_are_not_the_class():
    clip = FakeClip({"cat": RED})
    img = canvas(80, 160)
    red = rect(img, 10, 10, 60, 60, RED)
    orange = rect(img, 10, 90, 60, 140, ORANGE)  # a look-alike: FakeClip gives it 0.4 of red's score
    check = ClipCheck(clip, "cat", 0.5, [red_reference()])
    result = MaskResult(img.shape[:2], [Instance(red, 0.9), Instance(orange, 0.8)], np.zeros((0, 2)), np.zeros(0))
    out = check.apply(img, result)
    assert len(out.instances) == 1 and np.array_equal(out.instances[0].mask, red)
    assert out.instances[0].scores["clip_score"] == pytest.approx(1.0)


def test_clip_check_uses_its_class_name():
    clip = FakeClip({"cat": RED, "dog": BLUE})
    img, obj = target_with_red()
    res = MaskResult(obj.shape, [Instance(obj, 0.9)], np.zeros((2, 2), np.float32), np.array([1, 0]))
    assert ClipCheck(clip, "cat", 0.3).probabilities([img], [obj])[0] > 0.5
    assert ClipCheck(clip, "dog", 0.3).probabilities([img], [obj])[0] < 0.1
    out = ClipCheck(clip, "dog", 0.3).apply(img, res)
    assert out.is_empty and "dog" in out.empty_reason
    assert clip.class_names[-1] == "dog"


def test_prior_several_references_average():
    seg = FakeSegmenter()
    red, blue = red_reference(), blue_reference()
    p_red = PriorMatcher(seg, [red]).prototype
    p_blue = PriorMatcher(seg, [blue]).prototype
    both = PriorMatcher(seg, [red, blue], min_similarity=0.5)
    expected = F.normalize((p_red + p_blue) / 2, dim=0)
    torch.testing.assert_close(both.prototype, expected)
    assert both.prototype.norm() == pytest.approx(1.0)
    # a blue object is found through the second reference...
    img = canvas(80, 96)
    obj = disc(img, 40, 60, 18, BLUE)
    assert iou(both(img).mask, obj) > 0.95
    # ...which the first reference alone would not find
    assert PriorMatcher(seg, [red], min_similarity=0.5)(img).is_empty
    # and a red object through the first
    img, obj = target_with_red()
    img[:] = BACKGROUND
    obj = rect(img, 40, 50, 81, 101, RED)
    assert iou(both(img).mask, obj) > 0.95


def test_prior_needs_a_reference_and_a_valid_one():
    with pytest.raises(ValueError):
        PriorMatcher(FakeSegmenter(), [])
    img = canvas(20, 20)
    with pytest.raises(ValueError, match="empty"):
        Reference(img, np.zeros((20, 20), bool))
    with pytest.raises(ValueError, match="differ"):
        Reference(img, np.ones((20, 21), bool))
    with pytest.raises(ValueError, match="covers all of the image"):
        Reference(img, np.ones((20, 20), bool))
    almost = np.ones((20, 20), bool)
    almost[0, :3] = False  # 3 background pixels of 400
    with pytest.raises(ValueError, match="covers 99.2% of the image"):
        Reference(img, almost)
    with pytest.raises(ValueError, match="min_similarity"):
        PriorMatcher(FakeSegmenter(), [red_reference()], min_similarity="high")
    with pytest.raises(ValueError, match="max_instances"):
        PriorMatcher(FakeSegmenter(), [red_reference()], max_instances=0)
    assert METHODS == {"prior": PriorMatcher, "stitch": StitchMatcher}


# ------------------------------------------------------------------------------------ stitch method


def test_stitch_canvas_geometry():
    ref = red_reference(64, 80)
    img, _ = target_with_red(93, 121)
    matcher = StitchMatcher(FakeSegmenter(), FakeClip(), [ref], "cat")
    canvas_, ref_mask, offset = matcher.stitch(img)
    assert offset == round(80 * 93 / 64)
    assert canvas_.shape == (93, offset + 121, 3) and canvas_.dtype == np.uint8
    assert np.array_equal(canvas_[:, offset:], img)  # the target, unchanged
    assert ref_mask.shape == (93, offset) and ref_mask.dtype == bool
    # the reference mask scaled like the reference image: it still covers the red rectangle
    expected = np.zeros((93, offset), bool)
    s = 93 / 64
    expected[round(13 * s) : round(45 * s), round(19 * s) : round(61 * s)] = True
    assert iou(ref_mask, expected) > 0.9
    left = colour_ids(canvas_[:, :offset])
    assert (left[ref_mask] == COLOUR_INDEX[RED]).mean() > 0.95
    assert (left[~ref_mask] == COLOUR_INDEX[BACKGROUND]).mean() > 0.95


def test_stitch_canvas_geometry_for_a_shorter_target():
    ref = red_reference(64, 80)
    img = canvas(41, 300)
    canvas_, ref_mask, offset = StitchMatcher(FakeSegmenter(), FakeClip(), [ref], "cat").stitch(img)
    assert offset == round(80 * 41 / 64)
    assert canvas_.shape == (41, offset + 300, 3) and ref_mask.shape == (41, offset)
    assert np.array_equal(canvas_[:, offset:], img)


def test_stitch_finds_the_object_at_the_same_pixels():
    seg, clip = FakeSegmenter(), FakeClip()
    img, obj = target_with_red()
    matcher = StitchMatcher(seg, clip, [red_reference()], "cat")
    result = matcher(img)
    assert result.mask.shape == obj.shape and result.mask.dtype == bool
    assert np.array_equal(result.mask, obj)  # no resizing: the exact pixels
    assert 0.0 < result.confidence <= 1.0
    # MaskResult points are target pixels; SAM got them shifted by the reference's width
    _, _, offset = matcher.stitch(img)
    pos = result.points[result.point_labels == 1]
    neg = result.points[result.point_labels == 0]
    # one decode per target positive, num_prompt_sets prompts each: reference points, then that positive and every
    # target negative, shifted by the offset
    assert len(seg.predict_calls) == len(pos)
    for point, call in zip(pos, seg.predict_calls):
        assert len(call["point_coords"]) == matcher.num_prompt_sets
        for coords in call["point_coords"]:
            np.testing.assert_allclose(coords[-len(neg) - 1:], np.concatenate([point[None], neg]) + [offset, 0])
    assert len(pos) and all(inside(obj, p) for p in pos), "positive CLIP points must be on the red object"
    assert len(neg) and not any(inside(obj, p) for p in neg)


def test_stitch_mask_on_the_target_half_maps_back_exactly():
    """A mask the segmenter returns on the canvas's target half comes back at the same target pixels, split
    into its connected parts (specks below the minimum area dropped)."""
    img, _ = target_with_red()
    ref = red_reference()
    probe = np.zeros(img.shape[:2], bool)
    rng = np.random.default_rng(3)
    for y, x in zip(rng.integers(0, 85, 9), rng.integers(0, 115, 9)):
        probe[y : y + 5 + y % 3, x : x + 4 + x % 4] = True  # irregular blobs: any shift or resize breaks equality
    probe[17:23, 111:121] = True  # touches the right edge
    speck = np.zeros_like(probe)
    speck[90, 2] = True  # one pixel, away from the blobs

    def script(emb, n):
        H, W = emb.original_size
        offset = W - img.shape[1]
        m = np.zeros((n, H, W), bool)
        m[:, :, offset:] = probe | speck
        return m, np.full(n, 0.8)

    result = StitchMatcher(ScriptedSegmenter(script), FakeClip(), [ref], "cat", min_similarity=None)(img)
    assert np.array_equal(result.mask, probe)
    assert len(result.instances) == len(components(probe))


def test_stitch_prefers_the_target_half_over_a_higher_sam_score_on_the_reference():
    """The seed's bug: it took the mask with the best SAM score, even one covering only the reference."""
    img, obj = target_with_red()
    ref = red_reference()
    matcher = StitchMatcher(None, FakeClip(), [ref], "cat", num_prompt_sets=4)
    _, ref_mask, offset = matcher.stitch(img)

    def script(emb, n):
        assert n == 4  # 4 draws of reference points for each target positive
        H, W = emb.original_size
        m = np.zeros((n, H, W), bool)
        m[0::4, :, :offset] = ref_mask  # the reference only, best SAM score
        m[1::4, :, offset:] = obj  # the object on the target
        m[2::4, :, offset:] = obj
        m[2::4, :, :offset] = ref_mask  # both, lower score
        # m[3::4] is empty, high score
        return m, np.array([0.99, 0.8, 0.5, 0.97])

    matcher.segmenter = ScriptedSegmenter(script)
    result = matcher(img)
    assert np.array_equal(result.mask, obj)
    assert result.instances[0].scores["sam_score"] == pytest.approx(0.8)
    assert result.confidence == pytest.approx(0.8, abs=1e-3)


def test_stitch_all_candidates_off_the_target_is_empty():
    img, _ = target_with_red()
    ref = red_reference()
    matcher = StitchMatcher(None, FakeClip(), [ref], "cat")
    _, ref_mask, offset = matcher.stitch(img)

    def script(emb, n):
        H, W = emb.original_size
        m = np.zeros((n, H, W), bool)
        m[:, :, :offset] = ref_mask
        return m, np.full(n, 0.99)

    matcher.segmenter = ScriptedSegmenter(script)
    result = matcher(img)
    assert result.is_empty and result.mask.shape == img.shape[:2]
    assert result.empty_reason


def test_stitch_class_text_reaches_clip():
    seg = FakeSegmenter()
    clip = FakeClip({"cat": RED, "dog": BLUE})
    img = canvas(96, 128)
    red = rect(img, 50, 10, 90, 60, RED)
    blue = rect(img, 8, 70, 56, 122, BLUE)
    ref = red_reference()
    result = StitchMatcher(seg, clip, [ref], "dog")(img)
    assert "dog" in clip.class_names and set(clip.class_names) == {"dog"}
    assert np.array_equal(result.mask, blue)
    result = StitchMatcher(seg, clip, [ref], "cat")(img)
    assert np.array_equal(result.mask, red)


def test_stitch_batches_clip_and_embeds_once_per_target():
    seg, clip = FakeSegmenter(), FakeClip()
    matcher = StitchMatcher(seg, clip, [red_reference()], "cat")
    assert len(clip.encode_calls) == 1  # the reference's windows calibrate the gate, once
    img, _ = target_with_red()
    result = matcher(img)
    positives = int((result.point_labels == 1).sum())
    assert seg.embed_calls == 1 and len(seg.predict_calls) == positives >= 1  # one decode per positive
    # one CLIP batch for all the windows, then one per narrowing level for all the kept windows
    assert len(clip.encode_calls) == 2 + matcher.refine_levels and clip.encode_calls[1] > 1
    other = canvas(70, 150)
    rect(other, 10, 10, 50, 60, RED)
    second = matcher(other)
    assert seg.embed_calls == 2 and len(seg.predict_calls) == positives + int((second.point_labels == 1).sum())
    assert len(clip.encode_calls) == 1 + 2 * (1 + matcher.refine_levels)
    # a positive's prompt sets go to SAM in one batch, single-mask
    call = seg.predict_calls[-1]
    assert call["multimask"] is False and call["point_coords"].shape[0] == matcher.num_prompt_sets


def test_stitch_target_without_the_object_is_empty_by_default():
    seg, clip = FakeSegmenter(), FakeClip()
    matcher = StitchMatcher(seg, clip, [red_reference()], "cat")
    assert 0 < matcher.gate < matcher.calibration["inside"]
    result = matcher(target_without_red())
    assert result.is_empty and "window" in result.empty_reason and seg.embed_calls == 0
    assert (result.point_labels == 0).all()


def test_stitch_positive_points_only_from_windows_close_to_the_best():
    """A big red object and a small red speck elsewhere: only windows near the best score give positive
    points, each narrowed onto the object."""
    seg, clip = FakeSegmenter(), FakeClip()
    img = canvas(120, 180)
    obj = rect(img, 20, 20, 90, 90, RED)
    rect(img, 100, 150, 103, 153, RED)
    matcher = StitchMatcher(seg, clip, [red_reference()], "cat")
    points, labels, best = matcher.target_points(img)
    pos = points[labels == 1]
    assert len(pos) >= 1 and all(inside(obj, p) for p in pos)
    assert not any(inside(obj, p) for p in points[labels == 0])


def test_clip_window_scores_covers_the_image():
    clip = FakeClip()
    img = canvas(50, 70)
    rect(img, 30, 50, 50, 70, RED)  # bottom-right corner
    centres, probs = clip_window_scores(clip, img, "cat", window=20, stride=10)
    assert clip.encode_calls == [len(centres)]
    assert centres.shape == (len(probs), 2) and probs.shape == (len(centres),)
    # the last windows reach the edges
    assert centres[:, 0].max() == 60 and centres[:, 1].max() == 40
    assert centres[:, 0].min() == 10 and centres[:, 1].min() == 10
    best = centres[np.argmax(probs)]
    assert best.tolist() == [60, 40] and probs.max() == pytest.approx(1.0)
    # a window larger than the image is clipped to it
    centres, probs = clip_window_scores(clip, img, "cat", window=200, stride=100)
    assert centres.tolist() == [[35, 25]]


# ------------------------------------------------------------------------- tiny real models (smoke)


def _tiny_reference():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 72, 3), dtype=np.uint8)
    mask = np.zeros((64, 72), bool)
    mask[10:40, 20:60] = True
    img[mask] = (200, 40, 40)
    return Reference(img, mask)


def _check_result(result, shape):
    assert isinstance(result, MaskResult)
    assert result.mask.shape == shape and result.mask.dtype == bool
    assert isinstance(result.confidence, float) and 0.0 <= result.confidence <= 1.0
    assert result.points.ndim == 2 and result.points.shape[1] == 2
    assert result.point_labels.shape == (len(result.points),)
    h, w = shape
    assert (result.points[:, 0] >= 0).all() and (result.points[:, 0] <= w).all()
    assert (result.points[:, 1] >= 0).all() and (result.points[:, 1] <= h).all()
    assert all(isinstance(v, float) for v in result.scores.values())


@pytest.mark.parametrize("shape", [(37, 250), (600, 41)])
def test_prior_with_tiny_sam(tiny_sam, tiny_clip, shape):
    img = np.random.default_rng(1).integers(0, 255, shape + (3,), dtype=np.uint8)
    matcher = PriorMatcher(tiny_sam, [_tiny_reference()], clip_check=ClipCheck(tiny_clip, "cat", 0.0))
    result = matcher(img)
    _check_result(result, shape)
    assert result.points.dtype == np.float32 and result.points.shape == (2, 2)


@pytest.mark.parametrize("shape", [(37, 250), (600, 41)])
def test_stitch_with_tiny_models(tiny_sam, tiny_clip, shape):
    img = np.random.default_rng(2).integers(0, 255, shape + (3,), dtype=np.uint8)
    matcher = StitchMatcher(tiny_sam, tiny_clip, [_tiny_reference()], "cat", num_prompt_sets=2)
    result = matcher(img)
    _check_result(result, shape)
    assert result.point_labels.sum() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stitch_on_cuda():
    from samtext.models import load_clip, load_sam

    sam = load_sam("tiny", device="cuda", precision="fp32")
    clip = load_clip("tiny", device="cuda", precision="fp32")
    img = np.random.default_rng(2).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    result = StitchMatcher(sam, clip, [_tiny_reference()], "cat", num_prompt_sets=2)(img)
    _check_result(result, (90, 130))
