"""The App user's paths through samtext's forms and runs, resolved with FiftyOne's own execution context on a real
database: targets that default to the whole view, refusals and notes when there is nothing to label or nothing
was found, results for Python callers, the panels' contents, the operators' own icons."""

import os

import pytest

from conftest import PLUGIN_NAME, make_pets_dataset, pets_stems

REFERENCE = PLUGIN_NAME + "/annotate_by_reference_mask"
TEXT = PLUGIN_NAME + "/annotate_by_text"
PROPOSALS = PLUGIN_NAME + "/compute_mask_proposals"
TRAIN = PLUGIN_NAME + "/train_segmentation_model"
TINY_PROPOSALS = dict(sam_model="tiny", clip_model="tiny", device="cpu", points_per_side=4, pred_iou_thresh=0.0,
                      stability_score_thresh=0.0, min_area=0)


@pytest.fixture
def pets(db):
    """3 cats and a dog; the first cat is the reference."""
    return make_pets_dataset(pets_stems(animal="cat", n=3) + pets_stems(animal="dog", n=1))


def _ctx(uri, ds, view=None, selected=(), **params):
    from fiftyone.operators.executor import ExecutionContext

    request = {"dataset_name": ds.name, "params": dict(params), "selected": list(selected)}
    if view is not None:
        request["view"] = view._serialize()
    return ExecutionContext(request_params=request, operator_uri=uri)


def _form(uri, ds, **kwargs):
    import fiftyone.operators as foo

    prop = foo.get_operator(uri).resolve_input(_ctx(uri, ds, **kwargs))
    prop.to_json()  # what the App receives
    return prop.type.properties


def _every_operator():
    import fiftyone.operators as foo

    return [o for o in foo.list_operators(enabled=True) if o.plugin_name == PLUGIN_NAME
            and not isinstance(o, foo.Panel)]


def test_every_form_starts_on_the_whole_view_even_with_a_selection(pets):
    """Selecting the reference tile (how the reference form picks its reference) must not make the target "the
    selection", i.e. the reference alone; under a view, the view."""
    ref = pets.first()
    view = pets.limit(3)
    for op in _every_operator():
        props = _form(op.uri, pets, selected=[ref.id])
        assert props["view_target"].default == "DATASET", op.uri
        props = _form(op.uri, pets, view=view, selected=[ref.id])
        expected = "DATASET" if op.name == "annotate_by_examples" else "CURRENT_VIEW"  # its view is the lasso's
        assert props["view_target"].default == expected, op.uri


def test_reference_form_refuses_a_target_of_only_the_reference(pets):
    ref = pets.first()
    props = _form(REFERENCE, pets, selected=[ref.id], view_target="SELECTED_SAMPLES", reference_sample=ref.id)
    assert props["view_target"].invalid
    assert "only the reference" in props["view_target"].error_message
    assert "target_problem" in props
    props = _form(REFERENCE, pets, selected=[ref.id], reference_sample=ref.id)  # the default: the dataset
    assert not getattr(props["view_target"], "invalid", False) and "target_problem" not in props


def test_a_form_refuses_an_empty_target(pets):
    props = _form(TEXT, pets, view=pets.match_tags("nothing-has-this"), view_target="CURRENT_VIEW")
    assert props["view_target"].invalid and "no sample" in props["view_target"].error_message


def test_a_run_of_only_the_reference_is_refused_or_says_why_nothing_was_labelled(pets):
    """The operator refuses it before anything runs; the SDK runs it and its summary says why it labelled 0."""
    import fiftyone.operators as foo
    import samtext
    from fiftyone.operators.executor import ExecutionError

    ref = pets.first()
    params = dict(class_name="cat", reference_sample=ref.id, reference_field="ground_truth", sam_model="tiny",
                  device="cpu", out_field="only_ref", gate="off")
    with pytest.raises(ExecutionError, match="only the reference"):
        foo.execute_operator(REFERENCE, {"view": pets.select(ref.id), "params": params})
    summary = samtext.annotate_by_reference(pets.select(ref.id), "cat", reference=ref.id,
                                            reference_field="ground_truth", sam_model="tiny", out_field="only_ref")
    assert summary.labelled == 0 and "only the reference (1 sample)" in summary.notes[0]
    assert "only_ref" not in pets.get_field_schema()


def test_a_run_that_found_nothing_names_the_knob(pets):
    """The tiny random models at the form's defaults find no text object: the summary says so and which knob to
    turn, and the App's message is a warning, not a plain success."""
    import fiftyone.operators as foo

    params = dict(prompts="cat", sam_model="tiny", clip_model="tiny", device="cpu", out_field="nothing",
                  threshold=0.999)
    result = foo.execute_operator(TEXT, {"dataset": pets, "params": params})
    requests = result.executor.to_json()["requests"]
    notes = [r["params"] for r in requests if r["operator_uri"] == "notify"]
    assert notes[0]["variant"] == "warning" and "threshold" in notes[0]["message"], notes
    shown = [r["params"] for r in requests if r["operator_uri"] == "show_output"][0]
    assert shown["results"]["notes"] and "no object was found in any of the 4 images" in shown["results"]["notes"][0]
    shown_props = shown["outputs"]["type"]["properties"]
    assert "notes" in shown_props and "errors" not in shown_props, "no empty 'Errors' header"
    # run again: everything is labelled already, and the note says how to relabel
    again = foo.get_operator(TEXT)(pets, "cat", sam_model="tiny", clip_model="tiny", device="cpu",
                                   out_field="nothing", threshold=0.999)
    assert again.result["labelled"] == 0 and "overwrite" in again.result["notes"][0]


def test_every_labelling_operator_called_from_python_returns_its_summary(pets):
    import fiftyone.operators as foo

    op = foo.get_operator(PROPOSALS)
    result = op(pets, out_field="props", num_clusters="2", **TINY_PROPOSALS)
    assert result.error is None and result.result is not None
    assert result.result["labelled"] == 4 and result.result["field"] == "props"
    # the proposals form makes their map in the same run (the App's one flow: proposals, then the map)
    assert result.result["map_brain_key"] == "props_map" and result.result["map_clusters"] == 2
    assert "props_map" in pets.list_brain_runs()
    assert set(pets.values("props.detections.cluster", unwind=True)) == {0, 1}
    result = foo.get_operator(TRAIN)(pets, "ground_truth", delegate=False, classes="cat", label_targets="255=cat",
                                     epochs=1, image_size=64, batch_size=2, backbone_weights="none", device="cpu",
                                     model_path=os.path.join(str(pets.name) + ".pt"))
    assert result.error is None and result.result["status"] == "completed"
    os.remove(result.result["model_path"])


def test_proposals_without_the_map_and_the_map_form_field(pets):
    import fiftyone.operators as foo

    props = _form(PROPOSALS, pets)
    assert props["make_map"].default is True and "num_clusters" in props
    assert "make_map" not in _form(PROPOSALS, pets, embedder="none")
    result = foo.get_operator(PROPOSALS)(pets, out_field="bare", make_map=False, **TINY_PROPOSALS)
    assert "map_brain_key" not in result.result and pets.list_brain_runs() == []


def test_model_forms_take_a_sam_checkpoint(pets):
    for uri in (REFERENCE, TEXT, PROPOSALS):
        assert "sam_checkpoint" in _form(uri, pets), uri


def test_train_form_says_it_runs_in_the_app_when_delegation_is_off(pets, monkeypatch):
    import fiftyone as fo
    import fiftyone.operators as foo

    monkeypatch.setattr(fo.config, "allow_legacy_orchestrators", False)
    assert "runs_here" in _form(TRAIN, pets)
    monkeypatch.setattr(fo.config, "allow_legacy_orchestrators", True)
    assert "runs_here" not in _form(TRAIN, pets)
    assert foo.get_operator(TRAIN).config.execute_as_generator  # in the App, progress by epoch


def test_train_in_the_app_streams_its_progress(pets, tmp_path):
    import fiftyone.operators as foo

    params = dict(label_field="ground_truth", classes="cat", label_targets="255=cat", epochs=2, image_size=64, backbone_weights="none",
                  batch_size=2, device="cpu", model_path=str(tmp_path / "m.pt"))
    result = foo.execute_operator(TRAIN, {"dataset": pets, "params": params})
    requests = result.executor.to_json()["requests"]
    labels = [r["params"]["label"] for r in requests if r["operator_uri"] == "set_progress"]
    assert "epoch 1 / 2" in labels and "epoch 2 / 2" in labels
    shown = [r["params"] for r in requests if r["operator_uri"] == "show_output"][0]
    assert shown["results"]["status"] == "completed" and os.path.isfile(tmp_path / "m.pt")


def test_summaries_round_and_hide_empty_lists(pets):
    import fiftyone.operators as foo

    pets.clone_sample_field("ground_truth", "copy")
    result = foo.execute_operator(PLUGIN_NAME + "/evaluate_segmentations",
                                  {"dataset": pets, "params": dict(pred_field="copy", gt_field="ground_truth", eval_key="ev",
                                                                   gt_targets="255=cat", pred_targets="255=cat")})
    miou = result.result["miou"]
    assert miou == round(miou, 4)
    ctx = _ctx(PLUGIN_NAME + "/evaluate_segmentations", pets)
    ctx.request_params["results"] = dict(result.result, skipped=[])
    shown = foo.get_operator(PLUGIN_NAME + "/evaluate_segmentations").resolve_output(ctx).type.properties
    assert "skipped" not in shown and "miou" in shown


def test_each_operator_has_its_own_icon():
    import fiftyone.operators as foo

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    icons = {o.name: o.config.icon for o in _every_operator()}
    assert len(set(icons.values())) == len(icons), icons
    for name, icon in icons.items():
        assert os.path.isfile(os.path.join(root, icon.lstrip("/"))), (name, icon)
    assert isinstance(foo.get_operator(PLUGIN_NAME + "/samtext_few_shot"), foo.Panel)


def test_few_shot_panel_launches_the_form_with_the_lasso(pets):
    """The panel beside the Embeddings panel: its button reads the lasso as the App sends it (FiftyOne 1.22's
    Embeddings panel publishes a ``MatchLabels`` extended stage of the lassoed proposals) and opens "Annotate by
    few-shot examples" with those proposals as the exemplars."""
    import fiftyone.operators as foo
    import samtext
    from fiftyone.operators.executor import ExecutionContext, Executor

    field = samtext.names.PROPOSALS_FIELD
    samtext.compute_mask_proposals(pets, out_field=field, **TINY_PROPOSALS)
    panel = foo.get_operator(PLUGIN_NAME + "/samtext_few_shot")

    def panel_ctx(**request):
        request = dict({"dataset_name": pets.name, "params": {"panel_id": "p1", "panel_state": {}}}, **request)
        return ExecutionContext(request_params=request, operator_uri=panel.uri, executor=Executor())

    ctx = panel_ctx()
    panel.on_load(ctx)
    assert ctx.panel.get_state("field") == field and not ctx.panel.get_state("has_map")
    assert "compute_map" in panel.render(ctx).type.properties  # step 2 is offered until the map exists
    samtext.compute_proposal_map(pets, field=field, num_clusters=2)
    panel.on_change_dataset(ctx)
    rendered = panel.render(ctx).type.properties
    assert "compute_map" not in rendered and "label_examples" in rendered

    lassoed = pets.values(field + ".detections.id", unwind=True)[:3]
    ctx = panel_ctx(extended={"fiftyone.core.stages.MatchLabels": {"labels": None, "ids": lassoed}})
    panel.label_examples(ctx)
    prompts = [r for r in ctx.executor.to_json()["requests"] if r["operator_uri"] == "prompt_user_for_operation"]
    assert len(prompts) == 1
    params = prompts[0]["params"]["params"]
    assert prompts[0]["params"]["operator_uri"] == PLUGIN_NAME + "/annotate_by_examples"
    assert params["exemplar_ids"] == lassoed and params["proposals_field"] == field
    form = _form(PLUGIN_NAME + "/annotate_by_examples", pets, **params)  # the form it opens counts them
    assert form["picked"].view.label == "%d proposals picked as exemplars" % len(lassoed)
