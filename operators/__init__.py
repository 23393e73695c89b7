"""samtext's FiftyOne operators: thin forms over the ``samtext`` SDK."""

from .annotate_by_examples import AnnotateByExamples
from .annotate_by_reference import AnnotateByReferenceMask
from .compute_mask_proposals import ComputeMaskProposals

OPERATORS = (AnnotateByReferenceMask, ComputeMaskProposals, AnnotateByExamples)


def register(p):
    for operator in OPERATORS:
        p.register(operator)
