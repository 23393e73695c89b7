"""samtext: segmentation labels for FiftyOne datasets from SAM and CLIP, without drawing them.

The public SDK::

    import samtext
    summary = samtext.annotate_by_reference(view, "cat", reference=sample, reference_field="mask")
    summary = samtext.compute_mask_proposals(view, out_field="proposals")
    summary = samtext.annotate_by_text(view, "car; pedestrian", out_field="street")
    report = samtext.evaluate(view, "cat_masks", "ground_truth", gt_targets={255: "cat"})
    samtext.review(view, "cat_masks"); samtext.rerun_from_approved(view, "cat_masks")
    model = samtext.train(view, "cat_masks").model_path; samtext.predict(test_view, model, out_field="cat_model")
    samtext.export_labels(view, "cat_masks", "/data/cats")

Every public name is imported plainly (heavy packages such as umap, the Brain and Grad-CAM are imported when a
function first needs them). Where each piece lives: ``docs/NOTES.md``, "Where do I change X".
"""

__version__ = "0.1.0"

from . import names, settings  # noqa: E402  every knob and shared name
from .actions import ACTIONS  # noqa: E402
from .actions.by_examples import (Exemplars, annotate_by_examples, iter_annotate_by_examples,  # noqa: E402
                                  prepare_annotate_by_examples)
from .actions.by_reference import (annotate_by_reference, iter_annotate_by_reference, load_references,  # noqa: E402
                                   prepare_annotate_by_reference)
from .actions.by_text import annotate_by_text, iter_annotate_by_text, prepare_annotate_by_text  # noqa: E402
from .actions.evaluation import SegmentationReport, evaluate  # noqa: E402
from .actions.export import export_labels  # noqa: E402
from .actions.mask_proposals import (compute_mask_proposals, iter_compute_mask_proposals,  # noqa: E402
                                     prepare_compute_mask_proposals, proposal_embeddings)
from .actions.proposal_map import compute_proposal_map  # noqa: E402
from .actions.rerun import iter_rerun_from_approved, prepare_rerun_from_approved, rerun_from_approved  # noqa: E402
from .actions.review import review  # noqa: E402
from .actions.train import (TrainSummary, iter_predict, iter_train, predict, prepare_predict, train,  # noqa: E402
                            training_overlap)
from .demo import make_demo_dataset  # noqa: E402
from .download import download_weights  # noqa: E402
from .errors import SamtextError  # noqa: E402
from .models import load_clip, load_sam  # noqa: E402
from .pipelines.text import parse_prompts  # noqa: E402
from .run.driver import RunStopped, RunSummary, run_with_progress  # noqa: E402
from .run.operations import recover_stale_operations  # noqa: E402

__all__ = [
    "ACTIONS", "Exemplars", "RunStopped", "RunSummary", "SamtextError", "SegmentationReport", "TrainSummary", "__version__",
    "annotate_by_examples", "annotate_by_reference", "annotate_by_text", "compute_mask_proposals",
    "compute_proposal_map", "download_weights", "evaluate", "export_labels", "iter_annotate_by_examples",
    "iter_annotate_by_reference", "iter_annotate_by_text", "iter_compute_mask_proposals", "iter_predict",
    "iter_rerun_from_approved", "iter_train", "load_clip", "load_references", "load_sam", "make_demo_dataset",
    "names", "parse_prompts", "predict", "prepare_annotate_by_examples", "prepare_annotate_by_reference",
    "prepare_annotate_by_text", "prepare_compute_mask_proposals", "prepare_predict", "prepare_rerun_from_approved",
    "proposal_embeddings", "recover_stale_operations", "rerun_from_approved", "review", "run_with_progress", "settings", "train",
    "training_overlap",
]
