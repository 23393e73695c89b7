"""The README's quickstart, offline: `python -m samtext demo --tiny` builds the demo dataset and labels it."""

import os
import shlex
import subprocess
import sys

import numpy as np

from conftest import ROOT

NAME = "samtext-demo-test"


def test_demo_tiny_labels_every_target(db):
    import fiftyone as fo

    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-m", "samtext", "demo", "--tiny", "--name", NAME],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Labelled 4 of 4 images into 'cat_mask'" in out.stdout
    assert "fo.launch_app" in out.stdout
    # the printed App command names the plugins folder, and FiftyOne finds samtext's operators there
    command = next(line for line in out.stdout.splitlines() if "fo.launch_app" in line and "FIFTYONE_PLUGINS_DIR" in line)
    plugins_dir = shlex.split(command)[0].split("=", 1)[1]
    cli = os.path.join(os.path.dirname(sys.executable), "fiftyone")
    listed = subprocess.run([cli, "plugins", "list"], capture_output=True,
                            text=True, env=dict(env, FIFTYONE_PLUGINS_DIR=plugins_dir), timeout=300)
    assert "@samtext/samtext" in listed.stdout, listed.stdout + listed.stderr
    operators = subprocess.run([cli, "operators", "list"], capture_output=True,
                               text=True, env=dict(env, FIFTYONE_PLUGINS_DIR=plugins_dir), timeout=300)
    assert "@samtext/samtext/annotate_by_reference_mask" in operators.stdout, operators.stdout + operators.stderr
    ds = fo.load_dataset(NAME)
    try:
        assert ds.mask_targets["cat_mask"] == {1: "cat"}
        reference = ds.match_tags("reference").first()
        assert reference.cat_mask is None  # the reference keeps only its own mask
        for sample in ds.match_tags("reference", bool=False):
            mask = sample.cat_mask.get_mask()
            assert mask.shape == (sample.metadata.height, sample.metadata.width)
            assert set(np.unique(mask)) <= {0, 1}
            assert {k.label for k in sample.cat_mask_prompts.keypoints} == {"positive", "negative"}
    finally:
        ds.delete()


def test_demo_reference_mask_is_shipped_and_covers_the_cat():
    from PIL import Image

    from samtext.demo import REFERENCE_MASK

    mask = np.asarray(Image.open(REFERENCE_MASK)) > 0
    assert mask.shape == (300, 451)  # skimage.data.chelsea()
    assert 0.6 < mask.mean() < 0.9
    assert mask[150, 200] and not mask[100, 440]  # the cat's face in, the background on the right out


def test_download_weights_offline_names_file_and_place(tmp_path, monkeypatch, offline_hf_hub):
    import urllib.error
    import urllib.request

    import pytest

    from samtext.models.weights import WeightsUnavailableError

    monkeypatch.setenv("SAMTEXT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FIFTYONE_MODEL_ZOO_DIR", str(tmp_path / "zoo"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    from samtext.download import download_weights

    with pytest.raises(WeightsUnavailableError) as err:
        download_weights(["vit_b"], [])
    msg = str(err.value)
    assert "sam_vit_b_01ec64.pth" in msg and "dl.fbaipublicfiles.com" in msg and str(tmp_path) in msg
    assert not list(tmp_path.rglob("*.part"))
    # SAM 2.1 / SAM 3 come from Hugging Face: offline, the message names the repository and FiftyOne's zoo file
    with pytest.raises(WeightsUnavailableError, match=r"model zoo \(sam3.pt\)\. Run `hf download facebook/sam3"):
        download_weights(["sam3"], [])


def test_demo_without_internet_says_what_is_missing_in_one_line(db, tmp_path):
    """No traceback: one line naming the file, where to get it, where to put it, and the parameter."""
    import fiftyone as fo

    name = "samtext-demo-offline-test"
    env = dict(os.environ, SAMTEXT_CACHE_DIR=str(tmp_path / "cache"), FIFTYONE_MODEL_ZOO_DIR=str(tmp_path / "zoo"),
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9")  # a closed port: any download fails at once
    env.pop("SAMTEXT_SAM_VIT_B_CHECKPOINT", None)
    out = subprocess.run([sys.executable, "-m", "samtext", "demo", "--name", name], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("samtext: error:")]
    assert len(errors) == 1, out.stderr
    line = errors[0]
    for part in ("sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
                 str(tmp_path / "cache" / "sam"), "sam_checkpoint=", "--sam-checkpoint", "SAMTEXT_SAM_VIT_B_CHECKPOINT"):
        assert part in line, (part, line)
    assert not fo.dataset_exists(name)  # nothing was built before the weights were found missing
