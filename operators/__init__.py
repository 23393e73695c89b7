"""samtext's FiftyOne operators: thin forms over the ``samtext`` SDK."""

from .annotate_by_reference import AnnotateByReferenceMask

OPERATORS = (AnnotateByReferenceMask,)


def register(p):
    for operator in OPERATORS:
        p.register(operator)
