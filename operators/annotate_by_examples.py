"""Operator "Annotate by few-shot examples": a thin form over :func:`samtext.annotate_by_examples`.

Exemplars come from what the user picked in the App, in this order: the selection of the Embeddings panel's
patches plot (``ctx.extended_selection``), the lasso's extended view stage (``Select`` of patch ids on a patches
view, ``MatchLabels`` of label ids on a samples view), the labels selected in the grid or the modal
(``ctx.selected_labels``); or, by choice, a label tag, cluster numbers, or the masks of the class in another
Segmentation or Detections field (of the selected samples, or of every sample where it is set).
"""

import re

import fiftyone as fo
import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.ExamplesSettings  # the action's knobs: defaults and checks

DEFAULT_FIELD = samtext.names.EXAMPLES_FIELD
SOURCE_CHOICES = {
    "selection": "The proposals I selected or lassoed",
    "tag": "Proposals with a label tag",
    "clusters": "Whole clusters of the map",
    "masks": "Masks in another field (drawn, ground truth, approved labels)",
}
SIDE_FIELDS = ("instances",)  # the matching prompts nothing: no prompts field
SCORING_CHOICES = {"max": "Closest exemplar", "prototype": "Mean of the exemplars"}
METHOD_CHOICES = {
    "embeddings": "Match the proposals' embeddings (no model runs; fast)",
    "sam3": "Show the exemplars to SAM 3 beside each image (needs the SAM 3 model; one SAM 3 pass per image)",
}


def _extended_stages(ctx):
    """``[(stage class path, kwargs dict)]`` of the request's extended stages (the App sends a dict
    ``{class path: kwargs}``)."""
    extended = ctx.request_params.get("extended") or {}
    if isinstance(extended, dict):
        return [(cls, dict(kwargs or {})) for cls, kwargs in extended.items()]
    return [(d.get("_cls", ""), dict(d.get("kwargs") or {})) for d in extended]


def lasso_ids(ctx, field):
    """Label ids the Embeddings panel's lasso selected among the proposals of ``field``: its extended selection,
    or the extended view stage it added (``Select`` on a patches view of ``field``, ``MatchLabels`` on a samples
    view). Empty when there is none."""
    selection = ctx.extended_selection
    if isinstance(selection, dict):
        selection = selection.get("selection")
    if selection:
        return [str(i) for i in selection]
    ids = []
    for cls, kwargs in _extended_stages(ctx):
        if cls.endswith(".MatchLabels") and field in (kwargs.get("fields") or [field]):
            ids += list(kwargs.get("ids") or [])
        elif cls.endswith(".Select") and ctx.view is not None and getattr(ctx.view, "_is_patches", False):
            ids += [str(i) for i in (kwargs.get("sample_ids") or [])]
    return ids


def _patches_of(view, field) -> bool:
    """Whether ``view`` is a patches view of ``field`` (its samples' ids are the proposals' label ids)."""
    return bool(getattr(view, "_is_patches", False)) and getattr(view, "patches_field", None) == field


def exemplar_ids(ctx, field):
    """The proposals of ``field`` the user picked: those the samtext few-shot panel passed (``exemplar_ids``),
    else the lasso's (:func:`lasso_ids`), else the selected labels, else the patches selected in the grid of a
    patches view of ``field`` (a patch's id is its label's)."""
    if ctx.params.get("exemplar_ids"):
        return [str(i) for i in ctx.params["exemplar_ids"]]
    ids = lasso_ids(ctx, field) or [s["label_id"] for s in (ctx.selected_labels or []) if s.get("field") == field]
    if not ids and ctx.selected and ctx.view is not None and _patches_of(ctx.view, field):
        ids = [str(i) for i in ctx.selected]
    return ids


def target_samples(ctx):
    """The samples to label: the form's (or the request's) view target; without one, the whole dataset, since
    the current view is usually the lasso or selection that picked the exemplars."""
    if ctx.params.get("view_target") or ctx.request_params.get("view_target"):
        return ctx.target_view()
    return ctx.dataset


def results_view(dataset, out_field):
    """The samples a few-shot run into ``out_field`` gave at least one object, most objects first (every labelled
    sample when the run saved no instances)."""
    from fiftyone import ViewField as F

    instances = out_field + samtext.names.INSTANCES_SUFFIX
    if instances in dataset.get_field_schema():
        count = F(instances + ".detections").length()
        return dataset.match(count > 0).sort_by(count, reverse=True)
    return dataset.exists(out_field)


def _numbers(text):
    """The cluster ids of a form's "3, 7" (or a list), as given: the SDK checks them and names a bad one."""
    if isinstance(text, (list, tuple)):
        return list(text)
    return [v for v in re.split(r"[\s,;]+", str(text or "")) if v]


class AnnotateByExamples(forms.ActionOperator):
    action = "annotate_by_examples"
    description = "Label every image with the mask proposals that look like a few you picked"
    place = types.Places.EMBEDDINGS_ACTIONS

    def resolve_input(self, ctx):
        inputs = types.Object()
        forms.target(inputs, ctx, "Label", prefer_dataset=True, allow_selected_samples=False)
        inputs.str("class_name", required=True, label="Class name", description="What the exemplars show, e.g. 'car'")
        fields = forms.fields_of_types(ctx, fo.Detections)
        proposals = S.default("proposals_field")
        default_field = proposals if proposals in fields else (fields[0] if fields else None)
        inputs.enum("proposals_field", fields, default=default_field, required=True, label="Proposals field",
                    view=forms.choice_view({f: f for f in fields}),
                    description="Mask proposals from 'Compute mask proposals'")
        field = ctx.params.get("proposals_field") or default_field
        inputs.enum("exemplar_source", list(SOURCE_CHOICES), default="selection", label="Exemplars",
                    view=forms.choice_view(SOURCE_CHOICES, types.RadioGroup))
        source = ctx.params.get("exemplar_source", "selection")
        if source == "selection":
            n = len(exemplar_ids(ctx, field)) if field else 0
            inputs.view("picked", types.Notice(label="%d proposals picked as exemplars" % n))
            if not n:
                inputs.view("how", types.Warning(
                    label="Nothing picked: lasso proposals in the Embeddings panel (brain key <field>_map) or select "
                          "patches of the proposals field, then open this form again"))
        elif source == "tag":
            inputs.str("exemplar_tag", required=True, label="Label tag of the exemplars")
        elif source == "clusters":
            inputs.str("exemplar_clusters", required=True, label="Clusters", description="Numbers, e.g. '3, 7'")
        else:
            mask_fields = [f for f in forms.fields_of_types(ctx, fo.Segmentation, fo.Detections) if f != field]
            if not mask_fields:
                inputs.view("no_masks", types.Warning(label="This dataset has no other Segmentation or Detections "
                                                            "field to take exemplar masks from"))
            inputs.enum("mask_field", mask_fields, required=True, label="Field with the exemplar masks",
                        view=forms.choice_view({f: f for f in mask_fields}))
            inputs.str("mask_class", label="The class's name or pixel value there (optional)",
                       description="When it differs from the class name, e.g. 'dog' or 255")
            if ctx.selected:
                inputs.bool("mask_selected_only", default=True, label="Only the %d selected samples' masks"
                            % len(ctx.selected))
        inputs.str("negative_tag", label="Label tag of negative exemplars (optional)",
                   description="Proposals with this tag are look-alikes that must not be labelled")
        inputs.enum("method", list(METHOD_CHOICES), default=S.default("method"), label="Method",
                    view=forms.choice_view(METHOD_CHOICES, types.RadioGroup))
        if (ctx.params.get("method") or S.default("method")) == "sam3":
            inputs.enum("sam3_model", list(forms.SAM3_CHOICES), default=S.default("sam3_model"), label="SAM 3 model",
                        view=forms.choice_view(forms.SAM3_CHOICES))
            inputs.float("sam3_threshold", default=S.default("sam3_threshold"), min=0.0, max=1.0,
                         label="SAM 3 threshold", description="The least SAM 3 score of an object")
            forms.device(inputs)
        else:
            inputs.float("threshold", default=S.default("threshold"), min=-1.0, max=1.0,
                         label="Similarity threshold", description="The least cosine similarity to the exemplars")
            inputs.enum("scoring", list(SCORING_CHOICES), default=S.default("scoring"), label="Score by",
                        view=forms.choice_view(SCORING_CHOICES, types.RadioGroup))
        inputs.int("top_k", label="Most objects per image (optional)")
        forms.output_field(inputs, ctx, default=DEFAULT_FIELD, inputs_read=[field] if field else [],
                           side_fields=SIDE_FIELDS)
        forms.sharding(inputs)
        return types.Property(inputs, view=types.View(label="Annotate by few-shot examples"))

    def sdk_args(self, ctx):
        p = ctx.params
        field = p.get("proposals_field") or S.default("proposals_field")
        source = p.get("exemplar_source", "selection")
        spec = dict(negative_tag=p.get("negative_tag") or None)
        if source == "tag":
            spec["tag"] = p.get("exemplar_tag")
        elif source == "clusters":
            spec["clusters"] = _numbers(p.get("exemplar_clusters"))
        elif source == "masks":
            spec.update(mask_field=p.get("mask_field"), mask_class=p.get("mask_class") or None,
                        mask_samples=list(ctx.selected or ()) if p.get("mask_selected_only", True) else ())
        else:
            spec["label_ids"] = exemplar_ids(ctx, field)
        kwargs = dict(forms.run_kwargs(p, side_fields=SIDE_FIELDS), **forms.set_knobs(p, S))
        examples = {(p.get("class_name") or "").strip(): samtext.Exemplars(**spec)}
        return (target_samples(ctx), examples), kwargs

    def show_results(self, ctx, summary):
        """The grid shows what the run produced: the lasso's selection is cleared (it would still say "32
        selected" over a grid that no longer shows them) and the view becomes the samples the run gave an object,
        most objects first."""
        yield ctx.ops.reload_dataset()
        yield ctx.ops.set_extended_selection(clear=True)
        yield ctx.ops.set_view(view=results_view(ctx.dataset, summary.field))

    def __call__(self, sample_collection, class_name, exemplar_ids=None, delegate=False, **params):
        """Runs the operator from Python (immediately, or queued when ``delegate=True``).

        Parameters are the form's (``proposals_field``, ``exemplar_source`` with ``exemplar_tag``,
        ``exemplar_clusters`` or ``mask_field`` and ``mask_class``, ``negative_tag``, ``threshold``,
        ``out_field``, ``num_shards``, ...).

        Example usage::

            op = foo.get_operator("@samtext/samtext/annotate_by_examples")
            op(dataset, "car", exemplar_ids=[...], proposals_field="proposals")
        """
        target = "CURRENT_VIEW" if isinstance(sample_collection, fo.DatasetView) else "DATASET"
        params = dict(params, class_name=class_name, view_target=target)
        if exemplar_ids is not None:
            params["exemplar_ids"] = list(exemplar_ids)
        return forms.call_operator(self, sample_collection, params, delegate, view_target=target)
