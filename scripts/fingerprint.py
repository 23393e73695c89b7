"""Fingerprints of what every action writes, through the public SDK only, with the tiny models: run it before and
after a refactor and compare the two JSON files (same inputs, same masks, same numbers).

    .venv/bin/python scripts/fingerprint.py --images DIR --out before.json
    .venv/bin/python scripts/fingerprint.py --images DIR --out after.json
    diff before.json after.json

DIR holds a few JPEG or PNG photos (the first 6 by name are used). Needs a FiftyOne database (scripts/test.sh
starts one; or FIFTYONE_DATABASE_URI).
"""

import argparse
import hashlib
import json
import os
import tempfile

import numpy as np

TINY = dict(sam_model="tiny", clip_model="tiny", device="cpu", precision="fp32")


def _digest(array) -> str:
    array = np.ascontiguousarray(np.asarray(array))
    return hashlib.sha1(array.tobytes() + str(array.shape).encode()).hexdigest()[:16]


def _segmentations(dataset, field):
    out = {}
    for path, label in zip(*dataset.values(["filepath", field])):
        if label is not None:
            mask = label.get_mask() if label.mask is None else label.mask
            out[os.path.basename(path)] = [_digest(mask), round(float(label.confidence or 0.0), 4)]
    return out


def _detections(dataset, field):
    out = {}
    for path, label in zip(*dataset.values(["filepath", field])):
        if label is not None:
            out[os.path.basename(path)] = [[d.label, [round(v, 4) for v in d.bounding_box],
                                            _digest(d.mask) if d.mask is not None else None,
                                            round(float(d.confidence or 0.0), 4)] for d in label.detections]
    return out


def _summary(summary):
    d = summary.to_dict() if hasattr(summary, "to_dict") else dict(summary)
    return {k: d.get(k) for k in ("labelled", "instances", "empty", "failed", "skipped_existing")}


def fingerprint(image_dir: str) -> dict:
    import fiftyone as fo

    import samtext

    paths = sorted(os.path.join(image_dir, f) for f in os.listdir(image_dir)
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))[:6]
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p) for p in paths])
    ref = ds.first()
    h, w = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(ref.filepath)).shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4:3 * h // 4, w // 4:3 * w // 4] = 255
    ref["reference"] = fo.Segmentation(mask=mask)
    ref.save()
    out = {}

    s = samtext.annotate_by_reference(ds, "thing", reference=ref.id, reference_field="reference", out_field="prior",
                                      min_similarity=None, save_prompts=True, **TINY)
    out["reference_prior"] = dict(summary=_summary(s), masks=_segmentations(ds, "prior"),
                                  instances=_detections(ds, "prior_instances"))
    s = samtext.annotate_by_reference(ds, "thing", reference=ref.id, reference_field="reference", out_field="stitch",
                                      method="stitch", min_similarity=None, clip_threshold=None, **TINY)
    out["reference_stitch"] = dict(summary=_summary(s), masks=_segmentations(ds, "stitch"))
    for localizer in ("boxes", "patches"):
        s = samtext.annotate_by_text(ds, "thing; other", localizer=localizer, threshold=0.0, out_field="t_" + localizer,
                                     **TINY)
        out["text_" + localizer] = dict(summary=_summary(s), masks=_segmentations(ds, "t_" + localizer),
                                        instances=_detections(ds, "t_%s_instances" % localizer))
    with tempfile.TemporaryDirectory() as emb:
        s = samtext.compute_mask_proposals(ds, out_field="props", pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                           max_proposals=2, embeddings_dir=emb, **TINY)
        out["proposals"] = dict(summary=_summary(s), proposals=_detections(ds, "props"))
        ids, vectors = samtext.proposal_embeddings(ds, "props")
        out["embeddings"] = _digest(np.asarray(vectors, np.float32).round(3))
        m = samtext.compute_proposal_map(ds, field="props", num_clusters=2)
        out["map"] = dict(clusters=sorted(ds.values("props.detections.cluster", unwind=True)), k=m.num_clusters)
        exemplars = ids[:2]
        s = samtext.annotate_by_examples(ds, {"thing": exemplars}, proposals_field="props", threshold=0.5,
                                         out_field="ex")
        out["examples"] = dict(summary=_summary(s), masks=_segmentations(ds, "ex"))
    report = samtext.evaluate(ds, "prior", "reference", gt_targets={255: "thing"}, eval_key="fp_eval")
    out["evaluate"] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in report.to_dict().items()
                       if k in ("miou", "pixel_accuracy", "samples")}
    r = samtext.review(ds, "prior", min_confidence=0.5)
    out["review"] = dict(rejected=r.rejected, flagged=r.flagged,
                         scores=[round(v or 0, 4) for v in ds.values("prior.review_score")])
    second = ds.skip(1).first()
    second["prior"].tags.append("approved")
    second.save()
    s = samtext.rerun_from_approved(ds, "prior")
    out["rerun"] = dict(summary=_summary(s), masks=_segmentations(ds, "prior"))
    with tempfile.TemporaryDirectory() as models:
        t = samtext.train(ds, "prior", model_path=os.path.join(models, "m.pt"), epochs=1, image_size=64, batch_size=2,
                          val_fraction=0.0, device="cpu", backbone_weights=None)
        out["train"] = {k: v for k, v in t.to_dict().items() if k in ("train_samples", "epochs_done", "status")}
        s = samtext.predict(ds, os.path.join(models, "m.pt"), out_field="pred", device="cpu")
        out["predict"] = dict(summary=_summary(s), masks=_segmentations(ds, "pred"))
    with tempfile.TemporaryDirectory() as export:
        e = samtext.export_labels(ds, "prior", os.path.join(export, "x"), export_media=False)
        files = sorted(os.listdir(os.path.join(export, "x", "labels")))
        out["export"] = dict(exported=e["exported"], files=len(files))
    ds.delete()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.out, "w") as f:
        json.dump(fingerprint(args.images), f, indent=1, sort_keys=True)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
