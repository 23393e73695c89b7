"""Labelling from exemplars (the matching step of "few-shot examples") with test doubles whose answers are known:
proposals from the region segmenter, embeddings of SAM's features under each mask (a colour histogram per cell,
with look-alike colours half-way to their originals, plus noise)."""

import numpy as np
import pytest

from doubles import BLUE, GREEN, LOOKALIKE_FEATURES, ORANGE, RED, FakeSegmenter, draw_objects
from samtext.pipelines.geometry import iou
from samtext.pipelines.embeddings import EmbeddedProposals
from samtext.pipelines.examples import ExampleClass, ExampleMatcher, ImageProposals
from samtext.pipelines.proposals import ProposalGenerator, ProposalSettings
from samtext.pipelines.result import semantic_mask


def _embedder(parts=False):
    """Proposals with SAM-pooled embeddings; with ``parts``, SAM's part masks (left halves) are proposed too."""
    settings = ProposalSettings(points_per_side=16, pred_iou_thresh=0.5 if parts else 0.88)
    return EmbeddedProposals(ProposalGenerator(FakeSegmenter(features=LOOKALIKE_FEATURES, noise=0.1), settings),
                             "sam")


def _props(img, parts=False):
    return ImageProposals.from_result(_embedder(parts)(img))


def _vector_of(props, mask):
    (i,) = [k for k, m in enumerate(props.masks) if iou(m, mask) > 0.95]
    return props.vectors[i]


def _found(result, masks, label=None):
    """How many of ``masks`` a kept instance (of ``label``) matches at IoU > 0.95, and how many instances
    match none of them."""
    insts = [i for i in result.instances if label is None or i.label == label]
    hit = sum(any(iou(i.mask, m) > 0.95 for i in insts) for m in masks)
    stray = sum(not any(iou(i.mask, m) > 0.95 for m in masks) for i in insts)
    return hit, stray


@pytest.fixture(scope="module")
def red_exemplar():
    img, (red, _) = draw_objects([("disc", RED, 50, 50), ("rect", BLUE, 110, 130)])
    return _vector_of(_props(img), red)


def test_exemplar_selects_exactly_its_kind_in_unseen_images(red_exemplar):
    matcher = ExampleMatcher([ExampleClass("red thing", red_exemplar[None])], threshold=0.85)
    img, masks = draw_objects([("disc", RED, 40, 40), ("rect", RED, 40, 140), ("disc", RED, 120, 100),
                         ("rect", BLUE, 120, 30), ("disc", GREEN, 110, 160)])
    result = matcher(_props(img))
    assert _found(result, masks[:3]) == (3, 0)
    assert all(i.label == "red thing" and 0.85 <= i.confidence <= 1 for i in result.instances)
    assert all("predicted_iou" in i.scores and "similarity" in i.scores for i in result.instances)


def test_absent_kind_gives_an_empty_result_that_says_why(red_exemplar):
    matcher = ExampleMatcher([ExampleClass("red thing", red_exemplar[None])], threshold=0.85)
    img, _ = draw_objects([("rect", BLUE, 60, 60), ("disc", GREEN, 100, 140)])
    result = matcher(_props(img))
    assert result.is_empty and "similar enough" in result.empty_reason


def test_negative_exemplar_removes_its_lookalikes(red_exemplar):
    img, masks = draw_objects([("disc", RED, 40, 40), ("disc", ORANGE, 40, 140), ("rect", ORANGE, 120, 60),
                         ("rect", RED, 120, 150)])
    props = _props(img)
    loose = ExampleMatcher([ExampleClass("red", red_exemplar[None])], threshold=0.4)(props)
    assert _found(loose, [masks[1], masks[2]])[0] == 2, "without a negative, the look-alikes pass a low threshold"
    ref_img, (orange,) = draw_objects([("rect", ORANGE, 80, 90)])
    negative = _vector_of(_props(ref_img), orange)
    strict = ExampleMatcher([ExampleClass("red", red_exemplar[None], negative[None])], threshold=0.4)(props)
    assert _found(strict, [masks[0], masks[3]]) == (2, 0)


def test_two_classes_do_not_steal_each_others_pixels(red_exemplar):
    blue_img, (blue,) = draw_objects([("rect", BLUE, 80, 90)])
    classes = [ExampleClass("red", red_exemplar[None]), ExampleClass("blue", _vector_of(_props(blue_img), blue)[None])]
    img, masks = draw_objects([("disc", RED, 40, 40), ("rect", BLUE, 40, 130), ("disc", BLUE, 120, 60),
                         ("rect", RED, 120, 150), ("disc", GREEN, 80, 100)])
    result = ExampleMatcher(classes, threshold=0.85)(_props(img))
    assert _found(result, [masks[0], masks[3]], "red") == (2, 0)
    assert _found(result, [masks[1], masks[2]], "blue") == (2, 0)
    sem = semantic_mask(result, {"red": 1, "blue": 2}, "red")
    for m, value in zip(masks, [1, 2, 2, 1, 0]):
        assert (sem[m] == value).mean() > 0.97


def test_whole_wins_over_its_part_and_top_k(red_exemplar):
    img, masks = draw_objects([("disc", RED, 40, 40), ("rect", RED, 110, 130), ("disc", RED, 120, 40)])
    props = _props(img, parts=True)
    assert len(props.masks) > 6  # parts are proposed too
    result = ExampleMatcher([ExampleClass("red", red_exemplar[None])], threshold=0.85)(props)
    assert _found(result, masks) == (3, 0), "each object once, as a whole"
    top = ExampleMatcher([ExampleClass("red", red_exemplar[None])], threshold=0.85, top_k=1)(props)
    assert len(top.instances) == 1


def test_prototype_scoring_and_several_positives(red_exemplar):
    img, masks = draw_objects([("disc", RED, 40, 40), ("rect", BLUE, 110, 130)])
    props = _props(img)
    blue = _vector_of(props, masks[1])
    # a prototype of red and blue sits between them: neither reaches a high threshold; "max" finds both
    assert ExampleMatcher([ExampleClass("x", np.stack([red_exemplar, blue]))], 0.85, "prototype")(props).is_empty
    assert _found(ExampleMatcher([ExampleClass("x", np.stack([red_exemplar, blue]))], 0.85)(props), masks) == (2, 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(classes=[]), "no class"),
    (dict(scoring="mean"), "scoring"),
    (dict(threshold=2.0), "threshold"),
    (dict(top_k=0), "top_k"),
])
def test_bad_settings_are_refused(red_exemplar, kwargs, match):
    args = {"classes": [ExampleClass("red", red_exemplar[None])], **kwargs}
    with pytest.raises(ValueError, match=match):
        ExampleMatcher(**args)


def test_embeddings_of_another_size_are_refused(red_exemplar):
    matcher = ExampleMatcher([ExampleClass("red", red_exemplar[None])])
    with pytest.raises(ValueError, match="same embedder"):
        matcher.scores(np.ones((2, 5)))
    with pytest.raises(ValueError, match="different sizes"):
        ExampleMatcher([ExampleClass("a", np.ones((1, 3))), ExampleClass("b", np.ones((1, 4)))])


def test_nested_proposals_keep_the_part_the_exemplars_match_at_size():
    """Issue 20, cause 6: SAM proposes each object, a half of it, and a larger region that holds it (the object and
    what surrounds it). The exemplars match the object clearly better than its container: the object is kept,
    once, and neither the container nor the half. 300 images, 0-3 objects each, with distractor proposals."""
    rng = np.random.default_rng(20)
    dim = 16
    exemplar = np.eye(dim, dtype=np.float32)[0]

    def vector(similarity):
        other = rng.normal(size=dim).astype(np.float32)
        other[0] = 0
        other /= np.linalg.norm(other)
        return similarity * exemplar + np.sqrt(1 - similarity ** 2) * other

    matcher = ExampleMatcher([ExampleClass("thing", exemplar[None])], threshold=0.85)
    found = truth = kept = right = 0
    for _ in range(300):
        h, w = 120, 160
        objects, masks, vectors = [], [], []
        for k in range(int(rng.integers(0, 4))):
            mask = np.zeros((h, w), bool)
            y, x = 20 + 30 * k, int(rng.integers(20, 120))
            mask[y:y + 18, x:x + 18] = True
            objects.append(mask)
            container = np.zeros((h, w), bool)
            container[max(0, y - 8):y + 26, max(0, x - 10):x + 30] = True
            half = mask.copy()
            half[:, x + 9:] = False
            masks += [container, mask, half]
            vectors += [vector(float(rng.uniform(0.86, 0.93))), vector(float(rng.uniform(0.96, 0.99))),
                        vector(float(rng.uniform(0.86, 0.95)))]
        for _ in range(int(rng.integers(2, 6))):  # distractors
            mask = np.zeros((h, w), bool)
            y, x = int(rng.integers(0, h - 10)), int(rng.integers(0, w - 10))
            mask[y:y + 10, x:x + 10] = True
            masks.append(mask)
            vectors.append(vector(float(rng.uniform(-0.2, 0.6))))
        result = matcher(ImageProposals((h, w), masks, np.stack(vectors)))
        preds = [inst.mask for inst in result.instances]
        truth += len(objects)
        found += sum(any(iou(o, p) >= 0.5 for p in preds) for o in objects)
        kept += len(preds)
        right += sum(any(iou(o, p) >= 0.5 for o in objects) for p in preds)
    assert truth > 300
    assert found / truth >= 0.95 and right / kept >= 0.95, (found / truth, right / kept)
