"""The plugin as FiftyOne itself sees it: its loader, its operator registry, and the operator's form
resolved with a real ExecutionContext on a real dataset."""

import pytest

from conftest import PLUGIN_NAME, make_pets_dataset, pets_stems

URI = PLUGIN_NAME + "/annotate_by_reference_mask"

FORM_KEYS = {
    "view_target",
    "class_name",
    "reference_source",
    "reference_sample",
    "reference_field",
    "reference_class_value",
    "method",
    "out_field",
    "overwrite",
    "clip_check",
    "gate",
    "sam_model",
    "device",
    "precision",
    "save_prompts",
    "save_instances",
    "num_shards",
}


@pytest.fixture
def ds(db):
    return make_pets_dataset(pets_stems(animal="cat", n=2) + pets_stems(animal="dog", n=1))


def _operator():
    import fiftyone.operators as foo

    return foo.get_operator(URI)


def _resolve(ds, **params):
    """The operator's input form for ``params``, as ``{name: Property}``."""
    from fiftyone.operators.executor import ExecutionContext

    op = _operator()
    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": dict(params)}, operator_uri=URI)
    prop = op.resolve_input(ctx)
    prop.to_json()  # the App receives the form as JSON; it must serialise
    return prop.type.properties


def test_loader_finds_plugin_without_errors(db):
    import fiftyone.plugins as fop
    import fiftyone.plugins.context as fopc

    names = [pd.name for pd in fop.list_plugins(enabled=True)]
    assert PLUGIN_NAME in names
    contexts = {pctx.name: pctx for pctx in fopc.build_plugin_contexts(enabled=True)}
    assert PLUGIN_NAME in contexts, sorted(contexts)
    pctx = contexts[PLUGIN_NAME]
    assert not pctx.has_errors(), "\n".join(pctx.errors)
    assert URI in [op.uri for op in pctx.instances]


def test_plugin_definition_matches_manifest(db):
    import fiftyone.plugins as fop

    pd = fop.get_plugin(PLUGIN_NAME)
    assert pd.name == PLUGIN_NAME
    assert "annotate_by_reference_mask" in pd.operators
    assert pd.has_py


def test_every_operator_is_in_the_manifest_and_registered(db):
    import fiftyone.operators as foo
    import fiftyone.plugins as fop

    listed = set(fop.get_plugin(PLUGIN_NAME).operators)
    registered = {o.name for o in foo.list_operators(enabled=True) if o.plugin_name == PLUGIN_NAME}
    assert listed == registered
    assert {"evaluate_segmentations", "review_labels", "rerun_from_approved", "export_labels"} <= registered


def test_get_operator_and_registry(db):
    import fiftyone.operators as foo

    op = foo.get_operator(URI)
    assert op.name == "annotate_by_reference_mask"
    assert op.plugin_name == PLUGIN_NAME
    assert URI in [o.uri for o in foo.list_operators(enabled=True)]


def test_operator_config():
    op = _operator()
    cfg = op.config
    assert cfg.name == "annotate_by_reference_mask"
    assert cfg.dynamic is True
    assert cfg.execute_as_generator is True
    assert cfg.allow_immediate_execution is True
    assert cfg.allow_delegated_execution is True
    assert cfg.label


def test_execution_options_allow_both(ds):
    from fiftyone.operators.executor import ExecutionContext

    op = _operator()
    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": {}}, operator_uri=URI)
    opts = op.resolve_execution_options(ctx)
    assert opts.allow_immediate_execution and opts.allow_delegated_execution
    assert op.resolve_delegation(ctx) is None


def test_placement(ds):
    import fiftyone.operators.types as types
    from fiftyone.operators.executor import ExecutionContext

    op = _operator()
    ctx = ExecutionContext(request_params={"dataset_name": ds.name}, operator_uri=URI)
    placement = op.resolve_placement(ctx)
    assert isinstance(placement, types.Placement)
    assert placement.to_json()["place"] == types.Places.SAMPLES_GRID_SECONDARY_ACTIONS.value


def test_form_default_properties(ds):
    props = _resolve(ds)
    assert FORM_KEYS <= set(props), FORM_KEYS - set(props)
    assert props["class_name"].required
    assert props["reference_source"].type.values == ["field", "upload"]
    assert props["reference_source"].default == "field"
    # field source: a dropdown of the Segmentation/Detections fields, no upload
    assert props["reference_field"].type.values == ["ground_truth"]
    assert props["reference_field"].required
    assert "reference_mask" not in props
    assert props["method"].type.values == ["prior", "stitch", "sam3"]
    assert props["method"].default == "prior"
    # prior method: its own options, no CLIP unless asked; the absent-object gate calibrated by default
    assert {"refine", "max_instances"} <= set(props)
    assert props["max_instances"].default == 10
    assert props["gate"].default == "auto" and props["gate"].type.values == ["auto", "value", "off"]
    assert "min_similarity" not in props
    assert props["clip_check"].default is False
    assert not {"clip_model", "clip_pretrained", "num_prompt_sets", "clip_threshold"} & set(props)
    assert props["save_instances"].default is True and props["num_shards"].default == 1
    assert props["out_field"].default == "samtext_reference"
    assert not props["out_field"].invalid
    assert props["overwrite"].default is False
    assert "tiny" in props["sam_model"].type.values
    assert props["sam_model"].default == "vit_b"


def test_form_lists_detections_fields_as_references(ds):
    import fiftyone as fo

    ds.add_sample_field("boxes", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    ds.add_sample_field("notes", fo.StringField)
    props = _resolve(ds)
    assert props["reference_field"].type.values == ["boxes", "ground_truth"]


def test_form_upload_source(ds):
    import fiftyone.operators.types as types

    props = _resolve(ds, reference_source="upload")
    assert "reference_mask" in props
    assert "reference_field" not in props
    assert props["reference_mask"].required
    assert isinstance(props["reference_mask"].view, types.FileView)


def test_form_stitch_shows_clip(ds):
    props = _resolve(ds, method="stitch")
    assert {"clip_model", "clip_pretrained", "num_prompt_sets", "clip_threshold"} <= set(props)
    assert props["clip_model"].default == "ViT-B-32"
    assert props["clip_check"].default is True  # stitch checks each object with CLIP unless told not to
    assert "refine" not in props and props["max_instances"].default == 10


def test_form_gate_value_asks_for_the_value(ds):
    props = _resolve(ds, gate="value")
    assert props["min_similarity"].default == 0.5


def test_form_clip_check_shows_threshold_and_clip(ds):
    props = _resolve(ds, method="prior", clip_check=True)
    assert {"clip_threshold", "clip_model", "clip_pretrained"} <= set(props)
    assert props["clip_threshold"].default == 0.5


def test_form_default_reference_is_current_sample(ds):
    from fiftyone.operators.executor import ExecutionContext

    sid = ds.first().id
    ctx = ExecutionContext(
        request_params={"dataset_name": ds.name, "current_sample": sid, "params": {}}, operator_uri=URI
    )
    props = _operator().resolve_input(ctx).type.properties
    assert props["reference_sample"].default == sid

    other = ds.last().id
    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "selected": [other], "params": {}}, operator_uri=URI)
    props = _operator().resolve_input(ctx).type.properties
    assert props["reference_sample"].default == other


def test_form_out_field_of_another_type_is_invalid(ds):
    import fiftyone as fo

    ds.add_sample_field("taken", fo.StringField)
    ds.add_sample_field("boxes", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    for name in ("taken", "boxes"):
        props = _resolve(ds, out_field=name)
        assert props["out_field"].invalid, name
        assert name in props["out_field"].error_message


def test_form_out_field_existing_segmentation_is_valid_and_offered(ds):
    import fiftyone as fo

    ds.add_sample_field("earlier", fo.EmbeddedDocumentField, embedded_doc_type=fo.Segmentation)
    props = _resolve(ds, out_field="earlier", reference_field="ground_truth")
    assert not props["out_field"].invalid
    choices = [c.value for c in props["out_field"].view.choices]
    assert choices == ["earlier"]  # the reference field is not offered as an output
    props = _resolve(ds, out_field="brand_new")
    assert not props["out_field"].invalid


def test_form_refuses_the_reference_field_as_output(ds):
    props = _resolve(ds, out_field="ground_truth", reference_field="ground_truth")
    assert props["out_field"].invalid and "reference field" in props["out_field"].error_message


def test_invalid_out_field_blocks_execution(ds):
    """The form's validation stops an immediate run before it touches the field."""
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    ds.add_sample_field("taken", fo.StringField)
    ds.set_values("taken", ["x"] * len(ds))
    ref = ds.first()
    params = dict(class_name="cat", reference_sample=ref.id, reference_field="ground_truth",
                  out_field="taken", sam_model="tiny")
    with pytest.raises(ExecutionError, match="Validation error.*out_field"):
        foo.execute_operator(URI, {"dataset": ds, "params": params})
    assert ds.values("taken") == ["x"] * len(ds)
    assert "samtext_taken" not in ds.list_runs()


def test_output_form(ds):
    from fiftyone.operators.executor import ExecutionContext

    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": {}}, operator_uri=URI)
    props = _operator().resolve_output(ctx).type.properties
    assert {"field", "status", "labelled", "instances", "empty", "skipped_existing", "failed", "errors",
            "queued"} <= set(props)
