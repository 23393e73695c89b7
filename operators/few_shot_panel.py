"""Panel "samtext few-shot": the few-shot loop from where the user is. FiftyOne 1.22's open-source Embeddings
panel draws no actions slot, so after a lasso there is no button to press; this panel, open beside it, counts the
proposals the lasso (or a selection) picked and launches "Annotate by few-shot examples" on them, and offers the
steps before: mask proposals with their map, and the Embeddings panel itself.
"""

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from . import forms
from ._sdk import samtext
from .annotate_by_examples import exemplar_ids

PLUGIN = "@samtext/samtext/"
EMBEDDINGS_PANEL = "Embeddings"  # the name FiftyOne's App registers its Embeddings panel under


class FewShotPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(name="samtext_few_shot", label="samtext few-shot", icon=forms.icon_of(
            "annotate_by_examples"), help_markdown="Lasso mask proposals in the Embeddings panel, then label every "
            "image with the proposals that look like them.")

    # The panel's state changes only on load and when the dataset changes (new proposals, a new map): in FiftyOne
    # 1.22 any change of a Python panel's state while a lasso is drawn clears the lasso (the Embeddings panel's
    # extended stage), so the lasso is read when the button is pressed, not followed as it changes.
    def on_load(self, ctx):
        self._refresh(ctx)

    def on_change_dataset(self, ctx):
        self._refresh(ctx)

    def _refresh(self, ctx):
        field = self._field(ctx)
        brain_key = field + samtext.names.MAP_SUFFIX if field else None
        ctx.panel.set_state("field", field)
        ctx.panel.set_state("brain_key", brain_key)
        ctx.panel.set_state("has_map", bool(ctx.dataset is not None and brain_key in ctx.dataset.list_brain_runs()))

    def _field(self, ctx):
        chosen = ctx.panel.get_state("field")
        fields = forms.fields_of_types(ctx, fo.Detections)
        if chosen in fields:
            return chosen
        default = samtext.names.PROPOSALS_FIELD
        return default if default in fields else next(iter(fields), None)

    def open_embeddings(self, ctx):
        ctx.ops.open_panel(EMBEDDINGS_PANEL, layout="horizontal", is_active=True)

    def label_examples(self, ctx):
        """Opens "Annotate by few-shot examples" with the proposals picked now as its exemplars."""
        field = self._field(ctx)
        ids = exemplar_ids(ctx, field) if field else []
        ctx.prompt(PLUGIN + "annotate_by_examples",
                   params={"exemplar_ids": ids, "proposals_field": field, "exemplar_source": "selection"})

    def refresh(self, ctx):
        """After proposals or a map were made in another window."""
        self._refresh(ctx)

    def render(self, ctx):
        panel = types.Object()
        field = ctx.panel.get_state("field")
        if not field:
            panel.md("**1. Mask proposals.** This dataset has none yet: SAM proposes masks everywhere, CLIP embeds "
                     "them, and their map is drawn in the same run.", name="step_proposals")
            panel.btn("compute_proposals", label="Compute mask proposals", on_click=PLUGIN + "compute_mask_proposals",
                      prompt=True, variant="contained")
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        if not ctx.panel.get_state("has_map"):
            panel.md("**2. The map.** Proposals in `%s` have no map yet." % field, name="step_map")
            panel.btn("compute_map", label="Compute proposal map", on_click=PLUGIN + "compute_proposal_map",
                      prompt=True, params={"field": field}, variant="contained")
        panel.md("**Pick exemplars.** Open the Embeddings panel, choose the brain key `%s`, colour by `cluster`, and "
                 "lasso the proposals that show your class." % ctx.panel.get_state("brain_key"), name="step_lasso")
        panel.btn("open_embeddings", label="Open the Embeddings panel", on_click=self.open_embeddings)
        panel.md("**Label.** With proposals of `%s` lassoed (or selected), label every image with those that look "
                 "like them; the form shows how many you picked." % field, name="step_label")
        panel.btn("label_examples", label="Label with the lassoed proposals", on_click=self.label_examples,
                  variant="contained")
        panel.btn("refresh", label="Refresh", on_click=self.refresh)
        return types.Property(panel, view=types.GridView(orientation="vertical"))
