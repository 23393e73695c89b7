"""SAM 1, SAM 2.1 and SAM 3 side by side on this machine: each model's image encoder and each action's time per image.

The real architectures with random weights (a forward pass costs the same; the masks are meaningless), in one
process, on the same pets photos, each model warmed up once. Rows:

- ``encoder``: the bare image encoder pass (``embed``);
- ``reference (prior)``: one-shot at the defaults, gate off, from the image (encoder included);
- ``text (boxes)``: selective search + CLIP ViT-B-32 (random) + the model's decoder, from the image;
- ``text (sam3 concepts)``: SAM 3's detector with the prompt (its own encoder: vision + text + DETR);
- ``one-shot (sam3 canvas)``: SAM 3 on a reference + target canvas.

Ratios are to ViT-B's encoder pass in the same run (machines differ; ratios travel).

    .venv/bin/python bench/bench_models.py --images 2
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS, command_line, load_pet, loadavg, machine_lines, md_table, pets_stems, timed, \
    write_report  # noqa: E402

MODELS = ("vit_b", "sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large", "sam3")


def random_segmenter(name: str, precision: str):
    """The model's adapter with random weights (no download)."""
    from samtext.models import SamSegmenter
    from samtext.models.hf_sam import FAMILIES, HfSamSegmenter
    from samtext.models.registry import sam_spec

    spec = sam_spec(name)
    model = spec.build()
    if spec.family in FAMILIES:
        return HfSamSegmenter(model, FAMILIES[spec.family], precision=precision, name=name)
    return SamSegmenter(model, precision=precision, name=name, fast_encoder=True)


def random_concepts(precision: str):
    from transformers import Sam3Config, Sam3Model

    from samtext.models.sam3_concepts import Sam3Concepts, clip_tokenizer_offline

    return Sam3Concepts(Sam3Model(Sam3Config()).eval(), clip_tokenizer_offline(), precision=precision, name="sam3")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--out", default=os.path.join(RESULTS, "models.md"))
    args = p.parse_args()

    import torch

    from samtext.models import load_clip
    from samtext.models.precision import resolve_precision
    from samtext.pipelines.reference import PriorMatcher, Reference
    from samtext.pipelines.reference_sam3 import ConceptMatcher
    from samtext.pipelines.text import TextLabeller, TextSettings
    from samtext.pipelines.text_boxes import BoxLocalizer
    from samtext.pipelines.text_sam3 import ConceptLabeller

    torch.manual_seed(0)
    precision = resolve_precision(args.precision, "cpu")
    start_load = loadavg()
    ref_image, ref_mask = load_pet("cat_000")
    reference = Reference(ref_image, ref_mask)
    stems = pets_stems()[: args.images]
    images = [load_pet(stem)[0] for stem in stems]
    clip = load_clip("ViT-B-32", None, "cpu", precision)
    settings = TextSettings()
    rows, base = [], None

    def measure(model, what, fn):
        nonlocal base
        fn(images[0])  # warm-up
        times = [timed(fn, image)[0] for image in images]
        median = statistics.median(times)
        if what == "encoder" and model == "vit_b":
            base = median
        rows.append([model, what, "%.2f" % median, "%.2f" % (median / base) if base else "",
                     " / ".join("%.2f" % t for t in times)])
        print("%-24s %-28s %6.2f s" % (model, what, median), flush=True)

    for name in args.models:
        seg = random_segmenter(name, precision)
        params = sum(p.numel() for p in (seg.model if hasattr(seg, "model") else seg.sam).parameters()) / 1e6
        measure(name, "encoder", seg.embed)
        rows[-1][0] = "%s (%.0f M params, %d px)" % (name, params, seg.image_size)
        prior = PriorMatcher(seg, [reference], min_similarity=None)
        measure(name, "reference (prior, gate off)", prior)
        text = TextLabeller(seg, clip, ["cat"], BoxLocalizer(clip, settings), [], settings)
        measure(name, "text (boxes)", text)
        del seg, prior, text
        if name == "sam3":
            concepts = random_concepts(precision)
            measure(name, "text (sam3 concepts)",
                    ConceptLabeller(concepts, ["cat"], [], TextSettings(localizer="sam3", sam_model="sam3")))
            measure(name, "one-shot (sam3 canvas)", ConceptMatcher(concepts, [reference], "cat"))
            del concepts

    lines = ["# SAM 1, SAM 2.1 and SAM 3 on this machine: seconds per image", "",
             "Command: `%s`" % command_line(), ""] + machine_lines() + [
        "- precision: %s; random weights (a forward pass costs the same); images: %s (pets, about 500x375)"
        % (precision, ", ".join(stems)),
        "- load average at start: %s; at end: %s" % (start_load, loadavg()),
        "- ratio: to SAM ViT-B's encoder pass (samtext's fast encoder path) in this run", "",
        md_table(["model", "what", "s per image (median)", "x ViT-B encoder", "per image"], rows), ""]
    write_report(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
