"""Operator "Predict with a trained model": a thin form over :func:`samtext.predict`."""

import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.PredictSettings  # the action's knobs: defaults and checks


def _trained_models(ctx):
    """``{model path: "trained on <label field> (<status>)"}`` of the training runs recorded on the dataset."""
    return {c["model_path"]: "trained on %s (%s)" % (c.get("label_field"), c.get("status"))
            for c in forms.run_records(ctx, samtext.names.TRAIN_RUN_KEY_PREFIX).values() if c.get("model_path")}


class PredictWithModel(forms.ActionOperator):
    action = "predict"
    description = "Label images with a network samtext trained (a fo.Segmentation field)"

    def resolve_input(self, ctx):
        inputs = types.Object()
        forms.target(inputs, ctx, "Predict")
        models = _trained_models(ctx)
        view = types.AutocompleteView()
        for path, label in models.items():
            view.add_choice(path, label=label)
        inputs.str("model_path", required=True, default=next(iter(models), None), label="Model file", view=view)
        path = ctx.params.get("model_path") or next(iter(models), None)
        if path and ctx.dataset is not None:
            try:
                overlap = samtext.training_overlap(ctx.target_view(), path)
            except Exception:  # a path being typed
                overlap = 0
            if overlap:
                inputs.view("overlap", types.Warning(
                    label="%d of these samples were in the model's training split: their predictions flatter it"
                    % overlap))
        forms.output_field(inputs, ctx, default=samtext.names.PREDICTIONS_FIELD, side_fields=())
        forms.device(inputs, S.default("device"))
        forms.sharding(inputs)
        return types.Property(inputs, view=types.View(label="Predict with a trained model"))

    def sdk_args(self, ctx):
        p = ctx.params
        kwargs = dict(forms.run_kwargs(p, side_fields=()), device=p.get("device") or S.default("device"))
        return (ctx.target_view(), p.get("model_path")), kwargs

    def __call__(self, sample_collection, model_path, delegate=False, **params):
        """Runs the operator from Python (immediately, or queued when ``delegate=True``).

        Example usage::

            op = foo.get_operator("@samtext/samtext/predict_with_model")
            op(dataset.match_tags("test"), "/models/pets_cat_pseudo.pt", out_field="cat_predicted")
        """
        return forms.call_operator(self, sample_collection, dict(params, model_path=model_path), delegate)
