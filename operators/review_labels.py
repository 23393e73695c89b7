"""Operator "Review pseudo-labels": a thin form over :func:`samtext.review`; opens the "to review" view."""

import fiftyone as fo
import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.ReviewSettings  # the action's knobs: defaults and checks

FLAG_LABELS = {
    "low_confidence": "Low confidence",
    "tiny": "Tiny objects",
    "whole_image": "Covers almost the whole image",
    "fragments": "Many fragments",
    "disagreement": "Disagrees with the comparison field",
    "empty": "Empty (the object is absent)",
}
RESULT_FIELDS = [("field", "Field", "str"), ("reviewed", "Labels reviewed", "int"),
                 ("rejected", "Rejected (tagged)", "int"), ("approved", "Approved", "int"),
                 ("flagged", "Flags", "list"), ("mean_agreement", "Mean agreement (IoU)", "float"),
                 ("view_name", "Saved view", "str"), ("errors", "Errors", "list"),
                 ("warnings", "Warnings", "list")]


def _rejects(params):
    """The flags that reject, from the form's switches, or as a Python caller passed them (``reject``)."""
    if "reject" in params:
        return params["reject"]
    return [f for f in FLAG_LABELS if params.get("reject_" + f, f != "empty")]


class ReviewLabels(forms.SamtextOperator):
    action = "review"
    description = "Flag doubtful masks, tag the rejects, save a 'to review' view worst first"

    def resolve_input(self, ctx):
        inputs = types.Object()
        forms.target(inputs, ctx, "Review")
        fields = forms.fields_of_types(ctx, fo.Segmentation)
        inputs.enum("field", fields, required=True, label="Pseudo-label field",
                    view=forms.choice_view({f: f for f in fields}))
        inputs.float("min_confidence", default=S.default("min_confidence"), min=0.0, max=1.0, label="Least confidence")
        inputs.float("min_area", default=S.default("min_area"), min=0.0, max=1.0,
                     label="Tiny below (fraction of the image)")
        inputs.float("max_area", default=S.default("max_area"), min=0.0, max=1.0, label="Whole image above (fraction)")
        inputs.int("max_fragments", default=S.default("max_fragments"), min=1, label="Most fragments")
        others = [f for f in forms.fields_of_types(ctx, fo.Segmentation, fo.Detections) if f != ctx.params.get("field")]
        inputs.enum("compare_field", others, label="Compare with (optional)",
                    description="Another field labelling the same class (e.g. the text action's): their IoU is the "
                                "agreement", view=forms.choice_view({f: f for f in others}))
        if ctx.params.get("compare_field"):
            inputs.float("min_agreement", default=S.default("min_agreement"), min=0.0, max=1.0,
                         label="Least agreement (IoU)")
        for flag, label in FLAG_LABELS.items():
            inputs.bool("reject_" + flag, default=flag != "empty", label="Reject: " + label.lower())
        inputs.str("reject_tag", default=S.default("reject_tag"), label="Reject tag",
                   description="The label tag the rejects get (train on the others)")
        inputs.str("approved_tag", default=S.default("approved_tag"), label="Approved tag",
                   description="Labels (or samples) with this tag are never rejected")
        inputs.str("view_name", default=S.default("view_name"), label="Saved view")
        return types.Property(inputs, view=types.View(label="Review pseudo-labels"))

    def execute(self, ctx):
        p = ctx.params
        knobs = forms.set_knobs(p, S, [k for k in S.knobs() if k not in ("reject", "targets", "compare_targets")])
        if "min_confidence" in p:
            knobs["min_confidence"] = p["min_confidence"]  # cleared in the form (None): no confidence check
        report = samtext.review(ctx.target_view(), p["field"], reject=_rejects(p),
                                targets=forms.parse_targets(p.get("targets")),
                                compare_targets=forms.parse_targets(p.get("compare_targets")), **knobs)
        result = report.to_dict()
        result["flagged"] = ["%s: %d" % kv for kv in result["flagged"].items() if kv[1]]
        result["errors"] = result["errors"][:20]
        result = forms.rounded(result)
        if not ctx.delegated:
            ctx.ops.reload_dataset()
            ctx.ops.notify("samtext: reviewed %d labels of %s: %d rejected, %d approved%s" % (
                report.reviewed, report.field, report.rejected, report.approved,
                "; the view %r lists the flagged ones, worst first" % report.view_name if report.view_name else ""),
                variant="success")
        if not ctx.delegated and report.view_name:
            # by its stages, not its name: the App looks a name up among the saved views it loaded before this
            # run saved this one, and answers "Saved view ... does not exist"
            ctx.ops.set_view(view=ctx.dataset.load_saved_view(report.view_name))
        return result

    def resolve_output(self, ctx):
        return forms.result_panel("review", RESULT_FIELDS, ctx.results)

    def __call__(self, sample_collection, field, delegate=False, **params):
        """Runs the operator from Python (``min_confidence``, ``compare_field``, ``reject``, ...).

        Example usage::

            op = foo.get_operator("@samtext/samtext/review_labels")
            op(dataset, "cat_masks", compare_field="cat_text")
        """
        return forms.call_operator(self, sample_collection, dict(params, field=field), delegate)
