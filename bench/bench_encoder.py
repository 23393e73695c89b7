"""Times SAM's image encoder, the cost every action pays per image, and each action end to end, in one run.

Models: the real SAM ViT-B, MobileSAM and CLIP ViT-B-32 architectures with random weights (a forward pass costs
the same whatever the weights); pets photos. In one run and on the same images it measures:

1. **Encoder paths** (ViT-B, 1024 px): plain fp32; plain under bf16 autocast (samtext's path before the fast
   one); the fast path in fp32 (fused attention) and with bf16 weights; the fast path compiled
   (``torch.compile``, its first-call cost apart). For each: median seconds per image, the ratio to the bf16
   autocast pass, the features' relative L2 distance to fp32's, peak resident memory during a pass, and the
   fraction of this machine's matrix-multiply peak it reaches (the encoder's FLOPs counted by
   ``torch.utils.flop_counter``, the peak measured with a large matmul in the same dtype, in this run).
2. **MobileSAM's encoder**, plain and on the fast path, against ViT-B's bf16 autocast pass.
3. **Each action end to end** through the SDK (run driver, loader thread, database writes) at its defaults, with
   the default encoder path (what ``load_sam`` picks on this machine), per image, beside the bare encoder passes
   on the same images: reference (ViT-B and MobileSAM), text, proposals, examples (labels from stored
   proposals: no encoder).

Targets (issue 9): fast path <= 0.6x the bf16 autocast pass, features within 1.5% of fp32; reference end to end
<= 1.05x its bare encoder passes; MobileSAM's encoder <= 0.15x ViT-B's bf16 autocast pass and its reference run
<= 3 s per image. On a CPU without fast bf16 (AVX2 only) bf16 is emulated: "auto" picks fp32 there, and the
ratios to the bf16 autocast pass say little; the ratios to plain fp32 are printed too.

Example (smoke test with the tiny models)::

    .venv/bin/python bench/bench_encoder.py --tiny --images 2 --e2e-images 2 --out /tmp/encoder.md
"""

import argparse
import os
import statistics
import sys
import threading
import time

from common import RESULTS, command_line, load_pet, loadavg, machine_lines, md_table, pets_stems, scratch_dir, \
    start_mongod, timed, write_report

TARGETS = {
    "fast / before": ("<=", 0.60),
    "fast / bf16 autocast": ("<=", 0.60),
    "fast features vs fp32 (rel. L2)": ("<=", 0.015),
    "reference end to end / its encoder passes": ("<=", 1.05),
    "MobileSAM encoder / ViT-B before": ("<=", 0.15),
    "MobileSAM encoder / ViT-B bf16 autocast": ("<=", 0.15),
    "MobileSAM reference, s per image": ("<=", 3.0),
}


class PeakRSS:
    """Peak resident memory (MiB) of this process while the block runs, sampled every 10 ms."""

    def __enter__(self):
        self.peak, self._stop = self._rss(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def _watch(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def matmul_peak(dtype, n: int = 4096, repeats: int = 3) -> float:
    """GFLOP/s of the best of ``repeats`` ``n x n @ n x n`` products in ``dtype`` on this CPU."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best = min(timed(torch.matmul, a, b)[0] for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def encoder_flops(segmenter, image) -> float:
    """FLOPs of one encoder pass of ``image`` (matmuls, convolutions, attention), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    x, _ = segmenter.encoder_input(image)
    with FlopCounterMode(display=False) as counter:
        segmenter.encode(x)
    return float(counter.get_total_flops())


def random_checkpoint(build, folder: str, name: str) -> str:
    """A random-weights state dict of ``build()`` saved under ``folder`` (the SDK loads SAM from a file)."""
    import torch

    path = os.path.join(folder, name + ".pth")
    torch.manual_seed(0)
    torch.save(build().state_dict(), path)
    return path


def encoder_paths(args, images, log):
    """Section 1 and 2: rows of the encoder table, and the numbers the targets need."""
    import torch

    from samtext.models.mobilesam import build_mobile_sam
    from samtext.models.sam import SamSegmenter

    if args.tiny:
        from samtext.models.tiny import build_tiny_sam as build_vit
    else:
        from segment_anything import sam_model_registry

        def build_vit():
            return sam_model_registry["vit_b"](checkpoint=None)

    def build_mobile():
        return build_mobile_sam(tiny=args.tiny)

    from samtext.models.precision import cpu_has_fast_bf16

    native_bf16 = cpu_has_fast_bf16()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16, n=4096 if native_bf16 else 512)}
    log("matmul peak: fp32 %.0f, bf16 %.0f GFLOP/s (native bf16: %s)" % (peaks["fp32"], peaks["bf16"], native_bf16))
    paths = [
        ("ViT-B plain fp32", build_vit, dict(precision="fp32"), "fp32"),
        ("ViT-B plain bf16 autocast", build_vit, dict(precision="bf16"), "bf16"),
        ("ViT-B fast fp32", build_vit, dict(precision="fp32", fast_encoder=True), "fp32"),
        ("ViT-B fast bf16 weights", build_vit, dict(precision="bf16", fast_encoder=True), "bf16"),
        ("MobileSAM plain fp32", build_mobile, dict(precision="fp32"), "fp32"),
        ("MobileSAM fast fp32", build_mobile, dict(precision="fp32", fast_encoder=True), "fp32"),
        ("MobileSAM plain bf16 autocast", build_mobile, dict(precision="bf16"), "bf16"),
    ]
    if not args.no_compile:
        best = args.compile_precision
        paths.append(("ViT-B fast %s compiled" % best, build_vit,
                      dict(precision=best, fast_encoder=True, compile=True), best))
    reference, flops, rels = {}, {}, {}
    times, rows = {}, []
    for label, build, options, dtype in paths:
        options = dict(options)
        compile_it = options.pop("compile", False)
        arch = label.split()[0]
        torch.manual_seed(0)
        seg = SamSegmenter(build(), device="cpu", name=label, **options)
        if arch not in flops:  # the same for every path of an architecture; counted on plain fp32
            flops[arch] = encoder_flops(seg, images[0])
        # bf16 without native support is emulated and slow (minutes per ViT-B pass): one image, no warm-up
        emulated = dtype == "bf16" and not native_bf16
        sample = images[:1] if emulated else images
        first = None
        if compile_it:
            os.environ["SAMTEXT_COMPILE_ENCODER"] = "always"
            first, _ = timed(seg.embed, images[0])
            log("%s: first call (compiles) %.1f s" % (label, first))
        elif not emulated:
            timed(seg.embed, images[0])  # warm-up
        per_image, rel, peak = [], [], 0.0
        for i, image in enumerate(sample):
            with PeakRSS() as mem:
                seconds, emb = timed(seg.embed, image)
            per_image.append(seconds)
            peak = max(peak, mem.peak)
            if label.endswith("plain fp32"):
                reference[(arch, i)] = emb.features
            ref = reference[(arch, i)]
            rel.append(float((emb.features - ref).norm() / ref.norm()))
        os.environ.pop("SAMTEXT_COMPILE_ENCODER", None)
        median = statistics.median(per_image)
        times[label] = median
        rels[label] = max(rel)
        how = seg.describe_encoder() + (" (bf16 emulated: 1 image)" if emulated else "")
        rows.append([label, how, "%.3f" % median, "%.3f" % min(per_image), "%.4f" % max(rel), "%.0f" % peak,
                     "%.1f" % (flops[arch] / 1e9), "%.2f" % (flops[arch] / median / 1e9 / peaks[dtype]),
                     "%.1f" % first if first else ""])
        log("%s: %.3f s/image (%s), features %.4f from fp32" % (label, median, how, max(rel)))
        del seg
    return rows, times, rels, peaks


def run_action(name, ds, kwargs):
    """``(whole seconds, seconds before the first image (loading the models, encoding the references), summary)``:
    the SDK call timed, with its progress events marking the start of the labelling."""
    import samtext

    call = {"reference": samtext.annotate_by_reference, "text": samtext.annotate_by_text,
            "proposals": samtext.compute_mask_proposals, "examples": samtext.annotate_by_examples}[name]
    args = kwargs.pop("_args", ())
    import gc

    events = []
    gc.collect()
    start = time.perf_counter()
    summary = call(ds, *args, progress=lambda done, total: events.append(time.perf_counter()), **kwargs)
    seconds = time.perf_counter() - start
    return seconds, (events[0] - start if events else 0.0), summary


def end_to_end(args, log):
    """Section 3: each action through the SDK on ``--e2e-images`` pets images, with the default encoder path."""
    import fiftyone as fo

    from samtext.models import clear_model_cache, load_sam
    from samtext.models.mobilesam import build_mobile_sam

    folder = scratch_dir("samtext-bench-encoder-")
    if args.tiny:
        vit = dict(sam_model="tiny")
        mobile = dict(sam_model="tiny-mobile")
        clip = dict(clip_model="tiny")
    else:
        from segment_anything import sam_model_registry

        vit = dict(sam_model="vit_b", sam_checkpoint=random_checkpoint(
            lambda: sam_model_registry["vit_b"](checkpoint=None), folder, "vit_b"))
        mobile = dict(sam_model="mobile_sam", sam_checkpoint=random_checkpoint(build_mobile_sam, folder, "mobile"))
        clip = dict(clip_model="ViT-B-32", clip_pretrained=None)
    stems = pets_stems()[: args.e2e_images + 1]
    ds = fo.Dataset()
    from common import image_path

    samples = []
    for stem in stems:
        s = fo.Sample(filepath=image_path(stem), stem=stem)
        s["ground_truth"] = fo.Segmentation(mask=(load_pet(stem)[1] * 255).astype("uint8"))
        samples.append(s)
    ds.add_samples(samples)
    ref = ds.first()
    targets = ds.exclude([ref.id])
    n = len(targets)
    rows, numbers = [], {}

    def sam_of(model):
        return load_sam(model["sam_model"], model.get("sam_checkpoint"), device="cpu")

    def bare(model):
        seg = sam_of(model)
        images = [load_pet(s)[0] for s in stems[1:]]
        seg.embed(images[0])  # warm-up
        return sum(timed(seg.embed, im)[0] for im in images)

    plans = [
        ("reference", vit, dict(_args=("cat",), reference=ref.id, reference_field="ground_truth")),
        ("reference", mobile, dict(_args=("cat",), reference=ref.id, reference_field="ground_truth")),
        ("text", dict(vit, **clip), dict(_args=("cat",))),
        ("proposals", vit, dict(embedder="sam")),
    ]
    for action, model, options in [p for p in plans if p[0] in args.actions]:
        clear_model_cache()
        field = "%s_%s" % (action, model["sam_model"].replace("-", "_"))
        # rounds of [bare passes, the run] in turn, so that both see the machine in the same state; the totals
        # over the rounds are compared (a shared CPU's encoder speed drifts by 10-30% between minutes)
        encoder_seconds, seconds, setup = 0.0, 0.0, 0.0
        for round_ in range(args.rounds):
            encoder_seconds += bare(model)  # the first round also loads and warms the model the action uses
            run_seconds, run_setup, summary = run_action(action, targets, dict(
                options, out_field=field, device="cpu", overwrite=round_ > 0, **model))
            seconds, setup = seconds + run_seconds, setup + run_setup
        encoder_seconds, seconds, setup = encoder_seconds / args.rounds, seconds / args.rounds, setup / args.rounds
        seg = sam_of(model)
        label = "%s (%s)" % (action, model["sam_model"])
        labelling = seconds - setup  # the images themselves; setup: the references' encoding, once per run
        rows.append([label, seg.describe_encoder(), n, "%.3f" % (labelling / n), "%.3f" % (encoder_seconds / n),
                     "%.2f" % (labelling / encoder_seconds), "%.1f" % setup, "%.2f" % (seconds / encoder_seconds),
                     summary.labelled, summary.failed])
        numbers[label] = (labelling / n, labelling / encoder_seconds)
        log("%s: %.2f s/image (%.1f s once before), %.2fx its encoder passes (%.2fx with the once-per-run part)"
            % (label, labelling / n, setup, labelling / encoder_seconds, seconds / encoder_seconds))
        proposals = targets.first()[field] if action == "proposals" else None
        if proposals is not None and proposals.detections:  # examples: one proposal of the first target
            seconds, setup, summary = run_action("examples", targets, dict(
                _args=({"cat": [proposals.detections[0].id]},), proposals_field=field, out_field="examples"))
            rows.append(["examples (from stored proposals)", "none", n, "%.3f" % ((seconds - setup) / n), "", "",
                         "%.1f" % setup, "", summary.labelled, summary.failed])
            log("examples: %.3f s/image" % (seconds / n))
    clear_model_cache()
    ds.delete()
    return rows, numbers


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3, help="pets images for the encoder paths")
    parser.add_argument("--e2e-images", type=int, default=6, help="target images for each action end to end")
    parser.add_argument("--tiny", action="store_true", help="the tiny models (a smoke test of this script)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled path (minutes on a CPU)")
    parser.add_argument("--compile-precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="the compiled row's precision (auto: bf16 where the CPU has fast bf16)")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-encoders", action="store_true", help="only the actions end to end")
    parser.add_argument("--rounds", type=int, default=1,
                        help="end to end: rounds of [bare encoder passes, the run] in turn, averaged")
    parser.add_argument("--actions", nargs="*", default=["reference", "text", "proposals"],
                        help="the actions to run end to end (examples follows proposals)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "encoder.md"))
    args = parser.parse_args()

    from samtext.models.precision import resolve_precision

    if args.compile_precision == "auto":
        args.compile_precision = resolve_precision("auto", "cpu")
    start, load_start = time.time(), loadavg()

    def log(msg):
        print("[%6.0f s] %s" % (time.time() - start, msg), flush=True)

    images = [load_pet(s)[0] for s in pets_stems()[: args.images]]
    enc_rows, times, fast_rel, peaks = [], {}, {}, {"fp32": 0.0, "bf16": 0.0}
    if not args.skip_encoders:
        enc_rows, times, fast_rel, peaks = encoder_paths(args, images, log)
    e2e_rows, numbers = [], {}
    if not args.skip_e2e:
        os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
        proc, _, uri = start_mongod()
        os.environ["FIFTYONE_DATABASE_URI"] = uri
        try:
            e2e_rows, numbers = end_to_end(args, log)
        finally:
            proc.kill()

    ratios = []
    if times:
        ratios = encoder_ratios(times, fast_rel)
    for label, (per_image, ratio) in numbers.items():
        if label.startswith("reference (vit_b") or label.startswith("reference (tiny)"):
            ratios.append(["reference end to end / its encoder passes", label, ratio])
        if label.startswith("reference (mobile") or label.startswith("reference (tiny-mobile"):
            ratios.append(["MobileSAM reference, s per image", label, per_image])
    ratio_rows = []
    for name, what, value in ratios:
        target = TARGETS.get(name)
        met = "" if target is None else ("yes" if (value <= target[1] if target[0] == "<=" else value >= target[1])
                                         else "**no**")
        ratio_rows.append([name, what, "%.3f" % value, "%s %.3g" % target if target else "", met])
    report(args, start, load_start, peaks, images, enc_rows, e2e_rows, ratio_rows)


def encoder_ratios(times, fast_rel):
    from samtext.models.precision import resolve_precision

    autocast = times["ViT-B plain bf16 autocast"]
    fp32 = times["ViT-B plain fp32"]
    native = resolve_precision("auto", "cpu") == "bf16"
    fast_label = "ViT-B fast %s" % ("bf16 weights" if native else "fp32")
    mobile = min(v for k, v in times.items() if k.startswith("MobileSAM"))
    # samtext's encoder before the fast path, at precision auto: bf16 autocast where the CPU has fast bf16
    before = "ViT-B plain bf16 autocast" if native else "ViT-B plain fp32"
    ratios = [
        ["fast / before", "%s (the default now) / %s (the default before)" % (fast_label, before),
         times[fast_label] / times[before]],
        ["fast / bf16 autocast", "%s / ViT-B plain bf16 autocast" % fast_label, times[fast_label] / autocast],
        ["fast / plain fp32", "%s / ViT-B plain fp32" % fast_label, times[fast_label] / fp32],
        ["fast features vs fp32 (rel. L2)", fast_label, fast_rel[fast_label]],
        ["MobileSAM encoder / ViT-B before", "fastest MobileSAM row / %s" % before, mobile / times[before]],
        ["MobileSAM encoder / ViT-B bf16 autocast", "fastest MobileSAM row / ViT-B plain bf16 autocast",
         mobile / autocast],
    ]
    return ratios


def report(args, start, load_start, peaks, images, enc_rows, e2e_rows, ratio_rows):
    lines = [
        "# The SAM encoder and each action end to end: seconds per image",
        "",
        "Command: `%s`" % command_line(),
        "",
    ] + machine_lines() + ([
        "- matmul peak in this run (fp32 4096^3; bf16 the same where native, else 512^3; best of 3): fp32 %.0f "
        "GFLOP/s, bf16 %.0f GFLOP/s" % (peaks["fp32"], peaks["bf16"]),
        "- every encoder row warmed up once on the first image (a compiled row's first call is its compilation, "
        "shown apart); medians over %d images" % len(images),
    ] if enc_rows else []) + [
        "- load average at start %s, at end %s; total wall time %.0f s" % (load_start, loadavg(), time.time() - start),
        "- random weights; pets images",
        "",
        "## Encoder paths",
        "",
        md_table(["path", "how it runs", "median s/image", "min", "features vs fp32 (max rel. L2)",
                  "peak RSS MiB", "GFLOP per pass", "fraction of matmul peak", "first call s"], enc_rows)
        if enc_rows else "(skipped)",
        "",
        "## Each action end to end (default encoder path, database writes included)",
        "",
        "Per image: from the run's first progress event (models loaded, references encoded) to its end, database "
        "writes included; the part before it is shown apart (once per run), and the whole run's ratio beside it. "
        "Bare encoder passes and runs alternate over %d round(s), averaged." % args.rounds,
        "",
        md_table(["action (SAM)", "encoder", "images", "s/image end to end", "bare encoder s/image",
                  "end to end / encoder", "once per run s", "whole run / encoder", "labelled", "failed"],
                 e2e_rows) if e2e_rows else "(skipped)",
        "",
        "## Ratios and targets",
        "",
        md_table(["ratio", "what", "value", "target", "met"], ratio_rows),
        "",
    ]
    write_report(args.out, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
