"""A stand-in for pseudo-labels on the pets ``unlabeled`` split: the ground truth with the errors a one-shot
labeller makes, seeded, as ``<stem>.png`` files (255 = cat) for ``bench_train.py --pseudo-dir``.

Real pseudo-labels need SAM's pretrained weights, which this machine cannot download; this folder lets the
benchmark report "pseudo-labels as a fraction of ground truth" here, and shows how much such noise costs. The
errors, drawn per image:

- boundaries off by a few pixels: each cat mask eroded or dilated by 2-8 px;
- missed objects: ``--miss`` of the cats get an empty mask;
- look-alikes labelled: ``--false-positive`` of the dogs get their dog mask as "cat";
- parts: ``--partial`` of the cats keep only the half of the mask on one side.

    .venv/bin/python bench/noisy_pseudo_labels.py /tmp/pets_noisy
    .venv/bin/python bench/bench_train.py --pseudo-dir /tmp/pets_noisy
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


def noisy(mask: np.ndarray, is_cat: bool, rng: np.random.Generator, args) -> np.ndarray:
    """One image's stand-in pseudo-label ``(H, W)`` bool from its ground truth ``mask`` (the animal)."""
    if not is_cat:
        return mask.copy() if rng.random() < args.false_positive else np.zeros_like(mask)
    if rng.random() < args.miss:
        return np.zeros_like(mask)
    radius = int(rng.integers(2, 9))
    grow = ndimage.binary_dilation if rng.random() < 0.5 else ndimage.binary_erosion
    out = grow(mask, structure=np.ones((3, 3), bool), iterations=radius)
    if rng.random() < args.partial:
        cols = np.nonzero(out.any(0))[0]
        if len(cols):
            cut = (cols[0] + cols[-1]) // 2
            out[:, cut:] = False
    return out


def main():
    from conftest import PETS, pets_stems

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the folder to write")
    p.add_argument("--miss", type=float, default=0.1)
    p.add_argument("--false-positive", type=float, default=0.1)
    p.add_argument("--partial", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    for stem in pets_stems("unlabeled"):
        mask = np.asarray(Image.open(os.path.join(PETS, "masks", stem + ".png"))) == 255
        out = noisy(mask, stem.startswith("cat"), rng, args)
        Image.fromarray(out.astype(np.uint8) * 255).save(os.path.join(args.out, stem + ".png"))
    print("wrote %d masks to %s" % (len(pets_stems("unlabeled")), args.out))


if __name__ == "__main__":
    main()
