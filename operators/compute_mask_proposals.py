"""Operator "Compute mask proposals": a thin form over :func:`samtext.compute_mask_proposals`."""

import fiftyone as fo
import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.ProposalSettings  # the action's knobs: defaults and checks
MAP = samtext.settings.MapSettings

DEFAULT_FIELD = samtext.names.PROPOSALS_FIELD
EMBEDDER_CHOICES = {
    "clip": "CLIP on each masked crop (what the object looks like; comparable with text)",
    "sam": "SAM's features under each mask (no extra model, fastest)",
    "none": "None (proposals only)",
}


class ComputeMaskProposals(forms.ActionOperator):
    action = "compute_mask_proposals"
    description = "SAM's automatic masks for every image, as Detections (one patch per mask)"

    def resolve_input(self, ctx):
        inputs = types.Object()
        forms.target(inputs, ctx, "Propose masks for")
        forms.output_field(inputs, ctx, default=DEFAULT_FIELD, label_cls=fo.Detections, side_fields=())
        inputs.int("points_per_side", label="Points per side",
                   description="The prompt grid is N x N points (empty: 16 on CPU, 32 on a GPU); the cost grows "
                               "with N squared")
        inputs.float("pred_iou_thresh", default=S.default("pred_iou_thresh"), min=0.0, max=1.0,
                     label="Predicted IoU threshold",
                     description="Keep masks whose quality SAM predicts above this")
        inputs.float("stability_score_thresh", default=S.default("stability_score_thresh"), min=0.0, max=1.0,
                     label="Stability threshold",
                     description="Keep masks that hardly change when SAM's logit threshold moves")
        inputs.float("box_nms_thresh", default=S.default("box_nms_thresh"), min=0.0, max=1.0, label="Box NMS threshold",
                     description="Of two masks whose boxes overlap more than this, keep the better one")
        inputs.int("min_area", default=S.default("min_area"), min=0, label="Minimum area (pixels)")
        inputs.int("max_proposals", default=S.default("max_proposals"), min=1, label="Most proposals per image")
        inputs.enum("embedder", list(EMBEDDER_CHOICES), default=S.default("embedder"), label="Embeddings",
                    description="A vector per proposal, kept beside the dataset, for the map and for exemplars",
                    view=forms.choice_view(EMBEDDER_CHOICES, types.RadioGroup))
        forms.models(inputs, ctx, needs_clip=ctx.params.get("embedder", "clip") == "clip")
        if ctx.params.get("embedder", S.default("embedder")) != "none":
            inputs.bool("make_map", default=True, label="Then compute the proposal map",
                        description="Cluster the proposals and map them for the Embeddings panel (brain key "
                                    "<output field>_map), in the same run; after split runs, use 'Compute proposal "
                                    "map' once they are done")
            if ctx.params.get("make_map", True):
                inputs.str("num_clusters", default=str(MAP.default("num_clusters")), label="Clusters",
                           description="A number, or 'auto' (chosen by silhouette score)")
        forms.sharding(inputs)
        return types.Property(inputs, view=types.View(label="Compute mask proposals"))

    finishing = "computing the proposal map"
    extra_fields = [("map_brain_key", "Map (Embeddings panel brain key)", "str"), ("map_clusters", "Clusters", "int")]

    def finish(self, ctx, summary):
        """The proposal map of the run's field, when the form asks for it (the default)."""
        p = ctx.params
        if not p.get("make_map", True) or p.get("embedder", S.default("embedder")) in (None, "none"):
            return {}
        clusters = str(p.get("num_clusters") or MAP.default("num_clusters")).strip()
        made = samtext.compute_proposal_map(ctx.target_view(), summary.field, num_clusters=clusters, overwrite=True)
        return dict(map_brain_key=made.brain_key, map_clusters=made.num_clusters)

    def sdk_args(self, ctx):
        p = ctx.params
        kwargs = dict(forms.run_kwargs(p, side_fields=()), **forms.set_knobs(p, S))
        if kwargs.get("embedder") == "none":  # the form's choice for no embeddings
            kwargs["embedder"] = None
        return (ctx.target_view(),), kwargs

    def __call__(self, sample_collection, delegate=False, **params):
        """Runs the operator from Python (immediately, or queued when ``delegate=True``).

        Parameters are the form's (``out_field``, ``points_per_side``, ``pred_iou_thresh``, ``min_area``,
        ``sam_model``, ``num_shards``, ...).

        Example usage::

            op = foo.get_operator("@samtext/samtext/compute_mask_proposals")
            op(dataset, out_field="proposals", sam_model="tiny")
        """
        return forms.call_operator(self, sample_collection, params, delegate)
