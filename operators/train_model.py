"""Operators "Train a segmentation model" (delegated by default) and "Predict with a trained model": thin forms
over :func:`samtext.train` and :func:`samtext.predict`."""

import logging

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.TrainSettings  # the action's knobs: defaults and checks

logger = logging.getLogger(__name__)

ARCH_CHOICES = samtext.models.registry.choices(samtext.models.registry.SEGNETS)
RESULT_FIELDS = [("label_field", "Trained on", "str"), ("status", "Status", "str"), ("model_path", "Model", "str"),
                 ("train_samples", "Training images", "int"), ("val_samples", "Validation images", "int"),
                 ("background_only", "Images without the classes", "int"),
                 ("skipped_unlabelled", "Left out (no label)", "int"),
                 ("skipped_rejected", "Left out (rejected)", "int"), ("failed", "Left out (unreadable)", "int"),
                 ("epochs_done", "Epochs done", "int"), ("best_val_miou", "Best validation mIoU", "float"),
                 ("backbone_start", "Backbone started from", "str"), ("errors", "Errors", "list")]


def _names(text):
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None


class TrainSegmentationModel(foo.Operator):
    @property
    def config(self):
        return forms.tool_config("train_segmentation_model", "Train a segmentation model",
                                 "Fine-tune a torchvision segmentation network on a (pseudo-)label field",
                                 delegate_by_default=True)

    def resolve_placement(self, ctx):
        return forms.action_button("Train a segmentation model")

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Train on")
        fields = forms.fields_of_types(ctx, fo.Segmentation, fo.Detections)
        inputs.enum("label_field", fields, required=True, label="Labels", view=forms.choice_view({f: f for f in fields}),
                    description="Pseudo-labels (filter the rejects out of the view first) or ground truth")
        inputs.str("classes", label="Classes (optional)",
                   description="Comma-separated; default: every class the field names. For masks without class "
                               "names: the one class, e.g. 'cat'")
        prop = inputs.str("label_targets", label="Mask values (optional)", description="e.g. '255=cat'")
        try:
            forms.parse_targets(ctx.params.get("label_targets"))
        except ValueError as e:
            prop.invalid, prop.error_message = True, str(e)
        inputs.enum("arch", list(ARCH_CHOICES), default="lraspp", label="Network",
                    view=forms.choice_view(ARCH_CHOICES))
        inputs.int("epochs", default=S.default("epochs"), min=1, label="Epochs")
        inputs.int("image_size", default=S.default("image_size"), min=32, label="Input size (pixels, square)")
        inputs.int("batch_size", default=S.default("batch_size"), min=1, label="Batch size")
        inputs.float("lr", default=S.default("lr"), min=0.0, label="Learning rate (peak)")
        inputs.float("val_fraction", default=S.default("val_fraction"), min=0.0, max=0.9, label="Validation fraction")
        inputs.str("model_path", label="Model file (optional)",
                   description="Default: ~/.samtext/models/<dataset>_<field>.pt; an interrupted run resumes from it")
        inputs.bool("restart", default=S.default("restart"), label="Start afresh (replace that file)")
        inputs.str("skip_tag", default=S.default("skip_tag"), label="Leave out labels tagged",
                   description="The review's reject tag (empty: train on every label)")
        inputs.bool("allow_running", default=S.default("allow_running"), label="Train although a samtext run is still writing the field",
                    description="Only for a run that died without saying so")
        inputs.enum("device", ["auto", "cpu", "cuda"], default=S.default("device"), label="Device",
                    view=forms.choice_view({"auto": "auto", "cpu": "cpu", "cuda": "cuda"}, types.RadioGroup))
        return types.Property(inputs, view=types.View(label="Train a segmentation model"))

    def execute(self, ctx):
        p = ctx.params

        def progress(epoch, epochs, step, steps, metrics):
            if ctx.delegated:
                done = ((epoch - 1) * steps + step) / max(epochs * steps, 1)
                ctx.set_progress(progress=done, label="epoch %d / %d" % (epoch, epochs))

        def number(name, default, kind=int):  # a cleared field of the form arrives as None
            value = p.get(name)
            return default if value is None or value == "" else kind(value)

        summary = samtext.train(
            ctx.target_view(), p["label_field"], model_path=p.get("model_path") or None,
            classes=_names(p.get("classes")), label_targets=forms.parse_targets(p.get("label_targets")),
            arch=p.get("arch") or S.default("arch"), epochs=number("epochs", S.default("epochs")), image_size=number("image_size", S.default("image_size")),
            batch_size=number("batch_size", S.default("batch_size")), lr=number("lr", S.default("lr"), float),
            val_fraction=number("val_fraction", S.default("val_fraction"), float), seed=number("seed", S.default("seed")),
            device=p.get("device") or S.default("device"), backbone_weights=p.get("backbone_weights", S.default("backbone_weights")),
            resume=bool(p.get("resume", S.default("resume"))), restart=bool(p.get("restart", S.default("restart"))),
            allow_running=bool(p.get("allow_running", False)), skip_tag=p.get("skip_tag", S.default("skip_tag")) or None,
            progress=progress)
        return summary.to_dict(max_errors=20)

    def resolve_output(self, ctx):
        return forms.result_panel("training", RESULT_FIELDS)

    def __call__(self, sample_collection, label_field, delegate=True, **params):
        """Runs the operator from Python: queued for a delegated worker by default (``delegate=False`` to train
        now). Parameters are the form's (``classes`` "cat", ``label_targets`` "255=cat", ``epochs``, ...).

        Example usage::

            op = foo.get_operator("@samtext/samtext/train_segmentation_model")
            op(dataset.match_tags("train"), "cat_pseudo", epochs=30)
        """
        return forms.call_operator(self, sample_collection, dict(params, label_field=label_field), delegate)


def _trained_models(ctx):
    """``{model path: "label field (run key)"}`` of the training runs recorded on the dataset."""
    out = {}
    if ctx.dataset is None:
        return out
    for key in ctx.dataset.list_runs():
        if key.startswith("samtext_train_"):
            config = ctx.dataset.get_run_info(key).config.serialize()
            if config.get("model_path"):
                out[config["model_path"]] = "trained on %s (%s)" % (config.get("label_field"), config.get("status"))
    return out


class PredictWithModel(forms.ActionOperator):
    operator_name = "predict_with_model"
    action = "predict"
    label = "Predict with a trained model"
    description = "Label images with a network samtext trained (a fo.Segmentation field)"

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Predict")
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
        inputs.enum("device", ["auto", "cpu", "cuda"], default=S.default("device"), label="Device",
                    view=forms.choice_view({"auto": "auto", "cpu": "cpu", "cuda": "cuda"}, types.RadioGroup))
        forms.sharding(inputs)
        return types.Property(inputs, view=types.View(label="Predict with a trained model"))

    def sdk_args(self, ctx):
        p = ctx.params
        kwargs = dict(forms.run_kwargs(p, side_fields=()), device=p.get("device") or samtext.settings.PredictSettings.default("device"))
        return (ctx.target_view(), p.get("model_path")), kwargs

    def __call__(self, sample_collection, model_path, delegate=False, **params):
        """Runs the operator from Python (immediately, or queued when ``delegate=True``).

        Example usage::

            op = foo.get_operator("@samtext/samtext/predict_with_model")
            op(dataset.match_tags("test"), "/models/pets_cat_pseudo.pt", out_field="cat_predicted")
        """
        return forms.call_operator(self, sample_collection, dict(params, model_path=model_path), delegate)
