"""Times "Annotate by reference mask" per image on this machine, in fp32 and bf16, on real pets photos.

Models: the real ViT-B SAM and ViT-B-32 CLIP architectures with random weights (no download needed;
the cost of a forward pass does not depend on the weight values), or the tiny ones for a smoke test.
For every precision, in one run and on the same target images, it times:

- ``encoder``: one bare SAM image-encoder pass (``SamSegmenter.embed``), the floor for any SAM method;
- ``prior``: ``PriorMatcher(image)`` at its defaults incl. its embed (the reference prototype and the gate's
  calibration are built once, reported apart). With random weights the calibrated gate may find nothing
  alike and skip decoding, so:
- ``prior-ungated``: the same with the gate off (``min_similarity=None``): every peak candidate is decoded in
  one batch at low resolution, the kept instances refined in one more batch: the most work prior does;
- ``prior+clip``: ungated prior with ``ClipCheck(threshold=0.5)`` on each instance's masked crop;
- ``stitch``: ``StitchMatcher(image)``;
- ``seed``: the seed project's way ("Segmentation Without Labeling", SEED-ANALYSIS.md §2.3), implemented
  here with samtext's model adapters so the same model code is timed: target resized to the reference's
  size and stitched, then 10 repeats of [SAM encode of the 2W x H canvas + a CLIP grid of 64x64
  windows, each encoded alone with the text "a cat" + one 20-point multimask SAM decode], best kept.

Ratios checked: prior / encoder (target <= 1.10) and seed / stitch (target >= 8). Two encoder passes of the
same image differ by up to about 10% on a shared CPU, which is more than all of prior's own work, so prior's
work beyond the encoder is also timed apart: the same call with the image's embedding already computed
(``beyond encoder``), and the ratio (encoder + that) / encoder is reported beside the end-to-end one.

Example (smoke test)::

    .venv/bin/python bench/bench_reference.py --sam tiny --clip tiny --images 1 --seed-images 1 --out /tmp/ref.md
"""

import argparse
import copy
import statistics
import sys
import time

import numpy as np

from common import (
    REFERENCE_STEM,
    RESULTS,
    command_line,
    load_pet,
    loadavg,
    machine_lines,
    md_table,
    pets_stems,
    write_report,
    timed,
)

MODES = ("encoder", "prior", "prior-ungated", "prior+clip", "stitch", "seed")
TARGETS = {"prior/encoder": ("<=", 1.10), "prior-ungated/encoder": ("<=", 1.10),
           "(encoder + prior-ungated beyond encoder)/encoder": ("<=", 1.10),
           "(encoder + prior+clip beyond encoder)/encoder": ("<=", 1.10), "seed/stitch": (">=", 8.0)}


# --------------------------------------------------------------------------------------------- models


def build_models(sam_name: str, clip_name: str, seed: int = 0):
    """The raw SAM and CLIP modules (shared by the fp32 and bf16 adapters) and a description."""
    import torch

    torch.manual_seed(seed)
    if sam_name == "tiny":
        from samtext.models.tiny import build_tiny_sam

        sam = build_tiny_sam()
    else:
        from segment_anything import sam_model_registry

        sam = sam_model_registry[sam_name](checkpoint=None)
    if clip_name == "tiny":
        from samtext.models.tiny import build_tiny_clip

        clip, tokenizer = build_tiny_clip()
    else:
        import open_clip

        clip = open_clip.create_model(clip_name, pretrained=None)
        tokenizer = open_clip.get_tokenizer(clip_name)

    def millions(m):
        return sum(p.numel() for p in m.parameters()) / 1e6

    desc = "SAM %s (%.1f M params, encoder input %d px), CLIP %s (%.1f M params); random weights" % (
        sam_name, millions(sam), sam.image_encoder.img_size, clip_name, millions(clip))
    return sam, clip, tokenizer, desc


def adapters(sam, clip, tokenizer, precision: str, sam_name: str, clip_name: str):
    from samtext.models.clip import ClipModel
    from samtext.models.sam import SamSegmenter

    return (SamSegmenter(sam, device="cpu", precision=precision, name=sam_name),
            ClipModel(clip, tokenizer, device="cpu", precision=precision, name=clip_name))


# ----------------------------------------------------------------------------------- the seed's way


class SeedWay:
    """The seed's pseudo-labelling of one target (SEED-ANALYSIS.md §2.3), as coded there, bugs included.

    Arguments:
        segmenter: a ``SamSegmenter``; clip: a ``ClipModel``.
        ref_image, ref_mask: the reference ``(H, W, 3)`` uint8 image and ``(H, W)`` bool mask.
        repeats: prompt repeats, each re-encoding the canvas and re-running the CLIP grid (10).
        window: CLIP grid cell side, no overlap, border remainder dropped (64).
        text: the grid's text ("a cat": the seed's prompt-text bug).
        num_points: fg/bg points on the reference and pos/neg points on the target, each (5).
    """

    def __init__(self, segmenter, clip, ref_image, ref_mask, repeats=10, window=64, text="a cat",
                 num_points=5, seed=42):
        self.sam, self.clip = segmenter, clip
        self.ref_image, self.ref_mask = ref_image, ref_mask
        self.repeats, self.window, self.text, self.k, self.seed = repeats, window, text, num_points, seed

    def clip_grid(self, target: np.ndarray):
        """Positive and negative ``(k, 2)`` points: centres of the k best / k worst grid cells."""
        win = self.window
        rows, cols = target.shape[0] // win, target.shape[1] // win
        scores, centres = [], []
        for r in range(rows):
            for c in range(cols):
                crop = target[r * win:(r + 1) * win, c * win:(c + 1) * win]
                img = self.clip.encode_images([crop])  # each window alone ...
                txt = self.clip.encode_texts([self.text])  # ... with its text, as one HF CLIPModel call
                scores.append(float(img[0] @ txt[0]))
                centres.append((c * win + win // 2, r * win + win // 2))
        order = np.argsort(scores)
        centres = np.array(centres, dtype=np.float32)
        return centres[order[::-1][: self.k]], centres[order[: self.k]]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        H, W = self.ref_image.shape[:2]
        oh, ow = image.shape[:2]
        target = image if (oh, ow) == (H, W) else np.asarray(Image.fromarray(image).resize((W, H), Image.BICUBIC))
        canvas = np.concatenate([self.ref_image, target], axis=1)  # 2W x H
        fg = np.argwhere(self.ref_mask)[:, ::-1]  # (x, y)
        bg = np.argwhere(~self.ref_mask)[:, ::-1]
        rng = np.random.default_rng(self.seed)
        labels = np.array([1] * self.k + [0] * self.k + [1] * self.k + [0] * self.k)
        best_score, best_mask = -np.inf, None
        for _ in range(self.repeats):
            ref_fg = fg[rng.choice(len(fg), self.k, replace=False)]
            ref_bg = bg[rng.choice(len(bg), self.k, replace=False)]
            pos, neg = self.clip_grid(target)  # identical every repeat; recomputed, as the seed does
            points = np.concatenate([ref_fg, ref_bg, pos + [W, 0], neg + [W, 0]]).astype(np.float32)
            emb = self.sam.embed(canvas)  # re-encoded every repeat, as the seed does
            pred = self.sam.predict(emb, points[None], labels[None], multimask=True)
            k = int(np.argmax(pred.scores[0]))
            if pred.scores[0, k] > best_score:
                best_score, best_mask = float(pred.scores[0, k]), pred.masks[0, k]
        right = best_mask[:, W:].astype(np.uint8) * 255
        return np.asarray(Image.fromarray(right).resize((ow, oh), Image.BICUBIC)) > 127


# -------------------------------------------------------------------------------------------- timing



def describe(mode, out) -> str:
    """A short note on what a call's result exercised (random weights give arbitrary masks, and an
    empty result skips the later steps, so the notes say what really ran)."""
    if mode == "encoder":
        return ""
    if mode == "seed":
        return "mask" if out.any() else "empty"
    if out.is_empty:
        reason = out.empty_reason or ""
        return "empty (%s)" % ("gate" if "gate" in reason else "CLIP check" if reason.startswith("CLIP") else
                               "window gate" if "window" in reason else "no mask")
    tags = ["%d instance%s" % (len(out.instances), "" if len(out.instances) == 1 else "s")]
    if mode == "prior+clip":
        tags.append("check ran")
    return ",".join(tags)


class cached_embedding:
    """Within the block, ``segmenter.embed`` returns ``embedding`` at once (the encoder's share taken out)."""

    def __init__(self, segmenter, embedding):
        self.segmenter, self.embedding = segmenter, embedding

    def __enter__(self):
        self.segmenter.embed = lambda image: self.embedding

    def __exit__(self, *exc):
        del self.segmenter.embed


BEYOND = ("prior-ungated", "prior+clip")  # modes also timed with the embedding already computed


def run_precision(precision, models, names, ref, targets, n_seed, modes, args, log):
    from samtext.pipelines.reference import ClipCheck, PriorMatcher, Reference, StitchMatcher

    sam_raw, clip_raw, tokenizer = models
    seg, clip = adapters(sam_raw, clip_raw, tokenizer, precision, *names)
    reference = Reference(ref[0], ref[1], name=REFERENCE_STEM)
    extra = {}

    first = targets[0][1]
    emb = seg.embed(first)  # warm-up of the encoder (the same 1024 px input in every mode)
    # the marginal cost of each batch of peaks prior decodes: 4 peaks x 2 placements of the positive point
    h, w = first.shape[:2]
    pts = np.random.default_rng(0).random((8, 2, 2)).astype(np.float32) * [w, h]
    labels = np.tile([1, 0], (8, 1))
    seg.predict(emb, pts, labels, multimask=True, full_size=False)
    extra["SAM decoder, one batch of prior's peaks (8 prompts, multimask, low-res)"] = min(
        timed(seg.predict, emb, pts, labels, None, None, True, False)[0] for _ in range(3))
    prior = prior_ungated = prior_clip = stitch = seed = None
    if {"prior", "prior-ungated", "prior+clip"} & set(modes):
        extra["prior prototype and gate calibration (once per run)"], prior = timed(PriorMatcher, seg, [reference])
        prior_ungated = copy.copy(prior)  # same prototype, no gate
        prior_ungated.gate = None
        prior_clip = copy.copy(prior_ungated)  # plus the check
        prior_clip.clip_check = ClipCheck(clip, "cat", threshold=args.clip_threshold, references=[reference])
    if "stitch" in modes:
        stitch = StitchMatcher(seg, clip, [reference], "cat", clip_check=ClipCheck(clip, "cat", 0.5, [reference]))
    if "seed" in modes:
        seed = SeedWay(seg, clip, ref[0], ref[1], repeats=args.repeats)
    calls = {"encoder": seg.embed, "prior": prior, "prior-ungated": prior_ungated, "prior+clip": prior_clip,
             "stitch": stitch, "seed": seed}
    if "prior+clip" in modes or "stitch" in modes:
        from samtext.models.clip import BACKGROUND_PROMPTS, PROMPT_TEMPLATE

        texts = [PROMPT_TEMPLATE.format("cat")] + list(BACKGROUND_PROMPTS)
        clip.encode_texts(texts)
        extra["CLIP text encode of the 6 class/background prompts (once per run, cached)"] = min(
            timed(clip.encode_texts, texts)[0] for _ in range(3))

    # Warm-up: every mode once on the first target (the seed's way with a single repeat; "prior+clip"
    # runs all of "prior").
    for mode in modes:
        if mode == "encoder":
            continue
        if mode == "seed":
            SeedWay(seg, clip, ref[0], ref[1], repeats=1)(first)
        else:
            calls[mode](first)
    log("[%s] warmed up" % precision)

    # Timed: per image, every mode in turn, so that load drift hits all modes alike.
    rows = []  # (stem, size, mode, seconds, note)
    for i, (stem, image) in enumerate(targets):
        size = "%dx%d" % (image.shape[1], image.shape[0])
        embedding = None
        for mode in modes:
            if mode == "seed" and i >= n_seed:
                continue
            seconds, out = timed(calls[mode], image)
            embedding = out if mode == "encoder" else embedding
            note = describe(mode, out)
            rows.append((stem, size, mode, seconds, note))
            log("[%s] %-8s %-10s %8.3f s  %s" % (precision, stem, mode, seconds, note))
        for mode in BEYOND:
            if mode in modes and embedding is not None:
                with cached_embedding(seg, embedding):
                    seconds, out = timed(calls[mode], image)
                rows.append((stem, size, mode + " beyond encoder", seconds, describe(mode, out)))
                log("[%s] %-8s %-10s %8.3f s  beyond the encoder" % (precision, stem, mode, seconds))
    return rows, extra


def all_modes(modes):
    """The timed modes plus the "beyond encoder" ones they imply."""
    return list(modes) + [m + " beyond encoder" for m in BEYOND if m in modes and "encoder" in modes]


def summarise(rows, modes, n_seed_stems):
    """Per mode: median/min/max seconds and notes; ratios over the same images."""
    by_mode = {m: [r for r in rows if r[2] == m] for m in all_modes(modes)}
    stats = {}
    for mode, rs in by_mode.items():
        if rs:
            t = [r[3] for r in rs]
            stats[mode] = (statistics.median(t), min(t), max(t), len(t))
    ratios = {}
    for mode in ("prior", "prior-ungated"):
        if mode in stats and "encoder" in stats:
            ratios[mode + "/encoder"] = stats[mode][0] / stats["encoder"][0]
    for mode in BEYOND:
        if mode + " beyond encoder" in stats and "encoder" in stats:
            enc = stats["encoder"][0]
            ratios["(encoder + %s beyond encoder)/encoder" % mode] = (enc + stats[mode + " beyond encoder"][0]) / enc
    if "seed" in stats and "stitch" in stats:
        stitch_same = [r[3] for r in by_mode["stitch"] if r[0] in n_seed_stems]
        ratios["seed/stitch"] = stats["seed"][0] / statistics.median(stitch_same)
    return stats, ratios


WHAT = {
    "encoder": "SamSegmenter.embed (bare SAM image encoder)",
    "prior": "PriorMatcher(image) at its defaults (calibrated gate)",
    "prior-ungated": "PriorMatcher(image), gate off: embed + batched low-res decode of every peak + batched refine",
    "prior+clip": "prior-ungated + ClipCheck(threshold=%.2f) on each instance's masked crop",
    "stitch": "StitchMatcher(image): CLIP windows + 2 narrowing levels (batched) + 1 canvas embed + 4 prompt sets "
              "+ CLIP check",
    "prior-ungated beyond encoder": "prior-ungated with the image's embedding already computed: its own work",
    "prior+clip beyond encoder": "prior+clip with the image's embedding already computed: its own work",
    "seed": "seed's way: %d x (embed 2WxH canvas + CLIP grid 64px, 1 window/call + 20-pt multimask decode)",
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=3, help="target images for encoder/prior/stitch (default 3)")
    p.add_argument("--seed-images", type=int, default=2,
                   help="of those, how many also run the seed's way (~10x slower; default 2)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--sam", default="vit_b", help="vit_b (default), vit_l, vit_h or tiny")
    p.add_argument("--clip", default="ViT-B-32", help="ViT-B-32 (default) or tiny")
    p.add_argument("--repeats", type=int, default=10, help="the seed's repeats (default 10)")
    p.add_argument("--clip-threshold", type=float, default=0.5)
    p.add_argument("--stems", nargs="+", help="explicit target stems (default: the first pets after cat_000)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--out", default=None, help="markdown report (default bench/results/reference.md)")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out_path = args.out or "%s/reference.md" % RESULTS
    modes = [m for m in MODES if m in args.modes]
    t_start = time.perf_counter()
    load_start = loadavg()

    def log(msg):
        print("%7.1fs %s" % (time.perf_counter() - t_start, msg), flush=True)

    stems = args.stems or pets_stems()[: args.images]
    n_seed = min(args.seed_images, len(stems))
    ref = load_pet(REFERENCE_STEM)
    targets = [(s, load_pet(s)[0]) for s in stems]
    sam_raw, clip_raw, tokenizer, model_desc = build_models(args.sam, args.clip)
    log("built models: " + model_desc)

    results = {}
    for precision in args.precisions:
        results[precision] = run_precision(precision, (sam_raw, clip_raw, tokenizer), (args.sam, args.clip),
                                           ref, targets, n_seed, modes, args, log)
    total = time.perf_counter() - t_start

    # ------------------------------------------------------------------------------------- report
    seed_stems = set(stems[:n_seed])
    out = ["# Annotate by reference mask: seconds per image", ""]
    out += ["Command: `%s`" % command_line(), ""]
    out += machine_lines()
    out += ["- Models: " + model_desc,
            "- Reference: %s (%dx%d); targets: %s%s"
            % (REFERENCE_STEM, ref[0].shape[1], ref[0].shape[0],
               ", ".join("%s (%dx%d)" % (s, im.shape[1], im.shape[0]) for s, im in targets),
               "; the seed's way on the first %d" % n_seed if "seed" in modes else ""),
            "- Load average (1/5/15 min) at start: %s, at end: %s; total wall time %.0f s"
            % (load_start, loadavg(), total),
            "- Each mode warmed up once on the first target (the seed's way with 1 repeat); times are `time.perf_counter` around "
            "one call per image; medians over images. Modes run in turn on each image.",
            "- End-to-end ratios carry the encoder's run-to-run spread (up to about 10% here); the \"beyond "
            "encoder\" rows time each action's own work with the embedding already computed.", ""]

    header = ["mode", "what is timed", "median s/image", "min", "max", "images", "result notes"]
    ratio_rows = []
    for precision, (rows, extra) in results.items():
        stats, ratios = summarise(rows, modes, seed_stems)
        table = []
        for mode in all_modes(modes):
            if mode not in stats:
                continue
            med, lo, hi, n = stats[mode]
            what = WHAT[mode]
            what = what % args.clip_threshold if mode == "prior+clip" else what
            what = what % args.repeats if mode == "seed" else what
            notes = "; ".join(sorted({r[4] for r in rows if r[2] == mode and r[4]}))
            table.append([mode, what, "**%.3f**" % med, "%.3f" % lo, "%.3f" % hi, n, notes])
        for name, seconds in extra.items():
            table.append([name, "not in the per-image times", "%.3f" % seconds, "", "", "", ""])
        out += ["## %s" % precision, "", md_table(header, table), ""]
        for name, (op, target) in TARGETS.items():
            if name in ratios:
                ok = ratios[name] <= target if op == "<=" else ratios[name] >= target
                ratio_rows.append([precision, name, "%.2f" % ratios[name], "%s %.2f" % (op, target),
                                   "yes" if ok else "**no**"])
    if ratio_rows:
        out += ["## Ratios (medians, same images)", "",
                md_table(["precision", "ratio", "value", "target", "met"], ratio_rows), ""]
    if len(results) > 1 and all("encoder" in [r[2] for r in rows] for rows, _ in results.values()):
        precs = list(results)
        meds = {pr: summarise(results[pr][0], modes, seed_stems)[0] for pr in precs}
        sp = [[m] + ["%.2f" % (meds[precs[0]][m][0] / meds[pr][m][0]) for pr in precs[1:]]
              for m in modes if all(m in meds[pr] for pr in precs)]
        out += ["## Speed-up of %s over %s (median %s / median other)" % (", ".join(precs[1:]), precs[0], precs[0]),
                "", md_table(["mode"] + precs[1:], sp), ""]

    out += ["## Per image (seconds)", ""]
    detail = []
    for precision, (rows, _) in results.items():
        for stem in stems:
            by = {r[2]: r for r in rows if r[0] == stem}
            size = next(iter(by.values()))[1]
            detail.append([precision, stem, size] + ["%.3f" % by[m][3] if m in by else "" for m in modes])
    out += [md_table(["precision", "image", "size"] + modes, detail), ""]
    text = "\n".join(out)
    print("\n" + text)
    write_report(out_path, text)


if __name__ == "__main__":
    sys.exit(main())
