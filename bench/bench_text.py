"""Times "Annotate by text" per image, both localizers, next to a bare SAM encoder pass and to the seed's way, on
pets photos, in one run.

Models: the real ViT-B SAM and the ViT-B-32 and RN50 CLIP architectures with random weights (a forward pass costs
the same as with trained ones). An action's time is its encoder pass plus ``TextLabeller.from_embedding`` (what
``TextLabeller.__call__`` does), so each row is a ratio to the same image's encoder pass. Random weights make CLIP's
probabilities near uniform, so at the default threshold (0.5) no region passes and SAM draws nothing: the
"default" rows are the cost of an image where the object is absent. The "worst case" rows set the thresholds to 0,
so that every localized region is drawn by SAM and checked by CLIP on its masked crop (10 objects per image, 4
Grad-CAM patches): the most work the defaults can cause.

The seed's way (SEED-ANALYSIS.md §1.2, §1.3): selective search's first 50 boxes that pass its filters (area of at
least 1000 px, aspect ratio at most 1.5), unranked, one CLIP call each, then the top box's centre to SAM; patches
at the seed's upstream settings (the image resized to 900 px, 224 px patches without overlap), one CLIP call each,
then Grad-CAM one patch at a time on the top 6.

Example (smoke test)::

    .venv/bin/python bench/bench_text.py --sam tiny --clip tiny --rn-clip tiny-rn --images 1 --out /tmp/t.md
"""

import argparse
import os
import statistics
import time

import numpy as np

from common import RESULTS, command_line, load_pet, loadavg, machine_lines, md_table, pets_stems, timed, write_report

PROMPT = "cat"



def build_clip(name: str, precision: str):
    import open_clip

    from samtext.models.clip import ClipModel
    from samtext.models.tiny import build_tiny_clip

    if name.startswith("tiny"):
        model, tokenizer = build_tiny_clip(tower="rn" if name == "tiny-rn" else "vit")
    else:
        model, tokenizer = open_clip.create_model(name, pretrained=None), open_clip.get_tokenizer(name)
    return ClipModel(model, tokenizer, device="cpu", precision=precision, name=name)


def seed_boxes(seg, clip, image, embedding):
    """The seed's notebook 01 after the encoder: 50 unranked boxes, one CLIP call each, top box centre to SAM."""
    from samtext.pipelines.text import box_nms
    from samtext.pipelines.text_boxes import selective_search

    boxes = selective_search(image, "fast")
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (w * h >= 1000) & (w <= 1.5 * h) & (h <= 1.5 * w)
    boxes = boxes[keep][:50]
    text = clip.encode_texts(["the " + PROMPT])
    scores = []
    for x1, y1, x2, y2 in boxes:
        scores.append(float(clip.encode_images([image[y1:y2, x1:x2]])[0] @ text[0]))  # raw cosine, one call each
    top = box_nms(boxes.astype(np.float32), np.array(scores), 0.1)[0]
    x1, y1, x2, y2 = boxes[top]
    return seg.predict(embedding, np.array([[[(x1 + x2) / 2, (y1 + y2) / 2]]]), np.array([[1]]), multimask=True)


def seed_patches(seg, clip, image, embedding):
    """The seed's notebook 02 as its upstream did it: 900 px square, 224 px patches without overlap, one CLIP call
    each, Grad-CAM one patch at a time on the top 6, the top peak to SAM."""
    import cv2

    from samtext.pipelines.reference import window_grid

    square = cv2.resize(image, (900, 900), interpolation=cv2.INTER_AREA)
    boxes = [b for b in window_grid(900, 900, 224, 224) if b[2] - b[0] == 224 and b[3] - b[1] == 224]
    text = clip.encode_texts(["the " + PROMPT])
    scores = [float(clip.encode_images([square[y1:y2, x1:x2]])[0] @ text[0]) for x1, y1, x2, y2 in boxes]
    best = None
    for i in np.argsort(scores)[::-1][:6]:
        x1, y1, x2, y2 = boxes[i]
        cam = clip.saliency_maps([square[y1:y2, x1:x2]], text, [0])[0]
        if best is None or cam.max() > best[0]:
            r, c = np.unravel_index(cam.argmax(), cam.shape)
            best = (cam.max(), (x1 + c) * image.shape[1] / 900, (y1 + r) * image.shape[0] / 900)
    return seg.predict(embedding, np.array([[best[1:]]]), np.array([[1]]), multimask=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--sam", default="vit_b")
    p.add_argument("--clip", default="ViT-B-32")
    p.add_argument("--rn-clip", default="RN50")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--out", default=os.path.join(RESULTS, "text.md"))
    args = p.parse_args()

    from bench_reference import build_models
    from samtext.models.precision import resolve_precision
    from samtext.models.sam import SamSegmenter
    from samtext.pipelines.text import TextLabeller, TextSettings
    from samtext.pipelines.text_boxes import BoxLocalizer
    from samtext.pipelines.text_patches import PatchLocalizer

    t0 = time.perf_counter()
    load_start = loadavg()

    def log(msg):
        print("%7.1fs %s" % (time.perf_counter() - t0, msg), flush=True)

    precision = resolve_precision(args.precision, "cpu")
    sam_raw, _, _, desc = build_models(args.sam, "tiny")
    desc = desc.split(", CLIP")[0]  # the SAM part; the CLIP towers are built below
    seg = SamSegmenter(sam_raw, device="cpu", precision=precision, name=args.sam)
    vit, rn = build_clip(args.clip, precision), build_clip(args.rn_clip, precision)
    log("built SAM %s, CLIP %s and %s; precision %s" % (args.sam, args.clip, args.rn_clip, precision))
    default, worst = TextSettings(), TextSettings(threshold=0.0)

    def labeller(clip, kind, settings):
        where = BoxLocalizer(clip, settings) if kind == "boxes" else PatchLocalizer(clip, settings)
        return TextLabeller(seg, clip, [PROMPT], where, [], settings)

    modes = {
        "boxes, %s, default" % args.clip: labeller(vit, "boxes", default),
        "boxes, %s, worst case" % args.clip: labeller(vit, "boxes", worst),
        "patches + Grad-CAM, %s, default" % args.clip: labeller(vit, "patches", default),
        "patches + Grad-CAM, %s, worst case" % args.clip: labeller(vit, "patches", worst),
        "patches + Grad-CAM, %s, default" % args.rn_clip: labeller(rn, "patches", default),
        "patches + Grad-CAM, %s, worst case" % args.rn_clip: labeller(rn, "patches", worst),
    }
    seeds = {
        "seed's way: 50 unranked boxes, one CLIP call each (%s)" % args.clip: lambda i, e: seed_boxes(seg, vit, i, e),
        "seed's way: patches one at a time, Grad-CAM (%s)" % args.rn_clip: lambda i, e: seed_patches(seg, rn, i, e),
    }
    stems = pets_stems()[: args.images]
    images = [(s, load_pet(s)[0]) for s in stems]
    first = images[0][1]
    emb = seg.embed(first)
    for lab in modes.values():
        lab.from_embedding(first, emb)
    for fn in seeds.values():
        fn(first, emb)
    log("warmed up")

    rows = {}
    for stem, image in images:
        enc, emb = timed(seg.embed, image)
        rows.setdefault("SAM encoder", []).append((enc, enc, ""))
        log("%-8s %-52s %7.2f s" % (stem, "SAM encoder", enc))
        for name, lab in modes.items():
            seconds, result = timed(lab.from_embedding, image, emb)
            note = "%d objects, %d regions" % (len(result.instances), result.scores.get("num_regions", 0))
            rows.setdefault(name, []).append((enc + seconds, enc, note))
            log("%-8s %-52s %7.2f s (%.2fx) %s" % (stem, name, enc + seconds, (enc + seconds) / enc, note))
        for name, fn in seeds.items():
            seconds, _ = timed(fn, image, emb)
            rows.setdefault(name, []).append((enc + seconds, enc, ""))
            log("%-8s %-52s %7.2f s (%.2fx)" % (stem, name, enc + seconds, (enc + seconds) / enc))

    table = []
    for name, values in rows.items():
        ratios = [total / enc for total, enc, _ in values]
        table.append([name, "%.2f" % statistics.median(v[0] for v in values), "%.2f" % statistics.median(ratios),
                      " / ".join("%.2f" % r for r in ratios), values[-1][2]])
    report = "\n".join([
        "# Annotate by text: time per image", "",
        "Command: `%s`" % command_line(), "",
        "- images: %s (pets, about 500x375)" % ", ".join(stems),
        "- models: %s; CLIP %s and %s with random weights; precision %s" % (desc, args.clip, args.rn_clip, precision),
        "- load average at start: %s; at end: %s" % (load_start, loadavg()),
        *machine_lines(), "",
        "Each action's time is its own encoder pass plus the rest of its work on the same image; the ratio is to that "
        "encoder pass (median over images, then each image).", "",
        md_table(["what", "s per image (median)", "x encoder (median)", "x encoder per image", "last image"], table),
        "",
    ])
    write_report(args.out, report)


if __name__ == "__main__":
    main()
