"""samtext's FiftyOne operators: thin forms over the ``samtext`` SDK."""

from .annotate_by_examples import AnnotateByExamples
from .annotate_by_reference import AnnotateByReferenceMask
from .annotate_by_text import AnnotateByText
from .compute_mask_proposals import ComputeMaskProposals

OPERATORS = (AnnotateByReferenceMask, AnnotateByText, ComputeMaskProposals, AnnotateByExamples)


def register(p):
    for operator in OPERATORS:
        p.register(operator)
