"""Every action through the SDK on 200 photos, tiny models: the sizes users have, in one chain as a user runs it
(reference, text, proposals, map, few-shot, evaluate, review, rerun from approved, train, predict, export), each
checked for labelling every target exactly once and writing what it says. Marked slow (minutes)."""

import os

import pytest

from conftest import make_pets_dataset, pets_stems

pytestmark = pytest.mark.slow

N = 200
TINY = dict(sam_model="tiny", device="cpu")


@pytest.fixture
def photos(db, tmp_path):
    """200 photos: the 80 pets photos, each in several folders (``round_<k>/<name>.jpg``, links), as a dataset of
    several cameras has files of one name in different folders."""
    from conftest import PETS

    stems = pets_stems()
    ds = make_pets_dataset([stems[i % len(stems)] for i in range(N)])
    for i, sample in enumerate(ds.iter_samples(autosave=True)):
        folder = tmp_path / "photos" / ("round_%d" % (i // len(stems)))
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / os.path.basename(sample.filepath)
        os.symlink(os.path.join(PETS, "images", os.path.basename(sample.filepath)), link)
        sample.filepath = str(link)
    return ds


def test_every_action_on_two_hundred_photos(photos, tmp_path):
    import fiftyone as fo
    import samtext

    ds = photos
    ids = ds.values("id")
    reference = ids[0]

    summary = samtext.annotate_by_reference(ds, "cat", reference=reference, reference_field="ground_truth",
                                            out_field="ref", min_similarity=None, **TINY)
    assert (summary.labelled, summary.failed) == (N - 1, 0) and summary.instances > 0
    assert ds.count("ref") == N - 1 and ds[reference]["ref"] is None

    summary = samtext.annotate_by_text(ds, "cat", clip_model="tiny", out_field="text", threshold=0.0,
                                       max_proposals=8, **TINY)
    assert (summary.labelled, summary.failed) == (N, 0) and ds.count("text") == N

    summary = samtext.compute_mask_proposals(ds, out_field="props", clip_model="tiny", points_per_side=4,
                                             pred_iou_thresh=0.0, stability_score_thresh=0.0, min_area=0, **TINY)
    assert (summary.labelled, summary.failed) == (N, 0) and summary.instances >= N
    info = samtext.compute_proposal_map(ds, field="props", num_clusters=4)
    assert info.proposals == summary.instances

    picked = ds.values("props.detections.id", unwind=True)[:5]
    summary = samtext.annotate_by_examples(ds, {"cat": samtext.Exemplars(label_ids=picked)}, proposals_field="props",
                                           out_field="shots", threshold=0.5)
    assert (summary.labelled, summary.failed) == (N, 0) and summary.instances >= len(picked)

    report = samtext.evaluate(ds, "ref", "ground_truth", eval_key="ref_eval", gt_targets={255: "cat"})
    assert (report.images, report.missing_predictions) == (N, 1) and 0.0 <= report.miou <= 1.0  # the reference

    review = samtext.review(ds, "ref")
    assert review.reviewed == N - 1

    approved = ds.exists("ref").limit(3)
    for sample in approved:
        sample["ref"].tags = ["approved"]
        sample.save()
    summary = samtext.rerun_from_approved(ds, "ref", **TINY)
    assert summary.failed == 0 and summary.labelled == N - 1 - 3  # every sample but the approved and the reference

    model = str(tmp_path / "cats.pt")
    trained = samtext.train(ds, "ground_truth", model, classes=["cat"], label_targets={255: "cat"}, epochs=1,
                            image_size=64, batch_size=16, backbone_weights=None, device="cpu")
    assert trained.status == "completed" and trained.train_samples + trained.val_samples == N
    summary = samtext.predict(ds, model, out_field="predicted", device="cpu")
    assert (summary.labelled, summary.failed) == (N, 0)

    out = samtext.export_labels(ds, "ref", str(tmp_path / "export"))
    assert out["exported"] == N - 1  # one mask file each, though names repeat across folders
    assert len([f for _, _, fs in os.walk(tmp_path / "export") for f in fs if f.endswith(".png")]) == N - 1
    assert isinstance(ds, fo.Dataset)


def test_sam2_1_and_sam3_paths_on_two_hundred_photos(photos):
    """The SAM 2.1 and SAM 3 choices at the same size (tiny random configs of their architectures): proposals with
    SAM 2.1's decoder, reference with SAM 2.1, text with SAM 3's concept prompt, one-shot on SAM 3's canvas,
    few-shot with the proposals as SAM 3's cross-image exemplars; every target labelled once, nothing failed."""
    import samtext

    ds = photos
    reference = ds.first().id
    sam2 = dict(sam_model="tiny-sam2", device="cpu")
    sam3 = dict(sam_model="tiny-sam3", device="cpu")

    summary = samtext.compute_mask_proposals(ds, out_field="props2", embedder=None, points_per_side=4,
                                             pred_iou_thresh=0.0, stability_score_thresh=0.0, min_area=0, **sam2)
    assert (summary.labelled, summary.failed) == (N, 0) and summary.instances >= N
    summary = samtext.annotate_by_reference(ds, "cat", reference=reference, reference_field="ground_truth",
                                            out_field="ref2", min_similarity=None, **sam2)
    assert (summary.labelled, summary.failed) == (N - 1, 0) and ds.count("ref2") == N - 1

    summary = samtext.annotate_by_text(ds, "cat; dog", localizer="sam3", threshold=0.0, out_field="text3", **sam3)
    assert (summary.labelled, summary.failed) == (N, 0) and ds.count("text3") == N
    summary = samtext.annotate_by_reference(ds, "cat", reference=reference, reference_field="ground_truth",
                                            method="sam3", out_field="ref3", min_similarity=None, **sam3)
    assert (summary.labelled, summary.failed) == (N - 1, 0) and ds[reference]["ref3"] is None

    picked = ds.values("props2.detections.id", unwind=True)[::97][:40]  # a lasso across many images
    summary = samtext.annotate_by_examples(ds, {"cat": samtext.Exemplars(label_ids=picked)}, proposals_field="props2",
                                           method="sam3", sam3_model="tiny-sam3", sam3_threshold=0.0, device="cpu",
                                           out_field="shots3")
    assert (summary.labelled, summary.failed) == (N, 0) and ds.count("shots3") == N
