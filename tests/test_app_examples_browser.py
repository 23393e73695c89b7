"""Few-shot labelling in the real FiftyOne App (headless Chromium, the App server on localhost): the Embeddings
panel lists samtext's proposal map and draws every proposal, coloured by its cluster; proposals selected in a
patches view are the exemplars of "Annotate by few-shot examples" run from the App.

The proposals are the tiny random SAM's (filters off, so that every image has some), embedded by the tiny CLIP.
"""

import json
import os
import types

import pytest

import _app
from conftest import app_pets_dataset, pets_stems

pytestmark = pytest.mark.browser

N_SAMPLES = 4
OPERATOR_LABEL = "samtext: Annotate by few-shot examples"
WORKSPACE = "proposal-map"
PATCHES_VIEW = "proposal-patches"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import fiftyone as fo
    import samtext

    ds = app_pets_dataset("samtext-browser-examples", pets_stems(animal="cat", n=N_SAMPLES))
    samtext.compute_mask_proposals(ds, out_field="props", sam_model="tiny", embedder="clip", clip_model="tiny",
                                   points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_area=50)
    samtext.compute_proposal_map(ds, field="props", num_clusters=2)
    # what a user saves after arranging the App: the proposals' patches, and the grid beside the Embeddings panel
    ds.save_view(PATCHES_VIEW, ds.to_patches("props"))
    ds.save_workspace(WORKSPACE, fo.Space(children=[fo.Panel(type="Samples", pinned=True),
                                                    fo.Panel(type="Embeddings")], orientation="horizontal"))
    with _app.app_session(ds, str(tmp_path_factory.mktemp("app"))) as (server, page):
        yield types.SimpleNamespace(ds=ds, server=server, page=page, url="%s/datasets/%s?view=%s&workspace=%s"
                                    % (server.url, ds.name, PATCHES_VIEW, WORKSPACE))


def test_embeddings_panel_shows_the_proposal_map(app):
    import fiftyone as fo
    from packaging.version import Version

    if Version(fo.__version__) < Version("1.22"):  # the oldest supported set (scripts/test_oldest.sh)
        pytest.skip("drives the Embeddings panel of FiftyOne 1.22 (cards, 'Color by'); %s has the older panel"
                    % fo.__version__)
    page, ds = app.page, app.ds
    n = ds.count("props.detections")
    page.goto(app.url)
    _app.expect()(page.locator('[data-cy="looker"]')).to_have_count(n, timeout=60_000)  # a patch per proposal
    card = page.get_by_text("props_map", exact=True)
    _app.expect()(card).to_be_visible(timeout=60_000)
    _app.expect()(page.get_by_text("props patches")).to_be_visible()  # the map is of the proposals' patches
    card.click()
    _app.expect()(page.get_by_text("%d points" % n, exact=True)).to_be_visible(timeout=60_000)
    page.get_by_text("Color by", exact=True).click()
    option = page.get_by_text("props.detections.cluster", exact=True)  # declared by samtext, so offered
    _app.expect()(option).to_be_visible()
    for attribute in ("predicted_iou", "stability_score", "area"):  # the proposals' own scores, for review
        _app.expect()(page.get_by_text("props.detections." + attribute, exact=True)).to_be_visible()
    option.click()
    _app.expect()(page.get_by_text("Color by", exact=True).locator("xpath=..")).to_contain_text("cluster")
    if os.environ.get("SAMTEXT_SCREENSHOTS_DIR"):  # the README's picture
        page.wait_for_timeout(1000)
        page.screenshot(path=os.path.join(os.environ["SAMTEXT_SCREENSHOTS_DIR"], "proposal_map.png"))


def test_few_shot_run_from_the_app_on_selected_patches(app):
    page, ds = app.page, app.ds
    page.goto(app.url)
    lookers = page.locator('[data-cy="looker"]')
    _app.expect()(lookers).to_have_count(ds.count("props.detections"), timeout=60_000)
    for i in range(2):
        lookers.nth(i).hover()
        lookers.nth(i).locator("input[type=checkbox]").locator("xpath=..").click()
        _app.expect()(lookers.nth(i).locator("input[type=checkbox]")).to_be_checked()
    form = _app.open_operator_from_browser(page, OPERATOR_LABEL, "few-shot")
    _app.expect()(form.dialog.get_by_text("2 proposals picked as exemplars")).to_be_visible()
    form.fill("Class name", "cat")
    form.fill("Output field", "app_cats")
    with page.expect_request(lambda r: "/operators/execute" in r.url) as request:
        form.execute_button.click()
    sent = json.loads(request.value.post_data)
    picked = sorted(sent.get("selected") or [])
    assert len(picked) == 2
    _app.wait_for_run(page, app.server, r"labelled \d+ images")
    ds.reload()
    config = ds.get_run_info("samtext_app_cats").config
    assert sorted(config.settings["examples"]["cat"]["label_ids"]) == picked
    assert ds.count("app_cats") == N_SAMPLES, "every image with proposals is a target, not only the selection's"
    labelled = set(ds.filter_labels("app_cats_instances", True).values("id"))
    owners = set(ds.select_labels(ids=picked, fields="props").values("id"))
    assert owners <= labelled, "an exemplar's own image labels its exemplar"
