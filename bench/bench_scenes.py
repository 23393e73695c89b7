"""One-shot quality on synthetic scenes with known answers (tests/scenes.py, tests/doubles.py).

Scenes: 0-3 instances of the target kind, 0-2 look-alikes (features half-way to the target's, CLIP 0.4 of its
score), 0-2 of each other kind, rectangles, discs, thin bars (5-7 px, thinner than a feature cell), rings and
L-shapes, feature noise. The reference is one more scene with exactly one target among distractors (one of
them a look-alike). For each configuration, over the same scenes, it reports:

- instance recall: ground-truth instances matched by a predicted instance at IoU >= 0.5;
- precision: predicted instances that match one;
- absent -> empty: images without the target whose result is empty;
- present kept: images with the target whose result is not empty;
- points on object: positive prompt points that land on a target instance (images with the target).

The "before" row reproduces what an earlier issue measured: prior without a gate and with one instance per
image (the old behaviour). "stitch, no gate, no narrowing" shows what the gate and the narrowing bring to stitch.

    .venv/bin/python bench/bench_scenes.py            # bench/results/scenes.md (about 3 minutes)
"""

import argparse
import os
import sys
import time

from common import RESULTS, ROOT, command_line, md_table, write_report

sys.path.insert(0, os.path.join(ROOT, "tests"))

from doubles import BLUE, CYAN, LOOKALIKE_FEATURES, ORANGE, RED, FakeClip, FakeSegmenter  # noqa: E402
from scenes import QUALITY_HEADER, quality_rows, reference_scene  # noqa: E402

from samtext.pipelines.reference import ClipCheck, PriorMatcher, Reference, StitchMatcher  # noqa: E402

TARGETS = {"red (look-alike orange)": (RED, ORANGE, 12345), "blue (look-alike cyan)": (BLUE, CYAN, 99)}


def configs(seg, clip, ref):
    check = ClipCheck(clip, "cat", 0.5, [ref])
    return [
        ("prior, before: no gate, 1 instance", lambda: PriorMatcher(seg, [ref], min_similarity=None, max_instances=1)),
        ("**prior** (defaults)", lambda: PriorMatcher(seg, [ref])),
        ("prior + CLIP check", lambda: PriorMatcher(seg, [ref], clip_check=check)),
        ("stitch, no gate, no narrowing",
         lambda: StitchMatcher(seg, clip, [ref], "cat", min_similarity=None, window_ratio=0.0, refine_levels=0)),
        ("stitch, no CLIP check", lambda: StitchMatcher(seg, clip, [ref], "cat")),
        ("**stitch** (defaults: CLIP check 0.5)", lambda: StitchMatcher(seg, clip, [ref], "cat", clip_check=check)),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--out", default=os.path.join(RESULTS, "scenes.md"))
    args = p.parse_args()
    start = time.time()
    lines = ["# One-shot on synthetic scenes (test doubles)", "", "Command: `%s`" % command_line(), "",
             " ".join(__doc__.split("\n\n")[1].split()), ""] + [
                 "- " + " ".join(item.split()).lstrip("- ") for item in __doc__.split("\n\n")[2].strip().split("\n- ")] + [""]
    for name, (target, lookalike, seed) in TARGETS.items():
        ref = Reference(*reference_scene(seed, target=target, lookalike=lookalike))
        seg = FakeSegmenter(features=LOOKALIKE_FEATURES, noise=0.35)
        clip = FakeClip({"cat": target})
        rows = quality_rows(configs(seg, clip, ref), args.scenes, target, lookalike, name)
        lines += ["## Target %s" % name, "", md_table(QUALITY_HEADER, rows), ""]
    lines += ["Wall time %.0f s." % (time.time() - start), ""]
    write_report(args.out, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
