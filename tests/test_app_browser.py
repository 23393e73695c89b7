"""The operator in the real FiftyOne App: headless Chromium, driven by Playwright, against the App server
(``python -m fiftyone.server.main``) started on localhost with this test's database and plugin folder.

It proves that the App lists "samtext: Annotate by reference mask" and renders its form, and that a run
started from the form (a mask field, or an uploaded mask image) writes masks that the App then shows.

Screenshots go to $SAMTEXT_SCREENSHOTS_DIR (default: a temporary folder). The README's images are made by::

    SAMTEXT_SCREENSHOTS_DIR=docs/images bash scripts/test.sh tests/test_app_browser.py
"""

import base64
import os
import types

import numpy as np
import pytest
from PIL import Image

import _app
from conftest import PETS, PLUGIN_NAME, app_pets_dataset, pets_stems

pytestmark = pytest.mark.browser

OPERATOR_LABEL = "samtext: Annotate by reference mask"
OPERATOR_NAME = "annotate_by_reference_mask"
N_SAMPLES = 5  # one reference, four images to label
TINY_SAM = "Tiny random SAM"
FORM_LABELS = (
    "Class name", "Reference mask", "Reference sample ID", "Mask field", "Class value in the mask (optional)",
    "Method", "Output field", "Overwrite existing labels", "Save instances", "Save prompt points",
    "Absent-object gate", "CLIP check", "Refine", "Most objects per image", "SAM model", "Device", "Precision",
    "Split into delegated runs",
)
GATE_OFF = "Off (always label the best match)"  # the tiny random SAM's masks rarely pass the calibrated gate


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    path = os.environ.get("SAMTEXT_SCREENSHOTS_DIR") or str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A persistent pets dataset (the App server is another process), the App server, and a browser page."""
    ds = app_pets_dataset("samtext-browser", pets_stems(animal="cat", n=N_SAMPLES))
    with _app.app_session(ds, str(tmp_path_factory.mktemp("app"))) as (server, page):
        yield types.SimpleNamespace(
            ds=ds, ids=ds.values("id"), stems=ds.values("stem"), server=server, page=page,
            dataset_url="%s/datasets/%s" % (server.url, ds.name),
        )


def open_dataset(app):
    page = app.page
    page.goto(app.dataset_url)
    _app.expect()(page.locator('[data-cy="looker"]')).to_have_count(N_SAMPLES, timeout=60_000)
    return page


def grid_button(page, operator=OPERATOR_NAME):
    """An operator's button among the grid actions (``resolve_placement``), shown with its own icon."""
    return page.locator('[data-itemid="grid-actions-row"] [data-item-id="%s/%s"] img[src$="/assets/%s.svg"]'
                        % (PLUGIN_NAME, operator, operator))


def set_field_shown(page, field, shown):
    box = page.locator('[data-cy="checkbox-%s"]' % field)
    if box.locator("input").is_checked() != shown:
        box.click()
    _app.expect()(box.locator("input")).to_be_checked(checked=shown)


def fill_common(form, reference_id, out_field):
    form.fill("Class name", "cat")
    form.fill("Reference sample ID", reference_id)
    form.choose("SAM model", TINY_SAM)
    form.fill("Output field", out_field)
    form.radio(GATE_OFF)


def check_masks(app, out_field, reference_id):
    ds = app.ds
    ds.reload()  # the App server added fields; this process's schema is stale
    assert ds.count(out_field) == N_SAMPLES - 1
    assert ds.count(out_field + "_prompts") == N_SAMPLES - 1
    assert ds[reference_id][out_field] is None, "the reference sample must not be relabelled"
    assert ds.mask_targets.get(out_field) == {1: "cat"}
    for sample in ds.exists(out_field).select_fields(out_field):
        mask = sample[out_field].get_mask()
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert Image.open(sample.filepath).size == mask.shape[::-1]


def test_app_lists_the_operator_and_renders_its_form(app):
    page = open_dataset(app)
    expect = _app.expect()
    expect(grid_button(page)).to_be_visible()
    expect(grid_button(page, "compute_mask_proposals")).to_have_count(1)

    # The Operator Browser (the ` key) lists the operator under its label and name.
    box = page.get_by_placeholder("Search operations by name...")
    page.locator("body").press("`")
    box.fill("samtext")
    expect(page.get_by_text(OPERATOR_LABEL, exact=True)).to_be_visible()
    expect(page.get_by_text(OPERATOR_NAME, exact=True)).to_be_visible()
    page.get_by_text(OPERATOR_LABEL, exact=True).click()

    form = _app.OperatorPrompt(page).wait()
    expect(form.dialog.get_by_text("Annotate by reference mask", exact=True)).to_be_visible()
    for label in FORM_LABELS:
        expect(form.label(label)).to_have_count(1)
    assert form.options("Mask field") == ["ground_truth"]
    assert any(o.startswith(TINY_SAM) for o in form.options("SAM model"))
    assert form.selected_value("SAM model") == "vit_b"
    expect(form.input("Output field")).to_have_value("samtext_reference")
    expect(form.execute_button).to_be_disabled()  # class name, reference and mask field are required

    # The form is dynamic: an upload replaces the mask field; "stitch" swaps the prior's options for its own.
    form.radio("Upload a mask image")
    expect(form.dialog.locator('input[type="file"]')).to_have_count(1)
    expect(form.label("Mask field")).to_have_count(0)
    form.radio("Stitch (reference beside target, CLIP points; the seed's method, fixed)")
    expect(form.label("Prompt sets")).to_have_count(1)
    expect(form.label("CLIP model")).to_have_count(1)
    expect(form.label("Refine")).to_have_count(0)
    # a gate of my own asks for its value
    form.radio("A similarity I choose")
    expect(form.label("Minimum similarity")).to_have_count(1)
    form.cancel()

    # With a sample open, the form offers that sample as the reference.
    page.locator('[data-cy="looker"]').first.click()
    page.locator('[data-cy="modal"]').wait_for()
    form = _app.open_operator_from_browser(page, OPERATOR_LABEL, "reference mask")
    expect(form.input("Reference sample ID")).to_have_value(app.ids[0])
    form.cancel()


def test_run_from_the_app_writes_masks_that_the_app_shows(app, screenshots):
    page = open_dataset(app)
    expect = _app.expect()
    reference_id, out_field = app.ids[0], "samtext_browser"

    grid_button(page).click()
    form = _app.OperatorPrompt(page).wait()
    fill_common(form, reference_id, out_field)
    form.choose("Mask field", "ground_truth")
    assert form.selected_value("Mask field") == "ground_truth"
    assert form.selected_value("SAM model") == "tiny"
    expect(form.input("Output field")).to_have_value(out_field)

    # The filled-in form, whole: a viewport tall enough for the dialog to show every field, once the form has
    # settled (a resize makes the App resolve it again).
    page.set_viewport_size({"width": 1400, "height": 1640})
    expect(form.execute_button).to_be_enabled()
    expect(form.dialog.get_by_text("Required property")).to_have_count(0)
    form.scroll_to_top()
    _app.stable_screenshot(form.dialog)
    box = form.dialog.bounding_box()
    page.screenshot(path=os.path.join(screenshots, "app_form.png"),
                    clip=dict(x=0, y=0, width=1400, height=box["y"] + box["height"] + 24))
    page.set_viewport_size({"width": 1400, "height": 900})

    params = form.execute()
    assert {k: params.get(k) for k in ("class_name", "reference_sample", "reference_source", "reference_field",
                                        "method", "out_field", "sam_model", "gate")} == dict(
        class_name="cat", reference_sample=reference_id, reference_source="field", reference_field="ground_truth",
        method="prior", out_field=out_field, sam_model="tiny", gate="off",
    )
    note = _app.wait_for_run(page, app.server, r"samtext: labelled \d+ images into %s\b" % out_field)
    assert "labelled %d images" % (N_SAMPLES - 1) in note and "0 failed" in note, note

    check_masks(app, out_field, reference_id)

    # The run ended with reload_dataset: the new fields are in the sidebar without reloading the page.
    expect(page.locator('[data-cy="sidebar-field-%s"]' % out_field)).to_be_visible()
    expect(page.locator('[data-cy="sidebar-field-%s_prompts"]' % out_field)).to_be_visible()
    expect(page.locator('[data-cy="sidebar-field-%s_instances"]' % out_field)).to_be_visible()
    _app.close_run(page)

    # Showing the field draws the masks over the images of the grid: every tile changes but the reference's.
    tiles = page.locator('[data-cy="looker"]')
    for field in (out_field, out_field + "_prompts", out_field + "_instances"):
        set_field_shown(page, field, False)
    before = [_app.stable_screenshot(tiles.nth(i)) for i in range(N_SAMPLES)]
    set_field_shown(page, out_field, True)
    for _ in range(60):
        changed = [_app.png_difference(b, tiles.nth(i).screenshot()) for i, b in enumerate(before)]
        if min(changed[1:]) > 0.01:
            break
        page.wait_for_timeout(250)
    assert min(changed[1:]) > 0.01, "showing %s left tiles unchanged: %s" % (out_field, changed)
    assert changed[0] < 0.001, "the reference's tile changed: %s" % changed
    _app.stable_screenshot(page.locator('[data-cy="fo-grid"]'))
    page.screenshot(path=os.path.join(screenshots, "app_result.png"), clip=dict(x=0, y=0, width=1400, height=584))


def test_run_from_the_app_with_an_uploaded_mask(app):
    page = open_dataset(app)
    expect = _app.expect()
    reference_id, stem, out_field = app.ids[1], app.stems[1], "samtext_browser_upload"
    mask_path = os.path.join(PETS, "masks", stem + ".png")

    form = _app.open_operator_from_browser(page, OPERATOR_LABEL, "reference mask")
    form.radio("Upload a mask image")
    form.dialog.locator('input[type="file"]').set_input_files(mask_path)
    fill_common(form, reference_id, out_field)
    form.fill("Class value in the mask (optional)", 255)
    expect(form.input("Class value in the mask (optional)")).to_have_value("255")

    params = form.execute()
    upload = params.get("reference_mask")
    assert isinstance(upload, dict) and upload.get("name") == stem + ".png", upload
    with open(mask_path, "rb") as f:
        assert base64.b64decode(upload["content"]) == f.read()
    assert params.get("reference_source") == "upload"
    assert params.get("reference_class_value") == 255 and isinstance(params["reference_class_value"], int)

    note = _app.wait_for_run(page, app.server, r"samtext: labelled \d+ images into %s\b" % out_field)
    assert "labelled %d images" % (N_SAMPLES - 1) in note and "0 failed" in note, note
    check_masks(app, out_field, reference_id)
    expect(page.locator('[data-cy="sidebar-field-%s"]' % out_field)).to_be_visible()


def test_a_failed_run_shows_its_error_in_the_app(app):
    page = open_dataset(app)
    expect = _app.expect()
    out_field = "samtext_browser_broken"

    form = _app.open_operator_from_browser(page, OPERATOR_LABEL, "reference mask")
    form.radio("Upload a mask image")
    form.dialog.locator('input[type="file"]').set_input_files(
        files=[{"name": "broken.png", "mimeType": "image/png", "buffer": b"this is not an image"}]
    )
    fill_common(form, app.ids[2], out_field)
    form.execute()

    shown = _app.wait_for_error(page, app.server)
    assert "samtext:" in shown and app.ids[2] in shown, shown  # the message names the reference sample
    expect(page.locator(_app.NOTIFICATION).filter(has_text="samtext:")).to_be_visible()
    app.ds.reload()
    assert out_field not in app.ds.get_field_schema()
    _app.close_run(page)
