"""Operator "Train a segmentation model" (delegated by default): a thin form over :func:`samtext.train`."""

import logging

import fiftyone as fo
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
                 ("backbone_start", "Backbone started from", "str"), ("notes", "Notes", "list"),
                 ("errors", "Errors", "list")]


def _epochs(epoch, epochs, step, steps, metrics):
    """``(fraction, label)`` of a training's progress event."""
    return ((epoch - 1) * steps + step) / max(epochs * steps, 1), "epoch %d / %d" % (epoch, epochs)


def _names(text):
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None


class TrainSegmentationModel(forms.SamtextOperator):
    action = "train"
    description = "Fine-tune a torchvision segmentation network on a (pseudo-)label field"
    delegate_by_default = True
    as_generator = True  # a run in the App streams its progress; a delegated one returns its result

    def resolve_input(self, ctx):
        inputs = types.Object()
        forms.target(inputs, ctx, "Train on")
        fields = forms.fields_of_types(ctx, fo.Segmentation, fo.Detections)
        inputs.enum("label_field", fields, required=True, label="Labels",
                    view=forms.choice_view({f: f for f in fields}),
                    description="Pseudo-labels (filter the rejects out of the view first) or ground truth")
        inputs.str("classes", label="Classes (optional)",
                   description="Comma-separated; default: every class the field names. For masks without class "
                               "names: the one class, e.g. 'cat'")
        prop = inputs.str("label_targets", label="Mask values (optional)", description="e.g. '255=cat'")
        try:
            forms.parse_targets(ctx.params.get("label_targets"))
        except ValueError as e:
            prop.invalid, prop.error_message = True, str(e)
        inputs.enum("arch", list(ARCH_CHOICES), default=S.default("arch"), label="Network",
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
        inputs.bool("allow_running", default=S.default("allow_running"),
                    label="Train although a samtext run is still writing the field",
                    description="Only for a run that died without saying so")
        forms.device(inputs, S.default("device"))
        forms.delegation_off_notice(inputs, "Training")
        return types.Property(inputs, view=types.View(label="Train a segmentation model"))

    def execute(self, ctx):
        p = ctx.params
        knobs = forms.set_knobs(p, S, [k for k in S.knobs() if k not in ("classes", "label_targets", "skip_tag")])
        if "skip_tag" in p:
            knobs["skip_tag"] = p["skip_tag"] or None  # cleared in the form: train on every label

        def events():
            return samtext.iter_train(ctx.target_view(), p["label_field"], classes=_names(p.get("classes")),
                                      label_targets=forms.parse_targets(p.get("label_targets")), **knobs)

        if ctx.delegated or ctx.request_params.get(forms.PYTHON_CALL):
            def progress(*event):
                if ctx.delegated:
                    fraction, label = _epochs(*event)
                    ctx.set_progress(progress=fraction, label=label)

            return forms.rounded(samtext.run_with_progress(events(), progress).to_dict(max_errors=20))
        return self._train_in_app(ctx, events)

    def _train_in_app(self, ctx, events):
        try:
            summary = yield from forms.app_progress(ctx, events(), describe=_epochs)
        except Exception as e:
            yield ctx.ops.notify("samtext: %s" % e, variant="error")
            yield ctx.ops.show_output(forms.error_output().to_json(), {"error": "samtext: %s" % e})
            raise
        result = forms.rounded(summary.to_dict(max_errors=20))
        yield ctx.ops.notify("samtext: trained %s on %d images (%s)" % (result.get("model_path"),
                             result.get("train_samples") or 0, result.get("status")),
                             variant="success" if result.get("status") == "completed" else "warning")
        yield ctx.ops.show_output(forms.result_panel("training", RESULT_FIELDS, result).to_json(), result)
        return result

    def resolve_output(self, ctx):
        return forms.result_panel("training", RESULT_FIELDS, ctx.results)

    def __call__(self, sample_collection, label_field, delegate=True, **params):
        """Runs the operator from Python: queued for a delegated worker by default (``delegate=False`` to train
        now). Parameters are the form's (``classes`` "cat", ``label_targets`` "255=cat", ``epochs``, ...).

        Example usage::

            op = foo.get_operator("@samtext/samtext/train_segmentation_model")
            op(dataset.match_tags("train"), "cat_pseudo", epochs=30)
        """
        return forms.call_operator(self, sample_collection, dict(params, label_field=label_field), delegate)
