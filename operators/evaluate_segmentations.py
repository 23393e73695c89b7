"""Operator "Evaluate segmentations": a thin form over :func:`samtext.evaluate`."""

import fiftyone as fo
import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.EvaluateSettings  # the action's knobs: defaults and checks

RESULT_FIELDS = [("eval_key", "Evaluation key", "str"), ("images", "Images evaluated", "int"),
                 ("miou", "mIoU (background + classes)", "float"), ("class_iou", "IoU per class", "list"),
                 ("skipped", "Skipped", "list"), ("warnings", "Warnings", "list")]


def _field_choices(inputs, ctx, name, label, description):
    fields = forms.fields_of_types(ctx, fo.Segmentation, fo.Detections)
    view = forms.choice_view({f: f for f in fields})
    inputs.enum(name, fields, required=True, label=label, description=description, view=view)


class EvaluateSegmentations(forms.SamtextOperator):
    action = "evaluate"
    description = "Per-class IoU and mIoU of a mask field against ground truth, per-image IoU and Dice"

    def resolve_input(self, ctx):
        inputs = types.Object()
        forms.target(inputs, ctx, "Evaluate")
        _field_choices(inputs, ctx, "pred_field", "Predictions", "A Segmentation field, or Detections with masks")
        _field_choices(inputs, ctx, "gt_field", "Ground truth", "A Segmentation field, or Detections with masks")
        inputs.str("eval_key", default=S.default("eval_key"), required=True, label="Evaluation key",
                   description="Per-image IoU and Dice go to <key>_iou and <key>_dice (sortable in the grid)")
        for name, label, description in (
                ("gt_targets", "Ground-truth class names (optional)",
                 "When its masks name no classes: e.g. '255=cat' (matched to the predictions by name)"),
                ("pred_targets", "Prediction class names (optional)", "e.g. '1=cat, 2=dog'")):
            prop = inputs.str(name, label=label, description=description)
            try:
                forms.parse_targets(ctx.params.get(name))
            except ValueError as e:
                prop.invalid, prop.error_message = True, str(e)
        return types.Property(inputs, view=types.View(label="Evaluate segmentations"))

    def execute(self, ctx):
        p = ctx.params
        report = samtext.evaluate(ctx.target_view(), p["pred_field"], p["gt_field"],
                                  eval_key=p.get("eval_key") or S.default("eval_key"),
                                  gt_targets=forms.parse_targets(p.get("gt_targets")),
                                  pred_targets=forms.parse_targets(p.get("pred_targets")),
                                  classes=p.get("classes") or None)
        result = result_of(report)
        if not ctx.delegated:
            ctx.ops.reload_dataset()
        return result

    def resolve_output(self, ctx):
        return forms.result_panel("evaluation", RESULT_FIELDS, ctx.results)

    def __call__(self, sample_collection, pred_field, gt_field, delegate=False, **params):
        """Runs the operator from Python (``eval_key``, ``gt_targets`` such as "255=cat", ``pred_targets``).

        Example usage::

            op = foo.get_operator("@samtext/samtext/evaluate_segmentations")
            op(dataset, "cat_masks", "ground_truth", gt_targets="255=cat")
        """
        params = dict(params, pred_field=pred_field, gt_field=gt_field)
        return forms.call_operator(self, sample_collection, params, delegate)


def result_of(report):
    d = report.to_dict()
    return dict(eval_key=d.get("eval_key"), images=d.get("images"),
                miou=None if d.get("miou") is None else round(d["miou"], 4),
                class_iou=["%s: %s" % (k, "n/a" if v is None else "%.3f" % v) for k,
                           v in (d.get("class_iou") or {}).items()],
                skipped=list(d.get("skipped") or [])[:20], warnings=list(d.get("warnings") or []))
