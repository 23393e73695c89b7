"""Training on labels, then predicting: what a network trained by ``samtext.train`` reaches on the pets photos.

The training set is the pets ``unlabeled`` split (200 cats, 100 dogs); the dogs' cat mask is empty, so they are
examples of images without the class. The model predicts the 100 ``test`` cats; scores are dataset-level
(intersection and union summed over the test images, each at its own size): the cat IoU and the mIoU of
background and cat. Beside them, the trivial answer "all foreground" (cat IoU = summed cat area / summed image
area).

- Ground truth as labels: the pipeline's upper bound.
- Pseudo-labels, optional: ``--pseudo-field FIELD --dataset NAME`` (a persistent FiftyOne dataset holding the
  pets images with a samtext field, e.g. the output of "Annotate by reference mask"; its samples of the
  unlabeled split are trained on, those without a label left out) or ``--pseudo-dir DIR`` (one mask per image,
  ``<stem>.png``, nonzero = cat; a missing file leaves the image out). Their scores are also given as a fraction
  of the ground-truth run's.

Training times are this machine's (``torch`` threads as torch chose them). Without ImageNet weights in the
torch hub cache the network starts from scratch (the report says which); ``--backbone-weights imagenet``
downloads them.

    .venv/bin/python bench/bench_train.py                                   # bench/results/train.md
    .venv/bin/python bench/bench_train.py --epochs 1 --limit 20 --image-size 96 --out /tmp/train.md   # smoke test
    .venv/bin/python bench/bench_train.py --dataset pets --pseudo-field cat_pseudo
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from common import RESULTS, ROOT, command_line, loadavg, machine_lines, md_table, private_database, write_report

sys.path.insert(0, os.path.join(ROOT, "tests"))

def split_stems(limit=None):
    """``(training stems, test stems)``: the unlabeled split (cats then dogs; ``limit`` of each kind at most)
    and the test cats (``limit`` at most)."""
    from conftest import pets_stems

    cats, dogs = pets_stems("unlabeled", "cat"), pets_stems("unlabeled", "dog")
    test = pets_stems("test", "cat")
    if limit:
        cats, dogs, test = cats[:limit], dogs[:max(1, limit // 2)], test[:limit]
    return cats + dogs, test


def pets_dataset(train_stems, test_stems):
    """A non-persistent dataset of the pets images: ``ground_truth`` (0/255 animal masks), ``split``, ``stem``,
    and ``cat_gt``: the cats' masks, an empty mask for the dogs, named {255: "cat"}."""
    import fiftyone as fo

    from conftest import make_pets_dataset

    ds = make_pets_dataset(train_stems + test_stems)
    test = set(test_stems)
    values, splits = {}, {}
    for sid, stem, gt in zip(*ds.values(["id", "stem", "ground_truth"])):
        values[sid] = fo.Segmentation(mask=gt.mask if stem.startswith("cat") else np.zeros_like(gt.mask))
        splits[sid] = "test" if stem in test else "unlabeled"
    ds.set_values("cat_gt", values, key_field="id")
    ds.set_values("split", splits, key_field="id")
    ds.mask_targets = {"cat_gt": {255: "cat"}}
    ds.save()
    return ds


def add_pseudo_dir(ds, folder: str) -> int:
    """Adds ``cat_pseudo`` (nonzero = cat) from ``<folder>/<stem>.png`` to the unlabeled samples; returns how
    many had a file."""
    import fiftyone as fo
    from PIL import Image

    values = {}
    view = ds.match({"split": "unlabeled"})
    for sid, stem in zip(*view.values(["id", "stem"])):
        path = os.path.join(folder, stem + ".png")
        if os.path.isfile(path):
            values[sid] = fo.Segmentation(mask=(np.asarray(Image.open(path)) != 0).astype(np.uint8))
    ds.set_values("cat_pseudo", values, key_field="id")
    ds.mask_targets["cat_pseudo"] = {1: "cat"}
    ds.save()
    return len(values)


def score(view, pred_field: str):
    """``(cat IoU, mIoU of background and cat, all-foreground cat IoU)`` summed over the images of ``view``, by
    samtext's own evaluation (nothing stored)."""
    from samtext.actions.evaluation import evaluate

    report = evaluate(view, pred_field, "ground_truth", eval_key=None, gt_targets={255: "cat"})
    conf = report.confusion_matrix
    return float(report.class_iou["cat"]), float(report.miou), float(conf[1].sum() / conf.sum())


def run_one(name, train_view, label_field, test_view, args, models_dir, classes=None):
    """Trains on ``label_field`` of ``train_view``, predicts ``test_view``: one row of the report."""
    import samtext.actions.train as st

    t = time.time()
    last = [0.0]

    def progress(epoch, epochs, step, steps, metrics):
        if metrics.get("end_of_epoch"):
            print("  %s epoch %d/%d: loss %.3f, val mIoU %s, %.0f s" % (
                name, epoch, epochs, metrics["train_loss"], "%.3f" % metrics["val_miou"]
                if metrics["val_miou"] is not None else "-", time.time() - t), flush=True)
            last[0] = time.time()

    summary = st.train(train_view, label_field, os.path.join(models_dir, label_field + ".pt"), classes=classes,
                       arch=args.arch, epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
                       lr=args.lr, seed=args.seed, device=args.device, backbone_weights=args.backbone_weights,
                       restart=True, progress=progress)
    out_field = "pred_" + label_field
    t_pred = time.time()
    run = st.predict(test_view, summary.model_path, out_field=out_field, device=args.device, overwrite=True)
    pred_seconds = time.time() - t_pred
    cat_iou, miou, all_fg = score(test_view, out_field)
    print("%s: test cat IoU %.3f, mIoU %.3f (all foreground: %.3f); %.0f s training" % (
        name, cat_iou, miou, all_fg, summary.seconds), flush=True)
    label_iou = None
    if label_field != "cat_gt" and train_view._root_dataset.has_field("cat_gt"):
        from samtext.actions.evaluation import evaluate

        label_iou = evaluate(train_view, label_field, "cat_gt", eval_key=None).class_iou["cat"]
    return dict(name=name, summary=summary, cat_iou=cat_iou, miou=miou, all_fg=all_fg, predicted=run.labelled,
                pred_seconds=pred_seconds, label_iou=label_iou)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--arch", default="lraspp")
    p.add_argument("--backbone-weights", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, default=None, help="at most this many cats (half as many dogs) and test cats")
    p.add_argument("--dataset", help="a persistent dataset holding --pseudo-field (uses your FiftyOne database)")
    p.add_argument("--pseudo-field", help="the pseudo-label field of --dataset")
    p.add_argument("--pseudo-classes", default=None, help="the class of an unnamed pseudo field, e.g. cat")
    p.add_argument("--pseudo-dir", help="a folder of <stem>.png pseudo masks (nonzero = cat)")
    p.add_argument("--no-ground-truth", action="store_true", help="skip the ground-truth run")
    p.add_argument("--out", default=os.path.join(RESULTS, "train.md"))
    args = p.parse_args()
    if bool(args.dataset) != bool(args.pseudo_field):
        p.error("--dataset and --pseudo-field go together")

    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    mongod, db_dir = private_database() if not args.dataset else (None, None)
    import fiftyone as fo
    start, load_start = time.time(), loadavg()
    train_stems, test_stems = split_stems(args.limit)
    models_dir = tempfile.mkdtemp(prefix="samtext-bench-models-")
    results, ds = [], None
    try:
        ds = pets_dataset(train_stems, test_stems)
        test_view = ds.match({"split": "test"})
        train_view = ds.match({"split": "unlabeled"})
        if not args.no_ground_truth:
            results.append(run_one("ground truth", train_view, "cat_gt", test_view, args, models_dir))
        if args.pseudo_dir:
            found = add_pseudo_dir(ds, args.pseudo_dir)
            print("pseudo masks found for %d of %d training images" % (found, len(train_view)))
            results.append(run_one("pseudo (%s)" % args.pseudo_dir, train_view, "cat_pseudo", test_view, args,
                                   models_dir))
        if args.pseudo_field:
            theirs = fo.load_dataset(args.dataset)
            names = {os.path.basename(f) for f in train_view.values("filepath")}  # the unlabeled split's images
            pseudo_view = theirs.select(
                [sid for sid, f in zip(*theirs.values(["id", "filepath"])) if os.path.basename(f) in names])
            classes = [args.pseudo_classes] if args.pseudo_classes else None
            results.append(run_one("pseudo (%s.%s)" % (args.dataset, args.pseudo_field), pseudo_view,
                                   args.pseudo_field, test_view, args, models_dir, classes=classes))
    finally:
        if ds is not None:
            ds.delete()
        shutil.rmtree(models_dir, ignore_errors=True)
        if mongod is not None:
            mongod.terminate()
            mongod.wait(timeout=60)
            shutil.rmtree(db_dir, ignore_errors=True)
    if not results:
        return "nothing was run"
    write_report(args.out, report(results, args, start, load_start, len(train_stems), len(test_stems)))


def report(results, args, start, load_start, n_train, n_test) -> str:
    gt = next((r for r in results if r["name"] == "ground truth"), None)
    rows = []
    for r in results:
        s = r["summary"]
        frac = "%.2f / %.2f" % (r["cat_iou"] / gt["cat_iou"], r["miou"] / gt["miou"]) if gt and r is not gt and \
            gt["cat_iou"] > 0 else ""
        rows.append([r["name"], "%d + %d" % (s.train_samples, s.val_samples), s.background_only,
                     s.skipped_unlabelled + s.failed, s.epochs_done, "%.0f" % s.seconds,
                     "%.1f" % (s.seconds / max(s.epochs_done - s.start_epoch, 1)),
                     "%.3f" % s.best_val_miou if s.best_val_miou is not None else "-",
                     "**%.3f**" % r["cat_iou"], "%.3f" % r["miou"], frac,
                     "%.2f" % (r["pred_seconds"] / max(r["predicted"], 1)),
                     "%.3f" % r["label_iou"] if r.get("label_iou") is not None else "1 (they are)"])
    first = results[0]["summary"]
    lines = ["# Training on labels: test IoU on the pets photos", "",
             "Command: `%s`" % command_line(), ""] + machine_lines() + [
        "- Network: %s, %d px inputs (letterboxed), batch %d, %d epochs, peak lr %g (AdamW, warm-up + cosine), "
        "seed %d, device %s; backbone from %s" % (args.arch, args.image_size, args.batch_size, args.epochs, args.lr,
                                                  args.seed, first.device, first.backbone_start),
        "- Training: pets `unlabeled` split (%d images: cats with their masks, dogs with an empty cat mask), 10%% "
        "held out for validation; test: %d `test` cats, IoU from intersection and union summed over the images "
        "at their own size" % (n_train, n_test),
        "- Trivial answers on the test cats: all background, cat IoU 0; all foreground, cat IoU %.3f"
        % results[0]["all_fg"],
        "- Load average at start: %s, at end: %s; total wall time %.0f s" % (load_start, loadavg(),
                                                                          time.time() - start), "",
        md_table(["labels", "train + val images", "background only", "left out", "epochs", "training s",
                  "s/epoch", "best val mIoU", "test cat IoU", "test mIoU (bg, cat)", "fraction of ground truth "
                  "(cat IoU / mIoU)", "predict s/image", "labels' own cat IoU vs ground truth"], rows), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
