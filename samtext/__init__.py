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

FiftyOne is imported only when an SDK function that needs it is first used, so the model and pipeline
layers (``samtext.models``, ``samtext.pipelines``) stay quick to import.
"""

__version__ = "0.1.0"

_LAZY = {
    "annotate_by_reference": ("actions.by_reference", "annotate_by_reference"),
    "iter_annotate_by_reference": ("actions.by_reference", "iter_annotate_by_reference"),
    "prepare_annotate_by_reference": ("actions.by_reference", "prepare_annotate_by_reference"),
    "load_references": ("actions.by_reference", "load_references"),
    "compute_mask_proposals": ("actions.mask_proposals", "compute_mask_proposals"),
    "iter_compute_mask_proposals": ("actions.mask_proposals", "iter_compute_mask_proposals"),
    "prepare_compute_mask_proposals": ("actions.mask_proposals", "prepare_compute_mask_proposals"),
    "proposal_embeddings": ("actions.mask_proposals", "proposal_embeddings"),
    "compute_proposal_map": ("actions.proposal_map", "compute_proposal_map"),
    "annotate_by_examples": ("actions.by_examples", "annotate_by_examples"),
    "iter_annotate_by_examples": ("actions.by_examples", "iter_annotate_by_examples"),
    "prepare_annotate_by_examples": ("actions.by_examples", "prepare_annotate_by_examples"),
    "Exemplars": ("actions.by_examples", "Exemplars"),
    "annotate_by_text": ("actions.by_text", "annotate_by_text"),
    "iter_annotate_by_text": ("actions.by_text", "iter_annotate_by_text"),
    "prepare_annotate_by_text": ("actions.by_text", "prepare_annotate_by_text"),
    "parse_prompts": ("pipelines.text", "parse_prompts"),
    "evaluate": ("actions.evaluation", "evaluate"),
    "SegmentationReport": ("actions.evaluation", "SegmentationReport"),
    "review": ("actions.review", "review"),
    "train": ("actions.train", "train"),
    "iter_train": ("actions.train", "iter_train"),
    "TrainSummary": ("actions.train", "TrainSummary"),
    "predict": ("actions.train", "predict"),
    "iter_predict": ("actions.train", "iter_predict"),
    "prepare_predict": ("actions.train", "prepare_predict"),
    "training_overlap": ("actions.train", "training_overlap"),
    "rerun_from_approved": ("actions.rerun", "rerun_from_approved"),
    "iter_rerun_from_approved": ("actions.rerun", "iter_rerun_from_approved"),
    "prepare_rerun_from_approved": ("actions.rerun", "prepare_rerun_from_approved"),
    "export_labels": ("actions.export", "export_labels"),
    "RunSummary": ("run.driver", "RunSummary"),
    "RunStopped": ("run.driver", "RunStopped"),
    "run_with_progress": ("run.driver", "run_with_progress"),
    "load_sam": ("models", "load_sam"),
    "load_clip": ("models", "load_clip"),
    "download_weights": ("download", "download_weights"),
    "make_demo_dataset": ("demo", "make_demo_dataset"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module("." + module, __name__), attr)
    raise AttributeError("module 'samtext' has no attribute %r" % name)
