"""Times mask proposals, their embeddings and the exemplar matching per image, next to a bare SAM encoder pass
and to FiftyOne's own zoo SAM in automatic-mask mode, on pets photos, in one run.

Models: the real ViT-B SAM and ViT-B-32 CLIP architectures with random weights (a forward pass costs the same
as with trained ones). Random weights make SAM's masks meaningless, so SAM's default filters keep almost none
of them: the decoding of every grid prompt is timed in full, but the masks that survive are few. The costs that
grow with the number of kept proposals are therefore timed apart, for a typical 64 proposals per image:

- ``encoder``: ``SamSegmenter.embed`` (the floor for any SAM action);
- ``proposals 16x16`` / ``proposals 32x32``: ``ProposalGenerator.from_embedding`` at its defaults (grid decoded
  in batches at low resolution, SAM's filters, NMS, upscaling of the kept masks), the embedding given;
- ``clip embeddings, 64 proposals``: CLIP on 64 masked crops (the default embedder);
- ``sam embeddings, 64 proposals``: SAM features pooled under 64 masks;
- ``matching, 64 proposals``: ``ExampleMatcher`` on 64 proposals against 3 exemplars of 2 classes;
- ``zoo SAM, automatic masks``: ``dataset.apply_model(foz.load_zoo_model("segment-anything-vitb-torch"))``
  without prompts (``SamAutomaticMaskGenerator`` at its defaults: 32x32 points, batches of 64), on a one-image
  dataset, with a random-weights checkpoint put where the zoo looks for its download (a temporary zoo folder).

Example (smoke test)::

    .venv/bin/python bench/bench_proposals.py --sam tiny --clip tiny --images 1 --no-zoo --out /tmp/p.md
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from common import RESULTS, command_line, load_pet, loadavg, machine_lines, md_table, pets_stems, scratch_dir, timed, \
    write_report

N_PROPOSALS = 64


DEFAULT16 = "proposals 16x16 + gap fill (embedding given)"
WORST16 = "proposals 16x16 + gap fill, every mask drawn (worst case)"
MODULE16 = "proposals 16x16 worst case, SAM's decoder module"



def typical_masks(shape, n=N_PROPOSALS, seed=0):
    """``n`` ``(H, W)`` bool blobs of varied sizes (ellipses), standing in for kept proposals."""
    h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.03, 0.3) * h, rng.uniform(0.03, 0.3) * w
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return out


def disk_per_image(n_images: int, dim: int = 512, n_props: int = N_PROPOSALS) -> dict:
    """Bytes per image that proposals take: the ``fo.Detections`` in the database (measured with FiftyOne's
    ``stats``) and the embeddings in the store (measured on disk), for ``n_props`` stand-in proposals per pets
    image and ``dim``-dimensional vectors; and the extrapolation to 100k images."""
    import shutil

    import fiftyone as fo

    from samtext.run.fields import detections_label
    from samtext.pipelines.result import Instance, MaskResult
    from samtext.run.store import EmbeddingStore

    from common import image_path

    ds = fo.Dataset()
    root = tempfile.mkdtemp(prefix="samtext-disk-")
    store = EmbeddingStore(root)
    rng = np.random.default_rng(0)
    samples, ids = [], []
    for stem in pets_stems()[:n_images]:
        image = load_pet(stem)[0]
        result = MaskResult(image.shape[:2], [Instance(m, 0.9, "proposal", dict(predicted_iou=0.9, stability_score=0.95,
                                                                               area=float(m.sum())))
                                              for m in typical_masks(image.shape[:2], n_props, seed=len(samples))],
                            np.zeros((0, 2)), np.zeros(0))
        dets = detections_label(result, "proposal")
        ids += [d.id for d in dets.detections]
        samples.append(fo.Sample(filepath=image_path(stem), proposals=dets))
    ds.add_samples(samples)
    store.write(ids, rng.normal(size=(len(ids), dim)))
    db_bytes = ds.stats()["samples_bytes"]
    store_bytes = sum(os.path.getsize(os.path.join(root, f)) for f in os.listdir(root))
    ds.delete()
    shutil.rmtree(root, ignore_errors=True)
    per_db, per_store = db_bytes / n_images, store_bytes / n_images
    return dict(images=n_images, proposals=n_props, dim=dim, db_per_image=per_db, store_per_image=per_store,
                db_100k_gb=per_db * 1e5 / 1e9, store_100k_gb=per_store * 1e5 / 1e9)


def zoo_sam(sam_module, workdir):
    """FiftyOne's zoo SAM ViT-B, its checkpoint replaced by ``sam_module``'s (random) weights in a temporary zoo
    folder, so that nothing is downloaded."""
    import fiftyone as fo
    import fiftyone.zoo as foz
    import fiftyone.zoo.models as fozm
    import torch

    fo.config.model_zoo_dir = workdir
    _, path = fozm._get_model_in_dir("segment-anything-vitb-torch")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(sam_module.state_dict(), path)
    return foz.load_zoo_model("segment-anything-vitb-torch", device="cpu")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--sam", default="vit_b")
    p.add_argument("--clip", default="ViT-B-32")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--no-zoo", action="store_true", help="skip FiftyOne's zoo SAM")
    p.add_argument("--disk-images", type=int, default=50, help="images for the disk measurement (0: skip)")
    p.add_argument("--out", default=os.path.join(RESULTS, "proposals.md"))
    args = p.parse_args()

    import torch

    from bench_reference import adapters, build_models
    from samtext.models.precision import resolve_precision
    from samtext.pipelines.embeddings import clip_mask_embeddings, sam_mask_embeddings
    from samtext.pipelines.examples import ExampleClass, ExampleMatcher, ImageProposals
    from samtext.pipelines.proposals import ProposalGenerator, ProposalSettings

    t0 = time.perf_counter()
    load_start = loadavg()

    def log(msg):
        print("%7.1fs %s" % (time.perf_counter() - t0, msg), flush=True)

    precision = resolve_precision(args.precision, "cpu")
    sam_raw, clip_raw, tokenizer, desc = build_models(args.sam, args.clip)
    seg, clip = adapters(sam_raw, clip_raw, tokenizer, precision, args.sam, args.clip)
    log("built models: " + desc + "; precision " + precision)
    stems = pets_stems()[: args.images]
    images = [(s, load_pet(s)[0]) for s in stems]
    gen16 = ProposalGenerator(seg, ProposalSettings())  # CPU's default: 16x16 and the gap-filling second pass
    # pred_iou_thresh 0: every prompt's masks are drawn and stability-scored, the most work real weights can cause
    gen16_all = ProposalGenerator(seg, ProposalSettings(pred_iou_thresh=0.0))
    assert gen16.side == 16 and gen16.settings.fills_gaps(16), "the bench times CPU's default grid"
    gen32 = ProposalGenerator(seg, ProposalSettings(points_per_side=32, pred_iou_thresh=0.0))  # as the zoo's work
    zoo = None
    if not args.no_zoo and args.sam == "vit_b":
        zoo = zoo_sam(sam_raw, scratch_dir("samtext-zoo-"))
        log("zoo SAM loaded with the same random weights")

    # warm-up on the first image
    first = images[0][1]
    emb = seg.embed(first)
    gen16.from_embedding(emb)
    masks = typical_masks(first.shape[:2])
    clip_mask_embeddings(clip, first, masks[:4])
    log("warmed up")

    rows = {}
    for stem, image in images:
        def add(mode, seconds, note=""):
            rows.setdefault(mode, []).append((seconds, note))
            log("%-8s %-34s %8.3f s %s" % (stem, mode, seconds, note))

        seconds, emb = timed(seg.embed, image)
        add("encoder", seconds)
        seconds, r16 = timed(gen16.from_embedding, emb)
        add(DEFAULT16, seconds, "%d kept" % len(r16.instances))
        seconds, r16 = timed(gen16_all.from_embedding, emb)
        add(WORST16, seconds, "%d kept" % len(r16.instances))
        decoder, seg.decoder = seg.decoder, None  # SAM's decoder module for every prompt (the old path)
        try:
            seconds, r16 = timed(gen16_all.from_embedding, emb)
        finally:
            seg.decoder = decoder
        add(MODULE16, seconds, "%d kept" % len(r16.instances))
        seconds, r32 = timed(gen32.from_embedding, emb)
        add("proposals 32x32, every mask drawn", seconds, "%d kept" % len(r32.instances))
        masks = typical_masks(image.shape[:2])
        seconds, clip_vecs = timed(clip_mask_embeddings, clip, image, masks)
        add("clip embeddings, %d proposals" % N_PROPOSALS, seconds)
        seconds, _ = timed(sam_mask_embeddings, seg, emb, masks)
        add("sam embeddings, %d proposals" % N_PROPOSALS, seconds)
        from samtext.pipelines.geometry import mask_to_box

        boxes = np.array([mask_to_box(m) for m in masks], dtype=np.int64)  # the reader gives them with the masks
        props = ImageProposals(image.shape[:2], masks, clip_vecs, [{} for _ in masks], boxes)
        matcher = ExampleMatcher([ExampleClass("a", clip_vecs[:2]), ExampleClass("b", clip_vecs[2:3])], 0.3)
        matcher(props)
        seconds = min(timed(matcher, props)[0] for _ in range(5))
        add("matching, %d proposals" % N_PROPOSALS, seconds, "2 classes, 3 exemplars")
        if zoo is not None:
            import fiftyone as fo

            ds = fo.Dataset()
            ds.add_sample(fo.Sample(filepath=os.path.join(os.path.dirname(os.path.dirname(__file__)), "..", "shared",
                                                          "data", "pets", "images", stem + ".jpg")))
            seconds, _ = timed(ds.apply_model, zoo, label_field="auto", progress=False)
            add("zoo SAM, automatic masks (encoder included)", seconds,
                "%d masks" % len(ds.first()["auto"].detections if ds.first()["auto"] else []))
            ds.delete()

    med = {m: statistics.median(s for s, _ in v) for m, v in rows.items()}
    enc = med["encoder"]
    ours16 = enc + med[WORST16]
    clip64 = med["clip embeddings, %d proposals" % N_PROPOSALS]
    table = [[m, "**%.3f**" % med[m], "%.3f" % min(s for s, _ in v), "%.3f" % max(s for s, _ in v), len(v),
              "; ".join(sorted({n for _, n in v if n}))] for m, v in rows.items()]
    ratios = [
        ["proposals 16x16, SAM's decoder module / shared-image decoder (same work)",
         "%.2f" % (med[MODULE16] / med[WORST16]), ""],
        ["(encoder + proposals 16x16 worst case + CLIP embeddings of %d) / encoder" % N_PROPOSALS,
         "%.2f" % ((ours16 + clip64) / enc), "<= 2.0"],
        ["(encoder + proposals 16x16 worst case + SAM embeddings of %d) / encoder" % N_PROPOSALS,
         "%.2f" % ((ours16 + med["sam embeddings, %d proposals" % N_PROPOSALS]) / enc), "<= 2.0"],
        ["matching per image, ms", "%.2f" % (1000 * med["matching, %d proposals" % N_PROPOSALS]), "< 5"],
    ]
    zoo_mode = "zoo SAM, automatic masks (encoder included)"
    if zoo_mode in med:
        ratios.append(["zoo SAM automatic masks / (encoder + proposals 16x16 worst case)",
                      "%.2f" % (med[zoo_mode] / ours16), ""])
        ratios.append(["zoo SAM automatic masks / (encoder + proposals 32x32)",
                       "%.2f" % (med[zoo_mode] / (enc + med["proposals 32x32, every mask drawn"])), "same grid"])
    disk = disk_per_image(args.disk_images) if args.disk_images else None
    if disk:
        log("disk: %.0f KB per image in the database, %.0f KB in the store"
            % (disk["db_per_image"] / 1e3, disk["store_per_image"] / 1e3))
    out = ["# Mask proposals, embeddings and matching: seconds per image", "",
           "Command: `%s`" % command_line(), ""] + machine_lines() + [
        "- Models: %s; precision %s" % (desc, precision),
        "- Images: %s" % ", ".join("%s (%dx%d)" % (s, im.shape[1], im.shape[0]) for s, im in images),
        "- Load average at start: %s, at end: %s; total wall time %.0f s" % (load_start, loadavg(),
                                                                         time.perf_counter() - t0),
        "- Random weights: SAM's filters keep few masks, so the per-proposal costs are timed on %d stand-in "
        "masks; medians over images." % N_PROPOSALS,
        "- Proposals at the default settings skip drawing the masks of prompts that no mask passes the predicted-IoU "
        "filter for; with random weights that can be most prompts, so the ratios use the worst case (filter off: "
        "every prompt's 3 masks drawn and stability-scored), which real weights cannot exceed.", "",
        md_table(["what", "median s", "min", "max", "images", "notes"], table), "",
        md_table(["ratio", "value", "target"], ratios), ""]
    if disk:
        enc_total = (ours16 + clip64) * 1e5 / 3600.0
        out += ["## Disk and time at 100k images", "",
                "Measured on %d pets images with %d stand-in proposals each (masks of 3-30%% of the image side "
                "per axis) and %d-dimensional vectors (CLIP ViT-B-32):" % (disk["images"], disk["proposals"],
                                                                            disk["dim"]), "",
                md_table(["where", "per image", "100k images"], [
                    ["database (fo.Detections with cropped masks)", "%.0f KB" % (disk["db_per_image"] / 1e3),
                     "%.1f GB" % disk["db_100k_gb"]],
                    ["embedding store (float16)", "%.0f KB" % (disk["store_per_image"] / 1e3),
                     "%.1f GB" % disk["store_100k_gb"]],
                    ["time on this machine: encoder + proposals 16x16 (worst case) + CLIP embeddings",
                     "%.1f s" % (ours16 + clip64),
                     "%.0f h (%.1f days) on one 2-core machine" % (enc_total, enc_total / 24)],
                ]), ""]
    text = "\n".join(out)
    print("\n" + text)
    write_report(args.out, text)


if __name__ == "__main__":
    sys.exit(main())
