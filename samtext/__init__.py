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
    "annotate_by_reference": ("reference", "annotate_by_reference"),
    "iter_annotate_by_reference": ("reference", "iter_annotate_by_reference"),
    "prepare_annotate_by_reference": ("reference", "prepare_annotate_by_reference"),
    "load_references": ("reference", "load_references"),
    "compute_mask_proposals": ("proposals", "compute_mask_proposals"),
    "iter_compute_mask_proposals": ("proposals", "iter_compute_mask_proposals"),
    "prepare_compute_mask_proposals": ("proposals", "prepare_compute_mask_proposals"),
    "proposal_embeddings": ("proposals", "proposal_embeddings"),
    "compute_proposal_map": ("proposal_map", "compute_proposal_map"),
    "annotate_by_examples": ("examples", "annotate_by_examples"),
    "iter_annotate_by_examples": ("examples", "iter_annotate_by_examples"),
    "prepare_annotate_by_examples": ("examples", "prepare_annotate_by_examples"),
    "Exemplars": ("examples", "Exemplars"),
    "annotate_by_text": ("text", "annotate_by_text"),
    "iter_annotate_by_text": ("text", "iter_annotate_by_text"),
    "prepare_annotate_by_text": ("text", "prepare_annotate_by_text"),
    "parse_prompts": ("pipelines.text", "parse_prompts"),
    "evaluate": ("evaluation", "evaluate"),
    "SegmentationReport": ("evaluation", "SegmentationReport"),
    "review": ("label_review", "review"),
    "train": ("training", "train"),
    "iter_train": ("training", "iter_train"),
    "TrainSummary": ("training", "TrainSummary"),
    "predict": ("training", "predict"),
    "iter_predict": ("training", "iter_predict"),
    "prepare_predict": ("training", "prepare_predict"),
    "training_overlap": ("training", "training_overlap"),
    "rerun_from_approved": ("loop", "rerun_from_approved"),
    "iter_rerun_from_approved": ("loop", "iter_rerun_from_approved"),
    "prepare_rerun_from_approved": ("loop", "prepare_rerun_from_approved"),
    "export_labels": ("export", "export_labels"),
    "RunSummary": ("driver", "RunSummary"),
    "RunStopped": ("driver", "RunStopped"),
    "run_with_progress": ("driver", "run_with_progress"),
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
