"""Text-prompt quality on synthetic scenes with known answers (tests/scenes.py, tests/doubles.py).

The scenes of bench_scenes.py: 0-3 instances of the target kind, 0-2 look-alikes, 0-2 of each other kind, in
rectangles, discs, thin bars, rings and L-shapes. The CLIP double reads the prompt "target thing" as the target's
colour with 0.4 of its look-alike's (so look-alikes score part-way), and scores a crop by its colours; the SAM double
returns the regions a prompt covers. For each configuration, over the same scenes: instance recall and precision
(IoU >= 0.5), images without the target that come out empty, images with it that do not, and positive prompt points
that land on a target instance. The negative-prompt rows name the look-alike ("lookalike thing", which the double
reads as the look-alike's colour).

"seed's way" is SAMtext's notebook 01 (SEED-ANALYSIS.md §1.2) on the same selective-search boxes: the first 50 in
the library's order whose box has at least 1000 px and an aspect ratio of at most 1.5, the raw cosine with the
caption, NMS at 0.1, the top box's centre as one point, SAM's best mask (the seed picked none of its three). There is
no absent decision: it always labels something.

    .venv/bin/python bench/bench_text_scenes.py            # bench/results/text_scenes.md (about 2 minutes)
"""

import argparse
import os
import sys
import time

import numpy as np

from common import RESULTS, ROOT, command_line, md_table, write_report

sys.path.insert(0, os.path.join(ROOT, "tests"))

from doubles import BLUE, CYAN, ORANGE, RED, FakeSegmenter, TextClip  # noqa: E402
from scenes import QUALITY_HEADER, quality_rows  # noqa: E402

from samtext.pipelines.result import Instance, MaskResult  # noqa: E402
from samtext.pipelines.text import TextLabeller, TextSettings, box_nms  # noqa: E402
from samtext.pipelines.text_boxes import BoxLocalizer, selective_search  # noqa: E402
from samtext.pipelines.text_patches import PatchLocalizer  # noqa: E402

PROMPT = "target thing"  # the CLIP double reads the word "target" as the target colour of each table
TARGETS = {"red (look-alike orange)": (RED, ORANGE), "blue (look-alike cyan)": (BLUE, CYAN)}


class SeedText:
    """The seed's notebook 01 after the encoder (see the module docstring)."""

    def __init__(self, segmenter, clip):
        self.segmenter, self.clip = segmenter, clip
        self.text = clip.encode_texts(["the " + PROMPT])

    def __call__(self, image):
        emb = self.segmenter.embed(image)
        boxes = selective_search(image, "fast")
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = boxes[(w * h >= 1000) & (w <= 1.5 * h) & (h <= 1.5 * w)][:50]
        if not len(boxes):
            return MaskResult.empty(image.shape[:2], "no box passed the seed's filters")
        scores = (self.clip.encode_images([image[y1:y2, x1:x2] for x1, y1, x2, y2 in boxes]) @ self.text[0]).numpy()
        x1, y1, x2, y2 = boxes[box_nms(boxes.astype(np.float32), scores, 0.1)[0]]
        point = np.array([[(x1 + x2) / 2, (y1 + y2) / 2]], np.float32)
        pred = self.segmenter.predict(emb, point[None], np.array([[1]]), multimask=True)
        best = int(pred.scores[0].argmax())
        return MaskResult(image.shape[:2], [Instance(pred.masks[0, best], float(pred.scores[0, best]))], point,
                          np.array([1]))


def configs(target, lookalike):
    clip = TextClip({"target": {tuple(target): 1.0, tuple(lookalike): 0.4}, "lookalike": [lookalike]})

    def ours(kind, negatives=(), **settings):
        s = TextSettings(**settings)
        where = BoxLocalizer(clip, s) if kind == "boxes" else PatchLocalizer(clip, s)
        return TextLabeller(FakeSegmenter(box_regions=True, box_margin=3), clip, [PROMPT], where, negatives, s)

    return [
        ("text, seed's way: first 50 boxes, top-1 centre point, no threshold",
         lambda: SeedText(FakeSegmenter(), clip)),
        ("**text, boxes** (defaults)", lambda: ours("boxes")),
        ("text, boxes, region threshold 0.5", lambda: ours("boxes", region_threshold=0.5)),
        ("text, boxes + the negative prompt \"lookalike thing\"", lambda: ours("boxes", ["lookalike thing"])),
        ("**text, patches + CAM** (defaults)", lambda: ours("patches")),
        ("text, patches + CAM + the negative prompt", lambda: ours("patches", ["lookalike thing"])),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--out", default=os.path.join(RESULTS, "text_scenes.md"))
    args = p.parse_args()
    start = time.time()
    lines = ["# Annotate by text on synthetic scenes (test doubles)", "", "Command: `%s`" % command_line(), "",
             " ".join(__doc__.split("\n\n")[1].split()), "", " ".join(__doc__.split("\n\n")[2].split()), ""]
    for name, (target, lookalike) in TARGETS.items():
        rows = quality_rows(configs(target, lookalike), args.scenes, target, lookalike, name)
        lines += ["## Target %s" % name, "", md_table(QUALITY_HEADER, rows), ""]
    lines += ["Wall time %.0f s." % (time.time() - start), ""]
    write_report(args.out, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
