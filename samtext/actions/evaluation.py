"""Evaluate a segmentation field against a ground truth, as a FiftyOne evaluation.

::

    report = samtext.evaluate(dataset, "cat_mask", "ground_truth", gt_targets={255: "cat"})
    report.miou, report.class_iou["cat"]
    dataset.load_evaluation_results("samtext_eval").print_report()
    dataset.sort_by("samtext_eval_iou")          # worst images first

The evaluation is a custom method of FiftyOne's segmentation evaluation
(:class:`SamtextSegmentationEvaluationConfig`), run through ``evaluate_segmentations(method=<config class>)``
when both fields are ``fo.Segmentation`` (FiftyOne's entry point accepts only those) and through the same
sequence of FiftyOne run calls otherwise. Either way the run is FiftyOne's: ``dataset.list_evaluations()``
lists it, ``load_evaluation_results`` gives FiftyOne's ``SegmentationResults`` with the pixel confusion matrix
(``print_report()``, the App's Model Evaluation panel), and deleting or renaming it removes or renames the
per-sample fields.

What samtext's method does differently from FiftyOne's "simple" one:

- both fields are read as *class maps* by class name (:mod:`samtext.run.class_maps`): the fields may store the same
  class under different mask values (``{255: "cat"}`` vs ``{1: "cat"}``), either may be ``fo.Detections`` with
  instance masks, and an unnamed 0/255 ground truth is read as the one class of a single-class prediction;
- each image is compared at its own resolution (a mask of another resolution with the same aspect ratio is
  resized, nearest neighbour; another aspect ratio skips that sample with a message);
- per sample it stores ``<eval_key>_iou`` and ``<eval_key>_dice``: for each class present in that image's
  ground truth or prediction, IoU = tp / (tp + fp + fn) and Dice = 2 tp / (2 tp + fp + fn), averaged over those
  classes (1.0 when the image has none of the classes on either side).
"""

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

import fiftyone as fo
import fiftyone.core.fields as fof
import fiftyone.utils.eval.segmentation as fous

from ..errors import SamtextError
from ..images import InputError
from ..run import class_maps as lm
from ..run import records
from ..run.driver import SampleError, run_with_progress_option, sample_collection
from ..settings import EvaluateSettings, signature_with

logger = logging.getLogger(__name__)

BACKGROUND = "background"


# ------------------------------------------------------------------------------------------ the report


@dataclass
class SegmentationReport:
    """The dataset-level result of :func:`evaluate`.

    Attributes:
        eval_key: the FiftyOne evaluation key (None: nothing was stored).
        gt_field, pred_field: the compared fields.
        classes: ``["background", *matched classes]``: the rows and columns of ``confusion_matrix``.
        confusion_matrix: ``(C, C)`` int64 pixel counts, rows = ground truth, columns = prediction, summed over
            the evaluated images (the same matrix FiftyOne's results hold as ``pixel_confusion_matrix``).
        class_iou: ``{class: IoU}`` from the summed matrix, background included; None for a class found
            nowhere (neither field, no image).
        class_dice: ``{class: Dice}``, likewise.
        miou: the mean of ``class_iou`` over background and the matched classes (the ones not None), where each
            class's intersection and union are summed over all images first (the standard dataset mIoU; it is
            *not* the mean of the per-image IoUs stored on the samples). None when no image was evaluated.
        mean_dice: the same mean of ``class_dice``.
        images: samples evaluated.
        missing_predictions: evaluated samples that had no prediction label, scored as an all-background
            prediction.
        skipped: samples not evaluated (no ground truth label, an unreadable mask, another aspect ratio), each
            with its id, file path and the problem.
        warnings: a field that a samtext run is still writing; predictions of a samtext model on samples it
            was trained on (how many).
        results: FiftyOne's ``SegmentationResults`` of the run (``print_report()``, ``plot_confusion_matrix()``).
    """

    eval_key: Optional[str]
    gt_field: str
    pred_field: str
    classes: List[str]
    confusion_matrix: np.ndarray
    class_iou: Dict[str, Optional[float]]
    class_dice: Dict[str, Optional[float]]
    miou: Optional[float]
    mean_dice: Optional[float]
    images: int = 0
    missing_predictions: int = 0
    skipped: List[SampleError] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    results: object = field(default=None, repr=False, compare=False)

    def to_dict(self, max_skipped: int = 50) -> dict:
        """The report as plain JSON-able values: ``skipped`` lists the first ``max_skipped`` skipped samples as
        text ("sample <id> (<filepath>): <problem>"), ``skipped_count`` counts them all; the confusion matrix is a
        list of rows; a class IoU/Dice is None where the class occurs nowhere."""
        return {
            "eval_key": self.eval_key,
            "gt_field": self.gt_field,
            "pred_field": self.pred_field,
            "classes": list(self.classes),
            "confusion_matrix": self.confusion_matrix.tolist(),
            "class_iou": dict(self.class_iou),
            "class_dice": dict(self.class_dice),
            "miou": self.miou,
            "mean_dice": self.mean_dice,
            "images": self.images,
            "missing_predictions": self.missing_predictions,
            "skipped_count": len(self.skipped),
            "skipped": [str(s) for s in self.skipped[:max_skipped]],
            "warnings": list(self.warnings),
        }


def class_scores(matrix: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-class IoU and Dice of a ``(C, C)`` confusion matrix (rows = ground truth, columns = prediction):
    two ``(C,)`` float arrays, NaN where the class is in neither the rows nor the columns."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    both = matrix.sum(axis=1) + matrix.sum(axis=0)  # |gt| + |pred|
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(both > 0, tp / (both - tp), np.nan)
        dice = np.where(both > 0, 2 * tp / both, np.nan)
    return iou, dice


def image_scores(matrix: np.ndarray) -> Tuple[float, float]:
    """``(IoU, Dice)`` of one image's ``(C, C)`` confusion matrix (class 0 = background): the means over the
    foreground classes present in its ground truth or prediction; ``(1.0, 1.0)`` when none is."""
    iou, dice = class_scores(matrix)
    present = ~np.isnan(iou[1:])
    if not present.any():
        return 1.0, 1.0
    return float(iou[1:][present].mean()), float(dice[1:][present].mean())


def _mean(values: np.ndarray) -> Optional[float]:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


# ------------------------------------------------------------------------------------------ FiftyOne method


def _targets_for_config(targets: Optional[Mapping]) -> Optional[Dict[str, str]]:
    """``{value: name}`` with string keys, as a FiftyOne run config stores it (BSON keys are strings)."""
    return None if targets is None else {str(int(k)): str(v) for k, v in dict(targets).items()}


def _targets_from_config(targets: Optional[Mapping]) -> Optional[Dict[int, str]]:
    return None if targets is None else {int(k): str(v) for k, v in dict(targets).items()}


class SamtextSegmentationEvaluationConfig(fous.SegmentationEvaluationConfig):
    """Configures :class:`SamtextSegmentationEvaluation`: FiftyOne's segmentation evaluation of two fields read
    as class maps by class name.

    Arguments:
        pred_field: the predicted ``fo.Segmentation`` or ``fo.Detections`` (instance masks) field.
        gt_field: the ground truth field, likewise.
        classes: the class names compared, in order (matrix row/column ``k`` is ``classes[k - 1]``; 0 is
            background).
        gt_targets, pred_targets: ``{mask value: class name}`` overriding a Segmentation field's own
            ``mask_targets``.
    """

    def __init__(self, pred_field, gt_field, classes=None, gt_targets=None, pred_targets=None, **kwargs):
        kwargs.pop("compute_dice", None)  # FiftyOne's per-sample "dice" is pixel accuracy; we store our own
        super().__init__(pred_field, gt_field, compute_dice=False, **kwargs)
        self.classes = [str(c) for c in classes] if classes is not None else None
        self.gt_targets = _targets_for_config(gt_targets)
        self.pred_targets = _targets_for_config(pred_targets)

    @property
    def method(self):
        return "samtext"


class SamtextSegmentationEvaluation(fous.SegmentationEvaluation):
    """Per image: both fields as class maps at the image's size, the image's confusion matrix added to the
    dataset's, and ``<eval_key>_iou`` / ``<eval_key>_dice`` stored on the sample. After
    :meth:`evaluate_samples`, ``skipped`` and ``missing_predictions`` say what was not scored normally."""

    def __init__(self, config):
        super().__init__(config)
        self.skipped: List[SampleError] = []
        self.missing_predictions = 0
        self.images = 0

    def _score_fields(self, eval_key) -> List[str]:
        return ["%s_iou" % eval_key, "%s_dice" % eval_key]

    def register_samples(self, samples, eval_key):
        if eval_key is None:
            return
        for name in self._score_fields(eval_key):
            samples._dataset.add_sample_field(name, fof.FloatField)

    def get_fields(self, samples, eval_key, include_custom_metrics=True):
        fields = self._score_fields(eval_key)
        if include_custom_metrics:
            fields.extend(self.get_custom_metric_fields(samples, eval_key))
        return fields

    def cleanup(self, samples, eval_key):
        samples._dataset.delete_sample_fields(self._score_fields(eval_key), error_level=1)
        self.cleanup_custom_metrics(samples, eval_key)
        samples._delete_empty_sidebar_group(eval_key)

    def evaluate_samples(self, samples, eval_key=None, mask_targets=None, progress=None):
        """Evaluates every sample of ``samples`` (``mask_targets`` is not used: the config's ``classes`` and
        targets name the values). ``progress``: True for a progress bar, or a callable ``(done, total)``.

        Returns:
            FiftyOne's ``SegmentationResults`` over ``["background", *classes]``.
        """
        return run_with_progress_option(self._iter_samples(samples, eval_key), progress)

    def _iter_samples(self, samples, eval_key):
        config = self.config
        dataset = samples._root_dataset
        names = list(config.classes or [])
        classes = [BACKGROUND] + names
        nc = len(classes)
        gt_read = lm.ClassMapReader(dataset, config.gt_field, names, _targets_from_config(config.gt_targets))
        pred_read = lm.ClassMapReader(dataset, config.pred_field, names, _targets_from_config(config.pred_targets))
        matrix = np.zeros((nc, nc), dtype=np.int64)
        matches = []
        scores: Dict[str, Tuple[Optional[float], Optional[float]]] = {}
        self.skipped, self.missing_predictions, self.images = [], 0, 0

        view = samples.select_fields([config.gt_field, config.pred_field])
        total = len(view)
        for done, sample in enumerate(view.iter_samples(), 1):
            gt_label, pred_label = sample[config.gt_field], sample[config.pred_field]
            try:
                if gt_label is None:
                    raise InputError("no ground truth label in field %r" % config.gt_field)
                size = lm.frame_size(sample.filepath, sample.metadata, gt_label, pred_label)
                if size is None:
                    raise InputError("the image cannot be read and no mask gives its size")
                gt_map = gt_read(gt_label, size)
                pred_map = pred_read(pred_label, size)
            except (InputError, ValueError, OSError) as e:
                self.skipped.append(SampleError(sample.id, sample.filepath, str(e)))
                scores[sample.id] = (None, None)
                yield done, total
                continue
            if pred_map is None:
                self.missing_predictions += 1
                pred_map = np.zeros(size, np.uint8)
            scored = (gt_map != lm.IGNORE) & (pred_map != lm.IGNORE)  # "void" pixels are not scored
            flat = gt_map[scored].astype(np.int64) * nc + pred_map[scored]
            image_matrix = np.bincount(flat, minlength=nc * nc).reshape(nc, nc)
            matrix += image_matrix
            self.images += 1
            scores[sample.id] = image_scores(image_matrix)
            gt_id, pred_id = getattr(gt_label, "id", None), getattr(pred_label, "id", None)
            for i, j in zip(*np.nonzero(image_matrix)):
                matches.append((classes[i], classes[j], int(image_matrix[i, j]), gt_id, pred_id))
            yield done, total

        if eval_key is not None and scores:
            iou_field, dice_field = self._score_fields(eval_key)
            dataset.set_values(iou_field, {k: v[0] for k, v in scores.items()}, key_field="id")
            dataset.set_values(dice_field, {k: v[1] for k, v in scores.items()}, key_field="id")
        return fous.SegmentationResults(samples, config, eval_key, matrix, classes, matches=matches,
                                        missing=BACKGROUND, backend=self)


# ------------------------------------------------------------------------------------------ the SDK call


def _training_overlap_note(dataset, samples, pred_field: str) -> Optional[str]:
    """A warning when ``pred_field`` holds a samtext model's predictions and ``samples`` include images that model
    was trained on (their scores flatter it); None otherwise."""
    import os

    record = records.read_run(dataset, records.run_key_for(pred_field)) or {}
    path = (record.get("settings") or {}).get("model_path")
    if record.get("action") != "predict" or not path or not os.path.isfile(path):
        return None
    from .train import training_overlap

    count = training_overlap(samples, path)
    if not count:
        return None
    note = ("%d of the %d evaluated samples were in the training split of the model that predicted %r (%s): "
            "evaluate on samples it did not see" % (count, len(samples), pred_field, path))
    logger.warning("samtext: %s", note)
    return note


def evaluate(samples, pred_field: str, gt_field: str, progress: Union[bool, Callable[[int, int], None], None] = None,
             **kwargs) -> SegmentationReport:
    """Evaluates ``pred_field`` against ``gt_field`` on ``samples`` and stores it as the FiftyOne evaluation
    ``eval_key``.

    Both fields may be ``fo.Segmentation`` (class-value masks, ``(H, W)``) or ``fo.Detections`` with instance
    masks (pasted at their boxes); they are compared by class name (see
    :func:`samtext.run.class_maps.match_classes`): classes that only one field names are read as background on both
    sides. Every image is compared at its own size
    ``(H, W)`` (its metadata, else its file's header, EXIF-upright; its ground truth mask's size when the image
    cannot be read); masks of another resolution with the same aspect ratio are resized (nearest neighbour).

    Samples without a ground truth label, with a mask of another aspect ratio or an unreadable mask are skipped
    and listed in ``report.skipped`` (their per-sample scores are None); a sample with ground truth but no
    prediction label is scored as an all-background prediction (counted in ``report.missing_predictions``).

    Stored (when ``eval_key`` is not None): the FiftyOne evaluation ``eval_key`` (its results hold the summed
    pixel confusion matrix over ``["background", *classes]``, rows = ground truth, columns = prediction) and
    the sample fields ``<eval_key>_iou`` and ``<eval_key>_dice`` (per image: the mean over the classes present in
    its ground truth or prediction; 1.0 when neither has any). Nothing else in the dataset changes. An existing
    evaluation ``eval_key`` of the same two fields is replaced, as FiftyOne does (its per-sample fields are
    deleted first); FiftyOne refuses one of other fields or of another method: delete it or choose another key.

    Arguments:
        samples: a dataset or view of images (a patches view stands for its images).
        pred_field: the field to evaluate.
        gt_field: the ground truth field.
        eval_key: the evaluation's key; None computes the report and stores nothing.
        classes: the class names to compare (each named by both fields); default every class they share.
        gt_targets, pred_targets: ``{mask value: class name}`` overriding a Segmentation field's
            ``mask_targets`` (e.g. ``gt_targets={255: "cat"}`` for a 0/255 ground truth).
        progress: True for a progress bar, or a callable ``(done, total)``.
        (``eval_key``, ``classes``, ``gt_targets`` and ``pred_targets`` are :class:`samtext.settings.EvaluateSettings`.)

    Returns:
        a :class:`SegmentationReport`; ``report.miou`` is the dataset mIoU (intersections and unions summed over
        the images, then the mean over background and the classes).

    Raises:
        ValueError: a field is missing or not a Segmentation/Detections field; the fields share no class name
            (the message lists both fields' classes); an existing evaluation ``eval_key`` that FiftyOne will not
            replace.
    """
    settings = EvaluateSettings.from_kwargs(kwargs, "evaluate")
    eval_key, classes, gt_targets, pred_targets = (settings.eval_key, settings.classes, settings.gt_targets,
                                                   settings.pred_targets)
    dataset, samples = sample_collection(samples)
    if pred_field == gt_field:
        raise SamtextError("pred_field and gt_field are both %r: a field evaluated against itself always scores "
                           "mIoU 1.0; give the ground truth's field as gt_field" % pred_field)
    names = lm.match_classes(samples, pred_field, gt_field, classes, gt_targets, pred_targets)
    warnings = [n for n in (records.running_note(dataset, f) for f in (pred_field, gt_field)) if n]
    overlap = _training_overlap_note(dataset, samples, pred_field)
    if overlap:
        warnings.append(overlap)
    options = dict(classes=names, gt_targets=gt_targets, pred_targets=pred_targets)
    kinds = {lm.field_type(dataset, f) for f in (pred_field, gt_field)}
    if kinds == {fo.Segmentation}:
        # FiftyOne's entry point, with samtext's method
        results = samples.evaluate_segmentations(pred_field, gt_field=gt_field, eval_key=eval_key,
                                                 method=SamtextSegmentationEvaluationConfig, progress=progress,
                                                 **options)
        method = results.backend
    else:
        # evaluate_segmentations() accepts only fo.Segmentation fields; these are its steps
        config = SamtextSegmentationEvaluationConfig(pred_field, gt_field, **options)
        method = config.build()
        method.ensure_requirements()
        method.register_run(samples, eval_key)
        method.register_samples(samples, eval_key)
        results = method.evaluate_samples(samples, eval_key=eval_key, progress=progress)
        method.compute_custom_metrics(samples, eval_key, results)
        if eval_key is not None:
            method.save_run_results(samples, eval_key, results)
            method.add_fields_to_sidebar_group(samples, eval_key, omit_fields=(pred_field, gt_field))

    matrix = np.asarray(results.pixel_confusion_matrix, dtype=np.int64)
    class_list = [str(c) for c in results.classes]
    iou, dice = class_scores(matrix)
    if method.skipped:
        logger.warning("samtext evaluate: %d sample(s) skipped, e.g. %s", len(method.skipped), method.skipped[0])

    if method.images and method.missing_predictions == method.images:
        warnings.append("no evaluated sample has a label in %r (%d scored as all background): label them first, or "
                        "choose the field that holds the predictions" % (pred_field, method.images))
        logger.warning("samtext evaluate: %s", warnings[-1])

    def as_dict(values):
        return {c: (None if np.isnan(v) else float(v)) for c, v in zip(class_list, values)}

    return SegmentationReport(
        eval_key=eval_key, gt_field=gt_field, pred_field=pred_field, classes=class_list, confusion_matrix=matrix,
        class_iou=as_dict(iou), class_dice=as_dict(dice), miou=_mean(iou), mean_dice=_mean(dice),
        images=method.images, missing_predictions=method.missing_predictions, skipped=list(method.skipped),
        warnings=warnings, results=results)


signature_with(evaluate, EvaluateSettings)
