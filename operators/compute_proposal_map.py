"""Operator "Compute proposal map": a thin form over :func:`samtext.compute_proposal_map` (clusters of the mask
proposals' embeddings and the Brain visualization the Embeddings panel shows)."""

import fiftyone as fo
import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext

S = samtext.settings.MapSettings  # the action's knobs: defaults and checks

RESULT_FIELDS = [("brain_key", "Brain key (Embeddings panel)", "str"), ("num_clusters", "Clusters", "int"),
                 ("proposals", "Proposals mapped", "int"), ("cluster_attribute", "Cluster attribute", "str")]


class ComputeProposalMap(forms.SamtextOperator):
    action = "compute_proposal_map"
    description = "Cluster the mask proposals and map them for the Embeddings panel"

    def resolve_input(self, ctx):
        inputs = types.Object()
        forms.target(inputs, ctx, "Map the proposals of")
        fields = forms.fields_of_types(ctx, fo.Detections)
        default = samtext.names.PROPOSALS_FIELD if samtext.names.PROPOSALS_FIELD in fields else next(iter(fields), None)
        inputs.enum("field", fields, default=default, required=True, label="Proposals field",
                    view=forms.choice_view({f: f for f in fields}), description="From 'Compute mask proposals'")
        inputs.str("brain_key", label="Brain key (optional)", description="Default: <field>_map")
        inputs.str("num_clusters", default=str(S.default("num_clusters")), label="Clusters",
                   description="A number, or 'auto' (chosen by silhouette score)")
        inputs.bool("overwrite", default=S.default("overwrite"), label="Replace an existing map with that key")
        return types.Property(inputs, view=types.View(label="Compute proposal map"))

    def execute(self, ctx):
        p = ctx.params
        knobs = forms.set_knobs(p, S, ("brain_key", "overwrite", "fit_cap", "seed", "cluster_attribute"))
        clusters = str(p.get("num_clusters") or S.default("num_clusters")).strip()
        knobs["num_clusters"] = clusters  # "auto" or a number as text: MapSettings checks and converts it
        result = vars(samtext.compute_proposal_map(ctx.target_view(), p["field"], **knobs))
        if not ctx.delegated:
            ctx.ops.reload_dataset()
        return result

    def resolve_output(self, ctx):
        return forms.result_panel("proposal map", RESULT_FIELDS, ctx.results)

    def __call__(self, sample_collection, field, delegate=False, **params):
        """Runs the operator from Python (``num_clusters``, ``brain_key``, ``overwrite``).

        Example usage::

            op = foo.get_operator("@samtext/samtext/compute_proposal_map")
            op(dataset, "samtext_proposals", num_clusters=8)
        """
        return forms.call_operator(self, sample_collection, dict(params, field=field), delegate)
