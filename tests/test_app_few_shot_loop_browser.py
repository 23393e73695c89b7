"""The whole few-shot loop in the real App at the size users have, clicked as a user clicks it (headless
Chromium, the App server on localhost): 200 photos; mask proposals with their map from the grid's button (60 per
photo: 12,000 proposals); the samtext few-shot panel from the "+" menu; the Embeddings panel from its button, the
map coloured by cluster, a lasso; few-shot from the panel's button on the lassoed proposals; the grid showing the
results; review from the grid's button, which opens its "to review" view.

Tiny random models (SAM's filters off so that every photo gets its proposals). With
``SAMTEXT_SCREENSHOTS_DIR=docs/images`` it saves the README's pictures of each step.
"""

import os
import re
import uuid

import pytest

import _app
from conftest import PETS, PLUGIN_NAME, pets_stems

pytestmark = [pytest.mark.browser, pytest.mark.slow]

N_PHOTOS = 200
PER_PHOTO = 60
CLUSTERS = 8
TINY_SAM = "Tiny random SAM"
FIELD = "samtext_proposals"  # the form's default output field
OUT = "cats"


def grid_button(page, operator):
    """An operator's button among the grid's actions (its own icon)."""
    return page.locator('[data-itemid="grid-actions-row"] [data-item-id="%s/%s"]' % (PLUGIN_NAME, operator))


def lasso(page, canvas, fractions):
    """Draws a lasso through ``fractions`` ([(x, y)] of the canvas's width and height), closing it."""
    box = canvas.bounding_box()
    points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in fractions]
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:] + points[:1]:
        page.mouse.move(*point, steps=12)
    page.mouse.up()


@pytest.fixture
def screenshots(tmp_path):
    path = os.environ.get("SAMTEXT_SCREENSHOTS_DIR") or str(tmp_path / "screenshots")
    os.makedirs(path, exist_ok=True)
    return path


def shoot(page, screenshots, name):
    """A picture of the page once the grid's first tiles have drawn."""
    page.locator('[data-cy="looker"]').first.wait_for(timeout=120_000)
    page.wait_for_timeout(3000)
    page.screenshot(path=os.path.join(screenshots, name))


def test_the_few_shot_loop_in_the_app_at_size(db, tmp_path, screenshots):
    _app.require_chromium()
    import fiftyone as fo
    import samtext

    expect = _app.expect()
    stems = pets_stems()
    ds = fo.Dataset("samtext-loop-%s" % uuid.uuid4().hex[:8], persistent=True)
    ds.add_samples([fo.Sample(filepath=os.path.join(PETS, "images", stems[i % len(stems)] + ".jpg"))
                    for i in range(N_PHOTOS)])
    with _app.app_session(ds, str(tmp_path), 1800, 1000) as (server, page):
        page.goto("%s/datasets/%s" % (server.url, ds.name))
        expect(page.get_by_text("%d samples" % N_PHOTOS)).to_be_visible(timeout=60_000)

        # 1. Proposals and their map: one form, from the grid's button
        grid_button(page, "compute_mask_proposals").click()
        form = _app.OperatorPrompt(page).wait()
        form.fill("Points per side", 8)
        form.fill("Predicted IoU threshold", 0)
        form.fill("Stability threshold", 0)
        form.fill("Box NMS threshold", 1)
        form.fill("Minimum area (pixels)", 0)
        form.fill("Most proposals per image", PER_PHOTO)
        form.choose("SAM model", TINY_SAM)
        form.fill("CLIP model", "tiny")
        form.fill("Clusters", CLUSTERS)
        params = form.execute()
        assert params.get("view_target", "DATASET") == "DATASET" and params.get("make_map", True)
        note = _app.wait_for_run(page, server, r"samtext: labelled \d+ images into %s" % FIELD, timeout=1500)
        assert "labelled %d images" % N_PHOTOS in note and "0 failed" in note, note
        expect(page.locator(_app.PROMPT_VIEW).get_by_text("%s_map" % FIELD)).to_be_visible()
        shoot(page, screenshots, "loop_1_proposals.png")
        _app.close_run(page)
        # the proposals stay unticked in the grid: 60 masks on every tile grew the page past 10 GB (it crashed)
        expect(page.locator('[data-cy="checkbox-%s"] input' % FIELD)).not_to_be_checked()
        ds.reload()
        n_proposals = ds.count(FIELD + ".detections")
        assert n_proposals >= 10_000, n_proposals
        assert FIELD + "_map" in ds.list_brain_runs()
        assert set(ds.values(FIELD + ".detections.cluster", unwind=True)) == set(range(CLUSTERS))

        # 2. The samtext few-shot panel from the "+" menu, and the Embeddings panel from its button
        page.locator('[data-cy="new-panel-btn"]').first.click()
        page.locator('[data-cy="new-panel-option-samtext_few_shot"]').click()
        expect(page.get_by_role("button", name="Label with the lassoed proposals")).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Open the Embeddings panel").click()
        page.get_by_role("button", name="%s_map 2D" % FIELD).click(timeout=60_000)
        points = re.compile(r"^%s points$" % "{:,}".format(n_proposals).replace(",", ",?"))
        expect(page.get_by_text(points)).to_be_visible(timeout=120_000)
        page.get_by_text("Color by", exact=True).click()
        page.get_by_text(FIELD + ".detections.cluster", exact=True).click()
        shoot(page, screenshots, "loop_2_map.png")

        # 3. A lasso over part of the map
        page.get_by_role("button", name="Select", exact=True).click()
        with page.expect_response(lambda r: "/embeddings/v2/lasso-stage" in r.url) as response:
            lasso(page, page.locator("canvas").last, [(0.05, 0.05), (0.45, 0.05), (0.45, 0.95), (0.05, 0.95)])
        stage = response.value.json()
        lassoed = sorted(stage["kwargs"]["ids"])
        assert 0 < len(lassoed) < n_proposals
        selected = "{:,}".format(len(lassoed)).replace(",", ",?")
        expect(page.get_by_text(re.compile(r"^%s selected$" % selected)).first).to_be_visible()
        shoot(page, screenshots, "loop_3_lasso.png")

        # 4. Few-shot from the panel's button: its form counts the lasso's proposals
        page.get_by_role("button", name="Label with the lassoed proposals").click()
        form = _app.OperatorPrompt(page).wait()
        expect(form.dialog.get_by_text("%d proposals picked as exemplars" % len(lassoed))).to_be_visible()
        form.fill("Class name", "cat")
        form.fill("Output field", OUT)
        shoot(page, screenshots, "loop_4_few_shot_form.png")
        params = form.execute()
        assert sorted(params["exemplar_ids"]) == lassoed and params.get("view_target", "DATASET") == "DATASET"
        note = _app.wait_for_run(page, server, r"samtext: labelled \d+ images into %s" % OUT, timeout=900)
        assert "labelled %d images" % N_PHOTOS in note, note
        _app.close_run(page)
        ds.reload()
        config = ds.get_run_info("samtext_" + OUT).config
        assert sorted(config.settings["examples"]["cat"]["label_ids"]) == lassoed
        with_objects = len(ds.match(fo.ViewField(OUT + "_instances.detections").length() > 0))
        assert with_objects > 0

        # 5. The grid shows what the run produced: the samples it gave an object, most first (the map's panels
        # closed, as a user does to look at the grid)
        expect(page.get_by_text(re.compile(r"^%s samples$" % "{:,}".format(with_objects)))).to_be_visible(timeout=60_000)
        _app.close_panel(page, "Embeddings")
        _app.close_panel(page, "samtext_few_shot")
        expect(page.locator('[data-cy="checkbox-%s"] input' % FIELD)).not_to_be_checked()  # the labels only
        expect(page.locator('[data-cy="sidebar-field-%s"]' % OUT)).to_be_visible()
        shoot(page, screenshots, "loop_5_results.png")

        # 6. Review from the grid's button: its "to review" view opens, without an error
        grid_button(page, "review_labels").click()
        form = _app.OperatorPrompt(page).wait()
        form.choose("Pseudo-label field", OUT)
        form.execute()
        _app.wait_for_run(page, server, r"samtext: reviewed \d+ labels of %s" % OUT, timeout=300)
        assert not page.locator(_app.NOTIFICATION).filter(has_text="does not exist").count()
        ds.reload()
        flagged = len(ds.load_saved_view(samtext.names.REVIEW_VIEW))
        _app.close_run(page)
        expect(page.get_by_text("%d samples" % flagged)).to_be_visible(timeout=60_000)
        page.wait_for_timeout(2000)
        assert not page.locator(_app.NOTIFICATION).filter(has_text="does not exist").count()
        shoot(page, screenshots, "loop_6_review.png")
