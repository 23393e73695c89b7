"""samtext's FiftyOne operators: thin forms over the ``samtext`` SDK."""

from .annotate_by_examples import AnnotateByExamples
from .annotate_by_reference import AnnotateByReferenceMask
from .annotate_by_text import AnnotateByText
from .compute_mask_proposals import ComputeMaskProposals
from .compute_proposal_map import ComputeProposalMap
from .evaluate_segmentations import EvaluateSegmentations
from .export_labels import ExportLabels
from .few_shot_panel import FewShotPanel
from .predict_with_model import PredictWithModel
from .rerun_from_approved import RerunFromApproved
from .review_labels import ReviewLabels
from .train_model import TrainSegmentationModel

OPERATORS = (AnnotateByReferenceMask, AnnotateByText, ComputeMaskProposals, ComputeProposalMap, AnnotateByExamples,
             EvaluateSegmentations, ReviewLabels, RerunFromApproved, ExportLabels, TrainSegmentationModel,
             PredictWithModel, FewShotPanel)


def register(p):
    for operator in OPERATORS:
        p.register(operator)
