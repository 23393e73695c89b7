"""What a user calls: one module per action, and the registry that operators, the rerun loop and the CLI look up
by name.

==========================  ==========================  ===========================================
action                      module                      settings (:mod:`samtext.settings`)
==========================  ==========================  ===========================================
annotate_by_reference       :mod:`.by_reference`        :class:`~samtext.settings.ReferenceSettings`
annotate_by_text            :mod:`.by_text`             :class:`~samtext.settings.TextSettings`
compute_mask_proposals      :mod:`.mask_proposals`      :class:`~samtext.settings.ProposalSettings`
compute_proposal_map        :mod:`.proposal_map`        :class:`~samtext.settings.MapSettings`
annotate_by_examples        :mod:`.by_examples`         :class:`~samtext.settings.ExamplesSettings`
evaluate                    :mod:`.evaluation`          :class:`~samtext.settings.EvaluateSettings`
review                      :mod:`.review`              :class:`~samtext.settings.ReviewSettings`
rerun_from_approved         :mod:`.rerun`               :class:`~samtext.settings.RerunSettings`
train                       :mod:`.train`               :class:`~samtext.settings.TrainSettings`
predict                     :mod:`.train`               :class:`~samtext.settings.PredictSettings`
export_labels               :mod:`.export`              :class:`~samtext.settings.ExportSettings`
==========================  ==========================  ===========================================
"""

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from .. import names, settings
from . import by_examples, by_reference, by_text, evaluation, export, mask_proposals, proposal_map, rerun, review, train
from ..errors import SamtextError


@dataclass(frozen=True)
class ActionSpec:
    """One action.

    Attributes:
        name: the action's name (the SDK function's, and the one run records keep).
        label: what the App shows.
        settings: its settings class.
        run: the SDK function.
        iterate: the generator of ``(done, total)`` progress that returns the summary (None: no progress).
        prepare: validates and creates the outputs once, before a run split into shards is queued (None: no shards).
        default_field: the output field (or key) it writes by default.
        output: what it writes: "segmentation", "detections" (labels, through the run driver), "brain" (a map),
            "evaluation", "tags" (review), "model" (a checkpoint file) or "files" (an export).
        operator: the plugin operator's name.
        inputs: the SDK function's required arguments after the samples.
    """

    name: str
    label: str
    settings: type
    run: Callable
    iterate: Optional[Callable]
    prepare: Optional[Callable]
    default_field: Optional[str]
    output: str
    operator: str
    inputs: Tuple[str, ...] = ()


ACTIONS: Dict[str, ActionSpec] = {spec.name: spec for spec in (
    ActionSpec("annotate_by_reference", "Annotate by reference mask", settings.ReferenceSettings,
               by_reference.annotate_by_reference, by_reference.iter_annotate_by_reference,
               by_reference.prepare_annotate_by_reference, names.REFERENCE_FIELD, "segmentation",
               "annotate_by_reference_mask", ("class_name", "reference", "reference_field")),
    ActionSpec("annotate_by_text", "Annotate by text", settings.TextSettings, by_text.annotate_by_text,
               by_text.iter_annotate_by_text, by_text.prepare_annotate_by_text, names.TEXT_FIELD, "segmentation",
               "annotate_by_text", ("prompts",)),
    ActionSpec("compute_mask_proposals", "Compute mask proposals", settings.ProposalSettings,
               mask_proposals.compute_mask_proposals, mask_proposals.iter_compute_mask_proposals,
               mask_proposals.prepare_compute_mask_proposals, names.PROPOSALS_FIELD, "detections",
               "compute_mask_proposals"),
    ActionSpec("compute_proposal_map", "Compute proposal map", settings.MapSettings,
               proposal_map.compute_proposal_map, None, None, None, "brain", "compute_proposal_map", ("field",)),
    ActionSpec("annotate_by_examples", "Annotate by few-shot examples", settings.ExamplesSettings,
               by_examples.annotate_by_examples, by_examples.iter_annotate_by_examples,
               by_examples.prepare_annotate_by_examples, names.EXAMPLES_FIELD, "segmentation",
               "annotate_by_examples", ("examples",)),
    ActionSpec("evaluate", "Evaluate segmentations", settings.EvaluateSettings, evaluation.evaluate, None, None,
               names.EVAL_KEY, "evaluation", "evaluate_segmentations", ("pred_field", "gt_field")),
    ActionSpec("review", "Review pseudo-labels", settings.ReviewSettings, review.review, None, None,
               names.REVIEW_VIEW, "tags", "review_labels", ("field",)),
    ActionSpec("rerun_from_approved", "Rerun from approved labels", settings.RerunSettings,
               rerun.rerun_from_approved, rerun.iter_rerun_from_approved, rerun.prepare_rerun_from_approved, None,
               "segmentation", "rerun_from_approved", ("field",)),
    ActionSpec("train", "Train a segmentation model", settings.TrainSettings, train.train, train.iter_train, None,
               None, "model", "train_segmentation_model", ("label_field",)),
    ActionSpec("predict", "Predict with a trained model", settings.PredictSettings, train.predict,
               train.iter_predict, train.prepare_predict, names.PREDICTIONS_FIELD, "segmentation",
               "predict_with_model", ("model_path",)),
    ActionSpec("export_labels", "Export pseudo-labels", settings.ExportSettings, export.export_labels, None, None, None,
               "files", "export_labels", ("field", "export_dir")),
)}


def get(name: str) -> ActionSpec:
    """The action ``name``.

    Raises:
        ValueError: an unknown name, with the actions listed.
    """
    if name not in ACTIONS:
        raise SamtextError("unknown action %r; the actions are %s" % (name, ", ".join(ACTIONS)))
    return ACTIONS[name]
