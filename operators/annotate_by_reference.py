"""Operator "Annotate by reference mask": a thin form over :func:`samtext.annotate_by_reference`."""

import base64
import re

import fiftyone as fo
import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.ReferenceSettings  # the action's knobs: defaults and checks

METHOD_CHOICES = {
    "prior": "Prior (PerSAM-style feature matching; one SAM pass per image)",
    "stitch": "Stitch (reference beside target, CLIP points; the seed's method, fixed)",
    "sam3": "SAM 3 (reference beside target on one canvas, its box as SAM 3's exemplar; needs the SAM 3 model)",
}


def _default_reference(ctx):
    if ctx.current_sample:
        return ctx.current_sample
    if ctx.selected and len(ctx.selected) == 1:
        return ctx.selected[0]
    return None


def _reference_ids(value):
    """Sample IDs from the form's text: one ID, or several separated by commas or spaces."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v for v in re.split(r"[\s,]+", value or "") if v]


def _sample_exists(dataset, sample_id):
    if dataset is None:
        return True  # nothing to check against
    try:
        return len(dataset.select(sample_id)) == 1
    except Exception:  # not an ObjectId
        return False


def _uploaded_bytes(upload):
    """The file bytes of a FileView upload (a dict with base64 ``content``, maybe a data URL)."""
    content = upload.get("content") if isinstance(upload, dict) else upload
    if not content:
        return None
    if "," in content[:100] and content.startswith("data:"):
        content = content.split(",", 1)[1]
    return base64.b64decode(content)


class AnnotateByReferenceMask(forms.ActionOperator):
    action = "annotate_by_reference"
    description = "Label every image from one image with its mask, using SAM (and CLIP)"

    def resolve_input(self, ctx):
        inputs = types.Object()
        references = _reference_ids(ctx.params.get("reference_sample") or _default_reference(ctx))
        forms.target(inputs, ctx, "Annotate", exclude=references, exclude_what="the reference")
        inputs.str("class_name", required=True, label="Class name", description="What the mask shows, e.g. 'cat'")

        source = types.RadioGroup()
        source.add_choice("field", label="A mask field of a sample")
        source.add_choice("upload", label="Upload a mask image")
        inputs.enum("reference_source", source.values(), default="field", label="Reference mask", view=source)
        ref_prop = inputs.str("reference_sample", required=True, default=_default_reference(ctx),
                              label="Reference sample ID",
                              description="The sample whose image the mask belongs to (default: the open or "
                              "selected sample); several IDs, comma-separated, average their features")
        missing = [r for r in _reference_ids(ctx.params.get("reference_sample")) if not _sample_exists(ctx.dataset, r)]
        if missing:
            ref_prop.invalid = True
            ref_prop.error_message = "No sample with ID %r in this dataset" % missing[0]
        if ctx.params.get("reference_source", "field") == "field":
            fields = forms.fields_of_types(ctx, fo.Segmentation, fo.Detections)
            view = types.DropdownView()
            for name in fields:
                view.add_choice(name, label=name)
            inputs.enum("reference_field", fields, required=True, label="Mask field", view=view,
                        description="A Segmentation or Detections field of the reference sample")
        else:
            inputs.uploaded_file(
                "reference_mask", required=True, label="Mask image",
                view=types.FileView(label="Mask image (PNG; nonzero = object)", types=".png,.bmp,.tif,.tiff",
                                    max_size=50 * 2**20),
            )
        inputs.int("reference_class_value", label="Class value in the mask (optional)",
                   description="For multi-class masks: the pixel value of the object")

        methods = forms.choice_view(METHOD_CHOICES, types.RadioGroup)
        inputs.enum("method", list(METHOD_CHOICES), default=S.default("method"), label="Method", view=methods)
        reads = [ctx.params.get("reference_field")] if ctx.params.get("reference_source", "field") == "field" else []
        forms.output_field(inputs, ctx, default=samtext.names.REFERENCE_FIELD, inputs_read=[f for f in reads if f])
        method = ctx.params.get("method", "prior")
        clip_check = bool(ctx.params.get("clip_check", method == "stitch"))
        forms.gate(inputs, ctx, "prior: SAM-feature similarity to the reference; stitch: CLIP score of the best "
                                "window; SAM 3: its instance score (auto: 0.5)")
        inputs.bool("clip_check", default=method == "stitch", label="CLIP check",
                    description="Drop each object that CLIP, on its own masked crop, does not see as the class")
        if clip_check:
            inputs.float("clip_threshold", default=samtext.settings.STITCH_CLIP_THRESHOLD, min=0.0, max=1.0,
                         label="CLIP threshold",
                         description="The fraction of the reference's own CLIP score an object must reach")
        if method == "prior":
            inputs.bool("refine", default=S.default("refine"), label="Refine",
                        description="A second SAM pass with each mask's box")
        else:
            inputs.int("num_prompt_sets", default=S.default("num_prompt_sets"), min=1, max=16, label="Prompt sets")
        inputs.int("max_instances", default=S.default("max_instances"), min=1, max=100, label="Most objects per image")
        forms.models(inputs, ctx, needs_clip=method == "stitch" or clip_check, sam3_only=method == "sam3")
        forms.sharding(inputs)
        return types.Property(inputs, view=types.View(label="Annotate by reference mask"))

    def _sdk_kwargs(self, ctx):
        p = ctx.params
        clip_check = p.get("clip_check", p.get("method") == "stitch")
        kwargs = dict(forms.run_kwargs(p), **forms.set_knobs(p, S))
        kwargs.update(min_similarity=forms.gate_value(p),  # the form's gate and CLIP check say these two
                      clip_threshold=p.get("clip_threshold",
                                           samtext.settings.STITCH_CLIP_THRESHOLD) if clip_check else None)
        if p.get("reference_source", "field") == "upload":
            kwargs["reference_mask"] = _uploaded_bytes(p.get("reference_mask"))
        else:
            kwargs["reference_field"] = p.get("reference_field")
        return kwargs

    def sdk_args(self, ctx):
        return (ctx.target_view(), ctx.params.get("class_name")), dict(
            reference=_reference_ids(ctx.params.get("reference_sample")), **self._sdk_kwargs(ctx))

    def __call__(self, sample_collection, class_name, reference, delegate=False, **params):
        """Runs the operator from Python (immediately, or queued when ``delegate=True``).

        Parameters are the form's (``method``, ``out_field``, ``sam_model``, ``gate`` or ``min_similarity``,
        ``clip_check``/``clip_threshold``, ``max_instances``, ``num_shards``, ...).

        Example usage::

            op = foo.get_operator("@samtext/samtext/annotate_by_reference_mask")
            op(dataset, "cat", reference=sample.id, reference_field="ground_truth", sam_model="tiny")
            op(dataset, "cat", reference=sample.id, reference_field="ground_truth", num_shards=8)  # 8 delegated runs
        """
        params = dict(params, class_name=class_name, reference_sample=reference)
        return forms.call_operator(self, sample_collection, params, delegate)
