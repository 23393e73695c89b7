"""samtext's other operators in the real App (headless Chromium), each opened from its button among the grid's
actions, filled in and run as a user does, its result checked in the App and in the dataset: the proposal map
on its own, evaluation, export, training (in the App, where FiftyOne's open-source App cannot delegate),
prediction with the trained model, and the rerun from approved labels.

The labels are the tiny random SAM's (made through the SDK first), so the figures mean nothing; the paths do.
"""

import json
import os
import types

import pytest

import _app
from conftest import PLUGIN_NAME, app_pets_dataset, pets_stems

pytestmark = pytest.mark.browser

N_SAMPLES = 5
TINY = dict(sam_model="tiny", device="cpu")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import samtext

    ds = app_pets_dataset("samtext-browser-tools", pets_stems(animal="cat", n=N_SAMPLES))
    reference = ds.first()
    samtext.annotate_by_reference(ds, "cat", reference=reference.id, reference_field="ground_truth",
                                  out_field="cat_masks", min_similarity=None, **TINY)
    samtext.compute_mask_proposals(ds, out_field="props", clip_model="tiny", points_per_side=4, pred_iou_thresh=0.0,
                                   stability_score_thresh=0.0, min_area=0, **TINY)
    tmp = tmp_path_factory.mktemp("tools")
    with _app.app_session(ds, str(tmp), 1800, 1100) as (server, page):
        page.goto("%s/datasets/%s" % (server.url, ds.name))
        _app.expect()(page.locator('[data-cy="looker"]')).to_have_count(N_SAMPLES, timeout=60_000)
        yield types.SimpleNamespace(ds=ds, server=server, page=page, tmp=tmp, reference=reference.id)


def open_form(app, operator):
    """The operator's form, from its button among the grid's actions."""
    app.page.locator('[data-itemid="grid-actions-row"] [data-item-id="%s/%s"]' % (PLUGIN_NAME, operator)).click()
    return _app.OperatorPrompt(app.page).wait()


def run(app, form, done_text=None):
    """Executes the form; returns the params the App sent. Waits for the run's notification (``done_text``) or,
    for a tool that shows its result without one, for the result panel."""
    page = app.page
    params = form.execute()
    if done_text:
        _app.wait_for_run(page, app.server, done_text, timeout=300)
    else:
        _app.expect()(page.get_by_role("button", name="Close", exact=True)).to_be_visible(timeout=300_000)
    return params


def result_text(app, waiting_for):
    """The text of the run's result panel, once it shows ``waiting_for``."""
    panel = app.page.locator("%s, %s" % (_app.PROMPT, _app.PROMPT_VIEW))
    _app.expect()(panel.get_by_text(waiting_for).first).to_be_visible(timeout=60_000)
    return "\n".join(panel.all_inner_texts())


def test_compute_proposal_map_from_the_grid(app):
    form = open_form(app, "compute_proposal_map")
    form.choose("Proposals field", "props")
    form.fill("Clusters", 2)
    run(app, form)
    assert "Clusters" in result_text(app, "props_map")
    _app.close_run(app.page)
    app.ds.reload()
    assert "props_map" in app.ds.list_brain_runs()
    assert set(app.ds.values("props.detections.cluster", unwind=True)) == {0, 1}


def test_evaluate_from_the_grid(app):
    form = open_form(app, "evaluate_segmentations")
    form.choose("Predictions", "cat_masks")
    form.choose("Ground truth", "ground_truth")
    form.fill("Ground-truth class names (optional)", "255=cat")
    params = run(app, form)
    assert params["pred_field"] == "cat_masks" and params["gt_field"] == "ground_truth"
    text = result_text(app, "Images evaluated")
    assert "mIoU" in text
    assert "Skipped" not in text, "no empty list headers"
    _app.close_run(app.page)
    app.ds.reload()
    assert app.ds.has_evaluation(params.get("eval_key") or "samtext_eval")


def test_export_from_the_grid(app):
    folder = str(app.tmp / "export")
    form = open_form(app, "export_labels")
    form.choose("Field", "cat_masks")
    form.fill("Folder", folder)
    run(app, form)
    assert folder in result_text(app, "Labels exported")
    _app.close_run(app.page)
    written = [f for _, _, files in os.walk(folder) for f in files]
    assert len([f for f in written if f.endswith(".png")]) == N_SAMPLES - 1  # the reference has no label


def test_train_in_the_app_then_predict_from_the_grid(app, monkeypatch):
    page = app.page
    model = str(app.tmp / "cats.pt")
    form = open_form(app, "train_segmentation_model")
    _app.expect()(form.dialog.get_by_text("Training runs here, in the App", exact=False)).to_be_visible()
    form.choose("Labels", "ground_truth")
    form.fill("Classes (optional)", "cat")
    form.fill("Mask values (optional)", "255=cat")
    form.fill("Epochs", 2)
    form.fill("Input size (pixels, square)", 64)
    form.fill("Batch size", 2)
    form.fill("Model file (optional)", model)
    run(app, form, r"samtext: trained .*cats\.pt")
    assert "completed" in result_text(app, "Epochs done")
    _app.close_run(page)
    assert os.path.isfile(model)

    form = open_form(app, "predict_with_model")
    form.fill("Model file", model)
    form.fill("Output field", "predicted")
    run(app, form, r"samtext: labelled \d+ images into predicted")
    _app.close_run(page)
    app.ds.reload()
    assert app.ds.count("predicted") == N_SAMPLES


def test_rerun_from_approved_from_the_grid(app):
    ds = app.ds
    ds.reload()
    approved = ds.exists("cat_masks").first()
    approved.cat_masks.tags = ["approved"]
    approved.save()
    form = open_form(app, "rerun_from_approved")
    form.choose("Field", "cat_masks")
    run(app, form, r"samtext: labelled \d+ images into cat_masks")
    _app.close_run(app.page)
    ds.reload()
    record = ds.get_run_info("samtext_cat_masks").config
    assert approved.id in json.dumps(record.serialize()), "the approved label became the reference"
