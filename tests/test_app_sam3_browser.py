"""SAM 3's methods chosen in the real FiftyOne App (headless Chromium): in the text form, "SAM 3's concept
prompt" drops CLIP's fields and offers only SAM 3 models; in the reference form, "SAM 3" does the same; each run
started from the form writes its masks (the tiny random SAM 3: the masks are meaningless, the path is real)."""

import types

import numpy as np
import pytest
from PIL import Image

import _app
from conftest import app_pets_dataset, pets_stems

pytestmark = pytest.mark.browser

N_SAMPLES = 4
TINY_SAM3 = "Tiny random SAM 3"
SAM3_LOCALIZER = "SAM 3's concept prompt: every instance of the phrase, no CLIP (needs the SAM 3 model)"
SAM3_METHOD = "SAM 3 (reference beside target on one canvas, its box as SAM 3's exemplar; needs the SAM 3 model)"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    ds = app_pets_dataset("samtext-sam3-browser", pets_stems(animal="cat", n=N_SAMPLES))
    with _app.app_session(ds, str(tmp_path_factory.mktemp("app"))) as (server, page):
        yield types.SimpleNamespace(ds=ds, ids=ds.values("id"), server=server, page=page,
                                    dataset_url="%s/datasets/%s" % (server.url, ds.name))


def _open(app):
    page = app.page
    page.goto(app.dataset_url)
    _app.expect()(page.locator('[data-cy="looker"]')).to_have_count(N_SAMPLES, timeout=60_000)
    return page


def _sam3_models_only(form):
    options = form.options("SAM model")
    assert options and all("SAM 3" in o for o in options), options
    assert form.selected_value("SAM model") == "sam3"


def _check(app, field, expected_count):
    ds = app.ds
    ds.reload()
    assert ds.count(field) == expected_count and ds.mask_targets.get(field) == {1: "cat"}
    for sample in ds.exists(field).select_fields(field):
        mask = sample[field].get_mask()
        assert set(np.unique(mask)) <= {0, 1} and Image.open(sample.filepath).size == mask.shape[::-1]
    run = ds.get_run_info("samtext_" + field).config
    assert run.settings["sam_model"] == "tiny-sam3"


def test_text_with_sam3_from_the_form(app):
    page = _open(app)
    expect = _app.expect()
    form = _app.open_operator_from_browser(page, "samtext: Annotate by text", "by text")
    form.fill("Prompts", "cat")
    expect(form.label("CLIP model")).to_have_count(1)
    form.radio(SAM3_LOCALIZER)
    expect(form.label("CLIP model")).to_have_count(0)
    expect(form.label("Selective search")).to_have_count(0)
    expect(form.dialog.get_by_text("The least SAM 3 score", exact=False)).to_be_visible()
    _sam3_models_only(form)
    form.choose("SAM model", TINY_SAM3)
    form.fill("Threshold", "0")
    form.fill("Output field", "text_sam3")
    params = form.execute()
    assert params["localizer"] == "sam3" and params["sam_model"] == "tiny-sam3"
    note = _app.wait_for_run(page, app.server, r"samtext: labelled \d+ images into text_sam3\b", timeout=600)
    assert "labelled %d images" % N_SAMPLES in note and "0 failed" in note, note
    _app.close_run(page)
    _check(app, "text_sam3", N_SAMPLES)
    expect(page.locator('[data-cy="sidebar-field-text_sam3"]')).to_be_visible()


def test_reference_with_sam3_from_the_form(app):
    page = _open(app)
    expect = _app.expect()
    form = _app.open_operator_from_browser(page, "samtext: Annotate by reference mask", "reference mask")
    form.fill("Class name", "cat")
    form.fill("Reference sample ID", app.ids[0])
    form.choose("Mask field", "ground_truth")
    assert form.selected_value("SAM model") == "vit_b"
    form.radio(SAM3_METHOD)
    expect(form.label("Refine")).to_have_count(0)  # the form has changed with the method (prior's option gone)
    _sam3_models_only(form)
    form.choose("SAM model", TINY_SAM3)
    form.radio("Off (always label the best match)")
    form.fill("Output field", "ref_sam3")
    params = form.execute()
    assert params["method"] == "sam3" and params["sam_model"] == "tiny-sam3"
    note = _app.wait_for_run(page, app.server, r"samtext: labelled \d+ images into ref_sam3\b", timeout=600)
    assert "labelled %d images" % (N_SAMPLES - 1) in note and "0 failed" in note, note
    _app.close_run(page)
    _check(app, "ref_sam3", N_SAMPLES - 1)
