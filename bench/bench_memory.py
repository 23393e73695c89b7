"""Peak memory of the full SDK action "Annotate by reference mask" as the number of images grows.

For each N (default 25, 100, 300) a fresh Python process builds a real, non-persistent FiftyOne dataset
of cat_000 (the reference, its mask in ``ground_truth``) plus N other pets images, and runs
``samtext.annotate_by_reference`` on it (SAM "tiny" by default, masks written into the database). It
samples the process's RSS after every image (through the SDK's ``progress`` callback) and reads the
peak (VmHWM, reset with /proc/self/clear_refs just before the action, so dataset building is not in it).
If the SDK streams, the run's peak and the RSS after the first images do not grow with N.

mongod runs in its own process and is not counted. Example::

    .venv/bin/python bench/bench_memory.py --sizes 25 100 300
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from common import (
    REFERENCE_STEM,
    RESULTS,
    command_line,
    image_path,
    loadavg,
    machine_lines,
    md_table,
    pets_stems,
    start_mongod,
    write_report,
)

MIB = 1024.0 * 1024.0


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024.0


def reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(args) -> dict:
    """One measurement in this process; returns the numbers as a dict."""
    for key, value in (("FIFTYONE_DATABASE_VALIDATION", "false"), ("FIFTYONE_DO_NOT_TRACK", "true"),
                       ("FIFTYONE_SHOW_PROGRESS_BARS", "false")):
        os.environ.setdefault(key, value)
    import gc

    import numpy as np
    from PIL import Image

    import fiftyone as fo

    import samtext
    from common import PETS

    stems = pets_stems()
    stems = [stems[i % len(stems)] for i in range(args.n)]  # past the pets images, they repeat
    kwargs = dict(sam_model=args.sam, device="cpu", precision=args.precision, method=args.method,
                  out_field="bench_mask", min_similarity=None if args.gate == "off" else "auto")
    if args.sam != "tiny":  # the real architecture with random weights, through the SDK's checkpoint path
        import torch
        from segment_anything import sam_model_registry

        ckpt = os.path.join(tempfile.mkdtemp(prefix="samtext-bench-"), "random_%s.pth" % args.sam)
        torch.manual_seed(0)
        torch.save(sam_model_registry[args.sam](checkpoint=None).state_dict(), ckpt)
        kwargs["sam_checkpoint"] = ckpt
    if args.method == "stitch" or args.clip_threshold is not None:
        kwargs.update(clip_model=args.clip, clip_pretrained=None, clip_threshold=args.clip_threshold)

    if args.action == "proposals":
        return child_proposals(args, stems, kwargs)
    ds = fo.Dataset()
    mask = np.asarray(Image.open(os.path.join(PETS, "masks", REFERENCE_STEM + ".png")))
    ref = fo.Sample(filepath=image_path(REFERENCE_STEM), ground_truth=fo.Segmentation(mask=mask))
    ref_id = ds.add_samples([ref] + [fo.Sample(filepath=image_path(s)) for s in stems[: args.n]])[0]
    del mask
    gc.collect()

    rss_before = rss_mib()
    peak_reset = reset_peak()
    samples = []  # (done, rss MiB)
    t = time.perf_counter()
    summary = samtext.annotate_by_reference(
        ds, "cat", reference=ref_id, reference_field="ground_truth",
        progress=lambda done, total: samples.append((done, rss_mib())), **kwargs)
    return _result(args, ds, summary, samples, time.perf_counter() - t, rss_before, peak_reset, kwargs)


def child_proposals(args, stems, kwargs) -> dict:
    """The proposals action (SAM embeddings into a temporary store) instead of the reference one."""
    import gc

    import fiftyone as fo

    import samtext

    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=image_path(s)) for s in stems])
    gc.collect()
    store = tempfile.mkdtemp(prefix="samtext-bench-store-")
    options = dict(sam_model=kwargs["sam_model"], device="cpu", precision=args.precision, out_field="bench_mask",
                   embedder="sam", points_per_side=args.points, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                   embeddings_dir=store)
    if "sam_checkpoint" in kwargs:
        options["sam_checkpoint"] = kwargs["sam_checkpoint"]
    rss_before = rss_mib()
    peak_reset = reset_peak()
    samples = []
    t = time.perf_counter()
    summary = samtext.compute_mask_proposals(ds, progress=lambda done, total: samples.append((done, rss_mib())),
                                             **options)
    result = _result(args, ds, summary, samples, time.perf_counter() - t, rss_before, peak_reset, kwargs)
    shutil.rmtree(store, ignore_errors=True)
    return result


def _result(args, ds, summary, samples, seconds, rss_before, peak_reset, kwargs) -> dict:
    written = ds.count("bench_mask")
    if "sam_checkpoint" in kwargs:
        shutil.rmtree(os.path.dirname(kwargs["sam_checkpoint"]), ignore_errors=True)
    k0 = min(args.first, args.n)
    after_first = next(r for d, r in samples if d == k0)
    end = samples[-1][1]
    return {
        "n": args.n,
        "labelled": summary.labelled,
        "failed": summary.failed,
        "written": written,
        "seconds": seconds,
        "rss_before": rss_before,
        "rss_models": next(r for d, r in samples if d == 0),
        "first": k0,
        "rss_after_first": after_first,
        "rss_end": end,
        "rss_max_sampled": max(r for _, r in samples),
        "run_peak": _status_kib("VmHWM") / 1024.0 if peak_reset else None,
        "process_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "growth_per_100": (end - after_first) * 100.0 / (args.n - k0) if args.n > k0 else 0.0,
        "curve": [(d, round(r, 1)) for d, r in samples if d in _curve_points(args.n)],
    }


def _curve_points(n):
    return {0, 1, min(10, n), n // 4, n // 2, 3 * n // 4, n}


def _run_children(args, env, passthrough, results):
    """Runs one fresh child process per N; appends their numbers to ``results``."""
    for n in args.sizes:
        print("N=%d ..." % n, flush=True)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(n)] + passthrough,
                              env=env, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
            raise SystemExit("the child for N=%d failed (exit %d)" % (n, proc.returncode))
        r = json.loads(lines[-1][len("RESULT "):])
        print("  " + json.dumps(r), flush=True)
        results.append(r)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[25, 100, 300], help="images per run")
    p.add_argument("--sam", default="tiny", help="tiny (default) or vit_b (random weights; slow)")
    p.add_argument("--clip", default="tiny", help="CLIP for --method stitch or --clip-threshold (tiny)")
    p.add_argument("--action", default="reference", choices=["reference", "proposals"],
                   help="reference (default): annotate_by_reference; proposals: compute_mask_proposals with SAM "
                        "embeddings (filters off, so every image gets proposals and vectors written)")
    p.add_argument("--points", type=int, default=8, help="proposals: points per side (8)")
    p.add_argument("--method", default="prior", choices=["prior", "stitch"])
    p.add_argument("--clip-threshold", type=float, default=None)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    p.add_argument("--gate", default="off", choices=["off", "auto"],
                   help="off (default): every image gets masks and instances written, the heavier path; the tiny "
                        "random SAM rarely passes the calibrated gate")
    p.add_argument("--first", type=int, default=10, help="growth is measured after this many images (10)")
    p.add_argument("--out", default=None, help="markdown report (default bench/results/memory.md)")
    p.add_argument("--child", type=int, dest="n", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.n is not None:  # one measurement, in a fresh process
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0

    env = dict(os.environ)
    mongod = None
    if "FIFTYONE_DATABASE_URI" not in env:
        # A private mongod: FiftyOne's own database service attaches to any FiftyOne database service
        # already running on the machine, whatever FIFTYONE_DATABASE_DIR says, and another process's
        # cleanup there would delete this benchmark's non-persistent datasets mid-run.
        mongod, db_dir, env["FIFTYONE_DATABASE_URI"] = start_mongod()
    passthrough = ["--sam", args.sam, "--clip", args.clip, "--method", args.method, "--precision",
                   args.precision, "--first", str(args.first), "--gate", args.gate, "--action", args.action,
                   "--points", str(args.points)]
    if args.clip_threshold is not None:
        passthrough += ["--clip-threshold", str(args.clip_threshold)]
    t0, load_start = time.perf_counter(), loadavg()
    results = []
    try:
        _run_children(args, env, passthrough, results)
    finally:
        if mongod is not None:
            mongod.terminate()
            mongod.wait(timeout=60)
            shutil.rmtree(db_dir, ignore_errors=True)

    def mib(x):
        return "" if x is None else "%.0f" % x

    rows = [[r["n"], "%d/%d/%d" % (r["labelled"], r["written"], r["failed"]), "%.1f" % r["seconds"],
             mib(r["rss_before"]), mib(r["rss_models"]), mib(r["rss_after_first"]), mib(r["rss_end"]),
             mib(r["rss_max_sampled"]),
             "**%s**" % mib(r["run_peak"]), mib(r["process_peak"]), "%+.1f" % r["growth_per_100"]]
            for r in results]
    header = ["N images", "labelled/written/failed", "s", "RSS before action", "RSS with models loaded",
              "RSS after first %d" % args.first,
              "RSS at end", "max RSS sampled", "run peak (VmHWM)", "process peak (ru_maxrss)",
              "growth after first %d, MiB/100 images" % args.first]
    peaks = [r["run_peak"] for r in results if r["run_peak"] is not None]
    verdict = ""
    if len(peaks) > 1:
        spread = max(peaks) - min(peaks)
        verdict = ("Run peak spread across N = %s: %.0f MiB (%.1f%% of the smallest peak)."
                   % (", ".join(str(r["n"]) for r in results), spread, 100.0 * spread / min(peaks)))
    title = "Annotate by reference mask" if args.action == "reference" else "Mask proposals"
    out = ["# %s: memory as the number of images grows" % title, "",
           "Command: `%s`" % command_line(), ""]
    out += machine_lines()
    if args.action == "proposals":
        out += ["- SDK call: `samtext.compute_mask_proposals(dataset, sam_model=%r, embedder=\"sam\", "
                "points_per_side=%d, pred_iou_thresh=0, stability_score_thresh=0, precision=%r)` on a non-persistent "
                "FiftyOne dataset of N pets images (repeated past 399), proposals written into the database and "
                "their vectors into a temporary store; one fresh process per N" % (args.sam, args.points,
                                                                                   args.precision)]
    else:
        out += ["- SDK call: `samtext.annotate_by_reference(dataset, \"cat\", reference=cat_000, "
            "reference_field=\"ground_truth\", sam_model=%r, method=%r, precision=%r, min_similarity=%s%s)` on a "
            "non-persistent FiftyOne dataset of cat_000 + N pets images (masks and instances written into the "
            "database); one fresh process per N"
            % (args.sam, args.method, args.precision, "None" if args.gate == "off" else "'auto'",
               ", clip_threshold=%s" % args.clip_threshold if args.clip_threshold is not None else "")]
    out += ["- RSS of the Python process in MiB (mongod not counted). \"RSS before action\": after imports and "
            "dataset building; \"with models loaded\": when the action has built its models, before the "
            "first image. \"run peak\": VmHWM reset just before the action, so model loading is in it "
            "and dataset building is not. RSS sampled after every image through the `progress` callback.",
            "- Load average at start: %s, at end: %s; total wall time %.0f s" % (load_start, loadavg(),
                                                                              time.perf_counter() - t0),
            "", md_table(header, rows), ""]
    if verdict:
        out += [verdict, ""]
    out += ["RSS curve (images done, MiB):", ""]
    out += ["- N=%d: %s" % (r["n"], ", ".join("%d: %.0f" % (d, v) for d, v in r["curve"])) for r in results]
    text = "\n".join(out) + "\n"
    print("\n" + text)
    default = "memory.md" if args.action == "reference" else "memory_proposals.md"
    write_report(args.out or os.path.join(RESULTS, default), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
