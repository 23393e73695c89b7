"""Operator "Rerun from approved labels": a thin form over :func:`samtext.rerun_from_approved`."""

import fiftyone as fo
import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.RerunSettings  # the action's knobs: defaults and checks

PASSED_ON = ("device", "precision", "sam_checkpoint", "clip_checkpoint", "threshold",
             "min_similarity")


def _rerunnable_fields(ctx):
    """Segmentation fields written by an action a rerun can feed (their run records say which)."""
    actions = {samtext.settings.ReferenceSettings.action, samtext.settings.ExamplesSettings.action}
    written = {c.get("out_field") for c in forms.run_records(ctx, samtext.names.RUN_KEY_PREFIX).values()
               if c.get("action") in actions}
    return [name for name in forms.fields_of_types(ctx, fo.Segmentation) if name in written]


class RerunFromApproved(forms.ActionOperator):
    action = "rerun_from_approved"
    description = "Approved (or corrected and approved) labels become references/exemplars; the rest is relabelled"

    def resolve_input(self, ctx):
        inputs = types.Object()
        forms.target(inputs, ctx, "Relabel")
        fields = _rerunnable_fields(ctx)
        inputs.enum("field", fields, required=True, label="Field", view=forms.choice_view({f: f for f in fields}),
                    description="A field made by 'Annotate by reference mask' or 'Annotate by few-shot examples'")
        inputs.str("approved_tag", default=S.default("approved_tag"), label="Approved tag",
                   description="The label tag (or sample tag) you gave the labels you checked or corrected")
        inputs.view("note", types.Notice(label="Approved labels stay as they are; every other sample of the target "
                                               "is relabelled"))
        forms.sharding(inputs)
        return types.Property(inputs, view=types.View(label="Rerun from approved labels"))

    def sdk_args(self, ctx):
        p = ctx.params
        run = forms.run_kwargs(p, side_fields=())
        kwargs = dict(forms.set_knobs(p, S), **{k: run[k] for k in ("batch_size", "shard") if k in run})
        # settings a Python caller may change for the rerun (models given as files, the device, ...)
        kwargs.update({k: p[k] for k in PASSED_ON if p.get(k) is not None})
        return (ctx.target_view(), p.get("field")), kwargs

    def __call__(self, sample_collection, field, delegate=False, **params):
        """Runs the operator from Python (immediately, or queued when ``delegate=True``).

        Example usage::

            op = foo.get_operator("@samtext/samtext/rerun_from_approved")
            op(dataset, "cat_masks")
        """
        return forms.call_operator(self, sample_collection, dict(params, field=field), delegate)
