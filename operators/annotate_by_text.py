"""Operator "Annotate by text": a thin form over :func:`samtext.annotate_by_text`."""

import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.TextSettings  # the action's knobs: defaults and checks

DEFAULT_FIELD = samtext.names.TEXT_FIELD
LOCALIZER_CHOICES = {
    "boxes": "Region proposals (selective search) ranked by CLIP: objects of any size",
    "patches": "Sliding patches + Grad-CAM: small objects (a car blinker)",
    "sam3": "SAM 3's concept prompt: every instance of the phrase, no CLIP (needs the SAM 3 model)",
}
SEARCH_CHOICES = {"fast": "Fast", "quality": "Quality (slower, more regions)"}


def _prompt_check(prop, value, what, allow_none=False):
    """Marks ``prop`` invalid with the SDK's own message when ``value`` cannot be parsed; returns the prompts."""
    try:
        return samtext.parse_prompts(value, what=what, allow_none=allow_none)
    except ValueError as e:
        prop.invalid, prop.error_message = True, str(e)
        return []


class AnnotateByText(forms.ActionOperator):
    action = "annotate_by_text"
    description = "Label what a text prompt names in every image: CLIP finds it, SAM draws it"

    def resolve_input(self, ctx):
        inputs = types.Object()
        forms.target(inputs, ctx, "Annotate")
        prop = inputs.str("prompts", required=True, label="Prompts",
                          description="What to segment; several classes separated by ';', e.g. 'car; pedestrian; "
                                      "traffic sign'")
        classes = _prompt_check(prop, ctx.params.get("prompts"), "prompts") if ctx.params.get("prompts") else []
        if classes:
            inputs.view("classes_note", types.Notice(label="%d class%s: %s" % (
                len(classes), "" if len(classes) == 1 else "es", ", ".join(classes[:12])
                + (", ..." if len(classes) > 12 else ""))))
        neg = inputs.str("negative_prompts", label="Negative prompts (optional)",
                         description="What not to label, e.g. 'window; reflection' (it pushes masks off it)")
        _prompt_check(neg, ctx.params.get("negative_prompts"), "negative prompts", allow_none=True)
        inputs.enum("localizer", list(LOCALIZER_CHOICES), default=S.default("localizer"), label="How it is found",
                    view=forms.choice_view(LOCALIZER_CHOICES, types.RadioGroup))
        forms.output_field(inputs, ctx, default=DEFAULT_FIELD)
        localizer = ctx.params.get("localizer") or S.default("localizer")
        inputs.float("threshold", default=S.default("threshold"), min=0.0, max=1.0, label="Threshold",
                     description="The least SAM 3 score (the instance's probability times the phrase's presence in "
                                 "the image)" if localizer == "sam3" else
                                 "The least CLIP probability of the class (against the other prompts and "
                                 "background prompts) on each object's masked crop; images where no object reaches "
                                 "it come out empty")
        if localizer != "sam3":
            inputs.float("region_threshold", min=0.0, max=1.0, label="Region threshold (optional)",
                         description="Only let SAM look where a region's crop reaches this probability (empty: at "
                                     "the best regions of each class)")
        inputs.int("max_instances", default=S.default("max_instances"), min=1, max=100,
                   label="Most objects per class and image")
        if localizer == "boxes":
            inputs.enum("search_mode", list(SEARCH_CHOICES), default=S.default("search_mode"), label="Selective search",
                        view=forms.choice_view(SEARCH_CHOICES, types.RadioGroup))
            inputs.int("max_proposals", default=S.default("max_proposals"), min=1, max=1000,
                       label="Regions CLIP scores per image")
        elif localizer == "patches":
            inputs.int("patch_size", label="Patch size in pixels (optional)",
                       description="Default: a third of the image's short side")
            inputs.int("top_k_patches", default=S.default("top_k_patches"), min=1, max=64,
                       label="Patches explained by Grad-CAM per class")
        forms.models(inputs, ctx, needs_clip=localizer != "sam3", sam3_only=localizer == "sam3")
        forms.sharding(inputs)
        return types.Property(inputs, view=types.View(label="Annotate by text"))

    def sdk_args(self, ctx):
        p = ctx.params

        kwargs = dict(forms.run_kwargs(p), **forms.set_knobs(p, S))  # a cleared field (null) keeps the default
        if p.get("patch_size"):  # the form takes one patch size
            kwargs["patch_sizes"] = [p["patch_size"]]
        return (ctx.target_view(), p.get("prompts")), kwargs

    def __call__(self, sample_collection, prompts, delegate=False, **params):
        """Runs the operator from Python (immediately, or queued when ``delegate=True``).

        Parameters are the form's (``negative_prompts``, ``localizer``, ``out_field``, ``threshold``,
        ``max_instances``, ``sam_model``, ``clip_model``, ``num_shards``, ...).

        Example usage::

            op = foo.get_operator("@samtext/samtext/annotate_by_text")
            op(dataset, "car; pedestrian", out_field="street")
            op(dataset, "car blinker", localizer="patches", num_shards=8)  # 8 delegated runs
        """
        return forms.call_operator(self, sample_collection, dict(params, prompts=prompts), delegate)
