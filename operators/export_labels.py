"""Operator "Export pseudo-labels": a thin form over :func:`samtext.export_labels`."""

import fiftyone as fo
import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.ExportSettings  # the action's knobs: defaults and checks

FORMAT_CHOICES = {
    "segmentation": "Image segmentation folder (images + PNG class masks)",
    "coco": "COCO instances (labels.json with polygons)",
}
RESULT_FIELDS = [("export_dir", "Written to", "str"), ("exported", "Labels exported", "int"),
                 ("skipped_rejected", "Left out (rejected)", "int"), ("without_label", "Without a label", "int"),
                 ("failed", "Left out (unreadable)", "int"), ("errors", "Errors", "list"),
                 ("warnings", "Warnings", "list")]


class ExportLabels(forms.SamtextOperator):
    action = "export_labels"
    description = "Write a mask field with FiftyOne's exporters (segmentation folder or COCO)"

    def resolve_input(self, ctx):
        inputs = types.Object()
        forms.target(inputs, ctx, "Export")
        fields = forms.fields_of_types(ctx, fo.Segmentation)
        inputs.enum("field", fields, required=True, label="Field", view=forms.choice_view({f: f for f in fields}))
        inputs.enum("format", list(FORMAT_CHOICES), default=S.default("format"), label="Format",
                    view=forms.choice_view(FORMAT_CHOICES, types.RadioGroup))
        inputs.str("export_dir", required=True, label="Folder", description="A new or empty folder on the server")
        inputs.str("skip_tag", default=S.default("skip_tag"), label="Leave out labels tagged")
        inputs.bool("export_media", default=S.default("export_media"), label="Copy the images too")
        inputs.bool("overwrite", default=S.default("overwrite"), label="Replace an earlier samtext export there (other files are kept)")
        return types.Property(inputs, view=types.View(label="Export pseudo-labels"))

    def execute(self, ctx):
        p = ctx.params
        knobs = forms.set_knobs(p, S, ("format", "export_media", "overwrite"))
        if "skip_tag" in p:
            knobs["skip_tag"] = p["skip_tag"] or None  # cleared in the form: export every label
        return samtext.export_labels(ctx.target_view(), p["field"], p["export_dir"], **knobs)

    def resolve_output(self, ctx):
        return forms.result_panel("export", RESULT_FIELDS, ctx.results)

    def __call__(self, sample_collection, field, export_dir, delegate=False, **params):
        """Runs the operator from Python (``format``: "segmentation" or "coco", ``skip_tag``, ``overwrite``).

        Example usage::

            op = foo.get_operator("@samtext/samtext/export_labels")
            op(dataset, "cat_masks", "/data/cats", format="coco")
        """
        params = dict(params, field=field, export_dir=export_dir)
        return forms.call_operator(self, sample_collection, params, delegate)
