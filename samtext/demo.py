"""A small demo dataset built from scikit-image's bundled photos, with a shipped reference mask.

``chelsea`` (a cat) is the reference; its mask is the polygon in ``samtext/assets/chelsea_mask.png``.
The targets are a mirrored and rescaled crop of the same cat (a positive) and photos with no cat
(``coffee``, ``rocket``, ``astronaut``), which should come out empty.
"""

import os

import numpy as np
from PIL import Image

REFERENCE_MASK = os.path.join(os.path.dirname(__file__), "assets", "chelsea_mask.png")
MASK_FIELD = "reference_mask"
NEGATIVES = ("coffee", "rocket", "astronaut")


def _write_images(folder: str):
    import skimage.data

    os.makedirs(folder, exist_ok=True)
    cat = skimage.data.chelsea()
    images = {"chelsea": cat}
    flipped = Image.fromarray(cat[:, ::-1][20:, 30:])
    images["chelsea_mirrored"] = np.asarray(flipped.resize((flipped.width * 4 // 3, flipped.height * 4 // 3)))
    for name in NEGATIVES:
        images[name] = getattr(skimage.data, name)()
    paths = {}
    for name, arr in images.items():
        paths[name] = os.path.join(folder, name + ".jpg")
        if not os.path.isfile(paths[name]):
            Image.fromarray(arr).convert("RGB").save(paths[name], quality=95)
    return paths


def make_demo_dataset(name: str = "samtext-demo", folder: str = None, overwrite: bool = True):
    """Creates the persistent dataset ``name``: five photos, the reference ``chelsea`` carrying its
    mask in the ``reference_mask`` field (``fo.Segmentation``, mask_targets ``{255: "cat"}``).

    Returns:
        the ``fo.Dataset``; its reference sample is ``dataset.match_tags("reference").first()``.
    """
    import fiftyone as fo

    folder = folder or os.path.join(fo.config.default_dataset_dir, name)
    paths = _write_images(folder)
    if fo.dataset_exists(name):
        if not overwrite:
            return fo.load_dataset(name)
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    samples = []
    for key, path in paths.items():
        sample = fo.Sample(filepath=path, tags=["reference"] if key == "chelsea" else [])
        if key == "chelsea":
            sample[MASK_FIELD] = fo.Segmentation(mask=np.asarray(Image.open(REFERENCE_MASK)))
        samples.append(sample)
    dataset.add_samples(samples)
    dataset.mask_targets = {MASK_FIELD: {255: "cat"}}
    dataset.save()
    dataset.compute_metadata()
    return dataset
