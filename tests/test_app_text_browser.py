"""The "Annotate by text" form in the real FiftyOne App (headless Chromium, Playwright, the App server on
localhost with this test's database and plugin folder): the App lists the operator and renders its form, the form
checks the prompts as they are typed and changes with the localizer, and a run started from it writes a
multi-class mask."""

import os
import types

import numpy as np
import pytest
from PIL import Image

import _app
from conftest import app_pets_dataset, pets_stems

pytestmark = pytest.mark.browser

OPERATOR_LABEL = "samtext: Annotate by text"
FORM_LABELS = (
    "Prompts", "Negative prompts (optional)", "How it is found", "Output field", "Overwrite existing labels",
    "Save instances", "Save prompt points", "Threshold", "Region threshold (optional)",
    "Most objects per class and image",
    "Selective search", "Regions CLIP scores per image", "SAM model", "CLIP model", "CLIP weights", "Device",
    "Precision", "Split into delegated runs",
)
PATCHES = "Sliding patches + Grad-CAM: small objects (a car blinker)"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    ds = app_pets_dataset("samtext-text-browser", pets_stems(animal="cat", n=2) + pets_stems(animal="dog", n=1))
    with _app.app_session(ds, str(tmp_path_factory.mktemp("app"))) as (server, page):
        yield types.SimpleNamespace(ds=ds, server=server, page=page,
                                    dataset_url="%s/datasets/%s" % (server.url, ds.name))


def test_text_form_checks_prompts_and_runs(app, tmp_path):
    page = app.page
    expect = _app.expect()
    page.goto(app.dataset_url)
    expect(page.locator('[data-cy="looker"]')).to_have_count(3, timeout=60_000)

    form = _app.open_operator_from_browser(page, OPERATOR_LABEL, "by text")
    expect(form.dialog.get_by_text("Annotate by text", exact=True)).to_be_visible()
    for label in FORM_LABELS:
        expect(form.label(label)).to_have_count(1)
    expect(form.input("Output field")).to_have_value("samtext_text")
    expect(form.execute_button).to_be_disabled()  # prompts are required

    # prompts that are only separators are refused as they are typed, with the SDK's message
    form.fill("Prompts", " ; ; ")
    expect(form.dialog.get_by_text("only separators", exact=False)).to_be_visible()
    form.fill("Prompts", "cat; dog")
    expect(form.dialog.get_by_text("2 classes: cat, dog", exact=True)).to_be_visible()
    expect(form.dialog.get_by_text("only separators", exact=False)).to_have_count(0)

    # the patch localizer swaps selective search's options for its own
    form.radio(PATCHES)
    expect(form.label("Patches explained by Grad-CAM per class")).to_have_count(1)
    expect(form.label("Selective search")).to_have_count(0)
    form.radio("Region proposals (selective search) ranked by CLIP: objects of any size")
    expect(form.label("Selective search")).to_have_count(1)

    form.choose("SAM model", "Tiny random SAM")
    form.fill("CLIP model", "tiny")
    form.fill("Threshold", "0")
    form.fill("Output field", "text_browser")
    expect(form.execute_button).to_be_enabled()

    # the filled-in form, whole (the README's picture: SAMTEXT_SCREENSHOTS_DIR=docs/images)
    shots = os.environ.get("SAMTEXT_SCREENSHOTS_DIR") or str(tmp_path)
    page.set_viewport_size({"width": 1400, "height": 1900})
    expect(form.execute_button).to_be_enabled()
    form.scroll_to_top()
    _app.stable_screenshot(form.dialog)
    box = form.dialog.bounding_box()
    page.screenshot(path=os.path.join(shots, "text_form.png"),
                    clip=dict(x=box["x"] - 8, y=max(0, box["y"] - 8), width=box["width"] + 16,
                              height=box["height"] + 16))
    page.set_viewport_size({"width": 1400, "height": 900})
    expect(form.execute_button).to_be_enabled()
    form.execute_button.click()
    note = _app.wait_for_run(page, app.server, r"samtext: labelled \d+ images into text_browser\b")
    assert "labelled 3 images" in note and "0 failed" in note, note
    _app.close_run(page)

    ds = app.ds
    ds.reload()
    assert ds.mask_targets["text_browser"] == {1: "cat", 2: "dog"}
    for sample in ds.select_fields("text_browser"):
        mask = sample["text_browser"].get_mask()
        assert set(np.unique(mask)) <= {0, 1, 2} and Image.open(sample.filepath).size == mask.shape[::-1]
    expect(page.locator('[data-cy="sidebar-field-text_browser"]')).to_be_visible()
