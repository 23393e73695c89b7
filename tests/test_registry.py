"""Guards of the one-home rule: every registered action has an SDK function, a settings class, an operator and a
README section, and every operator form's defaults are its settings class's defaults."""

import os
import sys

import numpy as np
import pytest

from conftest import PLUGIN_NAME, ROOT

# Where a form's default differs from the SDK's on purpose; each says why.
FORM_ONLY_DEFAULTS = {
    ("annotate_by_reference_mask", "clip_threshold"): "shown only when the CLIP check is ticked: the stitch value",
    ("annotate_by_reference_mask", "min_similarity"): "shown only for the gate 'a similarity I choose'",
    ("annotate_by_examples", "proposals_field"): "the dataset's own proposals field",
    ("*", "save_prompts"): "the App saves the prompt points it shows",
}

# Each operator's form, opened in every state that shows other inputs.
FORM_STATES = {
    "annotate_by_reference_mask": [{}, {"method": "stitch"}, {"clip_check": True}, {"gate": "value"},
                                   {"reference_source": "upload"}],
    "annotate_by_text": [{}, {"localizer": "patches"}],
    "compute_mask_proposals": [{}, {"embedder": "sam"}],
    "compute_proposal_map": [{}],
    "annotate_by_examples": [{"exemplar_source": s} for s in ("selection", "tag", "clusters", "masks")],
    "evaluate_segmentations": [{}],
    "review_labels": [{}, {"field": "gt", "compare_field": "other"}],
    "rerun_from_approved": [{}],
    "train_segmentation_model": [{}],
    "predict_with_model": [{}],
    "export_labels": [{}],
}


@pytest.fixture
def dataset(db, tmp_path):
    import fiftyone as fo
    from PIL import Image

    ds = fo.Dataset()
    for k in range(2):
        path = str(tmp_path / ("%d.png" % k))
        Image.fromarray(np.full((32, 40, 3), 40 * k, np.uint8)).save(path)
        mask = np.zeros((32, 40), np.uint8)
        mask[8:20, 10:30] = 1
        ds.add_sample(fo.Sample(filepath=path, gt=fo.Segmentation(mask=mask), other=fo.Segmentation(mask=mask),
                                props=fo.Detections(detections=[fo.Detection(label="proposal",
                                                                             bounding_box=[0.1, 0.1, 0.5, 0.5])])))
    return ds


def _operator(name):
    import fiftyone.operators as foo

    return foo.get_operator("%s/%s" % (PLUGIN_NAME, name))


def test_every_action_has_its_sdk_function_settings_operator_and_readme_section(db):
    import samtext
    from samtext.settings import Settings

    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert len(samtext.ACTIONS) == 11
    for name, spec in samtext.ACTIONS.items():
        assert getattr(samtext, name) is spec.run, name  # the public SDK function is the registered one
        assert issubclass(spec.settings, Settings) and spec.settings.action == name
        op = _operator(spec.operator)
        assert op.config.label == "samtext: " + spec.label, name
        assert "samtext.%s(" % name in readme, "README shows no call of samtext.%s" % name
        assert "`%s`" % spec.operator in readme, "README's table of actions lacks the operator %s" % spec.operator
        if spec.iterate is not None:
            assert getattr(samtext, "iter_" + name) is spec.iterate
        if spec.prepare is not None:
            assert getattr(samtext, "prepare_" + name) is spec.prepare


def test_the_plugin_registers_exactly_the_actions_operators(db):
    import fiftyone.operators as foo
    import samtext

    registered = {o.name for o in foo.list_operators(enabled=True) if o.plugin_name == PLUGIN_NAME
                  and not isinstance(o, foo.Panel)}  # the few-shot panel launches an action; it is none itself
    assert registered == {spec.operator for spec in samtext.ACTIONS.values()}


def _defaults(prop_type, out):
    """``{name: default}`` of a form's inputs, nested objects included."""
    for name, prop in getattr(prop_type, "properties", {}).items():
        out.setdefault(name, prop.default)
        _defaults(prop.type, out)
    return out


def test_every_form_default_is_its_settings_default(dataset):
    from fiftyone.operators.executor import ExecutionContext

    import samtext
    from samtext.settings import RunOptions

    specs = {spec.operator: spec for spec in samtext.ACTIONS.values()}
    assert set(FORM_STATES) == set(specs)
    compared = 0
    for operator, states in FORM_STATES.items():
        spec = specs[operator]
        op = _operator(operator)
        S = sys.modules[type(op).__module__].S
        assert S is spec.settings, "%s's form reads %s" % (operator, S.__name__)
        for params in states:
            ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": dict(params)})
            defaults = _defaults(op.resolve_input(ctx).type, {})
            for name, default in defaults.items():
                if (operator, name) in FORM_ONLY_DEFAULTS or ("*", name) in FORM_ONLY_DEFAULTS:
                    continue
                if name == "out_field":
                    expected = spec.default_field
                elif name in S.knobs(shown_only=True):
                    expected = S.default(name)
                elif name in RunOptions.knobs() and spec.iterate is not None:
                    expected = RunOptions.default(name)
                else:
                    continue  # a form-only input (the gate's choice, a reject switch, ...)
                if name == "num_clusters":  # a text input: "auto" or a number
                    default = default if default == "auto" else int(default)
                assert default == expected, "%s %s: the form says %r, %s says %r" % (
                    operator, name, default, S.__name__, expected)
                compared += 1
    assert compared >= 50  # the forms really were read


def test_an_unknown_option_names_the_action_and_its_options(dataset):
    import samtext

    for call, what in ((lambda: samtext.annotate_by_text(dataset, "car", treshold=0.4), "annotate_by_text"),
                       (lambda: samtext.review(dataset, "gt", min_conf=0.2), "review"),
                       (lambda: samtext.export_labels(dataset, "gt", "/tmp/x", fmt="coco"), "export_labels"),
                       (lambda: samtext.train(dataset, "gt", epoch=2), "train")):
        with pytest.raises(ValueError, match="unknown option .* for %s; its options are" % what):
            call()
    assert not dataset.list_runs() and not dataset.has_field("samtext_text")


def test_help_shows_every_knob_with_its_default():
    import inspect

    import samtext

    for name, spec in samtext.ACTIONS.items():
        params = inspect.signature(spec.run).parameters
        for knob in spec.settings.knobs():
            assert knob in params, "%s's signature lacks %s" % (name, knob)
            assert params[knob].default == spec.settings.default(knob)


def test_the_cli_lists_and_runs_actions(dataset, capsys):
    from samtext.__main__ import main

    assert main(["settings", "annotate_by_text"]) == 0
    out = capsys.readouterr().out
    assert "threshold=0.5" in out and "inputs: prompts" in out
    dataset.persistent = True
    try:
        code = main(["run", "annotate_by_text", "--dataset", dataset.name, "prompts=red; blue", "sam_model=tiny",
                     "clip_model=tiny", "threshold=0", "out_field=cli"])
        assert code == 0 and dataset.count("cli") == 2
        assert dataset.mask_targets["cli"] == {1: "red", 2: "blue"}
        assert main(["run", "annotate_by_text", "--dataset", dataset.name, "prompts=red", "treshold=0.1"]) == 2
        assert "unexpected keyword argument 'treshold'" in capsys.readouterr().err
    finally:
        dataset.persistent = False
