"""SDK: train a segmentation network on a label field (pseudo-labels or ground truth), and label with it.

Example::

    import fiftyone as fo
    import samtext

    dataset = fo.load_dataset("pets")
    summary = samtext.train(dataset.match_tags("train"), "cat_pseudo", epochs=30, progress=True)
    print(summary.best_val_miou, summary.model_path)
    samtext.predict(dataset.match_tags("test"), summary.model_path, out_field="cat_predicted")

:func:`train` reads the field's labels as class maps (:class:`samtext.run.class_maps.ClassMapReader`: matched by
class *name*), trains with :func:`samtext.pipelines.training.iter_fit` (checkpoint after every epoch, resume,
validation mIoU) and records the run on the dataset (run key ``samtext_train_<label_field>``).
:func:`predict` is an action of the shared run driver (:func:`samtext.run.driver.iter_run`): resume, per-sample
errors, batched writes and the run record come from there; it writes a ``fo.Segmentation`` whose
``mask_targets`` name the checkpoint's classes.

(The module is ``training``, not ``train``: importing a submodule binds its name on the package, so a module
``samtext/train.py`` would replace the lazy function ``samtext.train`` after its first use.)
"""

import functools
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Generator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

import fiftyone as fo

from ..images import InputError, load_image
from ..names import APPROVED_TAG, PREDICTIONS_FIELD, TRAIN_RUN_KEY_PREFIX
from ..errors import SamtextError
from ..pipelines import training as segtrain
from ..pipelines.result import Instance, MaskResult
from ..progress import run_events
from ..run import class_maps as lm
from ..run import driver, records
from ..settings import PredictSettings, TrainSettings, signature_with
from .review import is_rejected

logger = logging.getLogger(__name__)

TRAIN_ACTION = TrainSettings.action
PREDICT_ACTION = PredictSettings.action
MODELS_DIR_ENV = "SAMTEXT_MODELS_DIR"


def train_run_key(label_field: str) -> str:
    """The run key of the training record of ``label_field``: ``samtext_train_<label_field>``."""
    return TRAIN_RUN_KEY_PREFIX + label_field


def models_dir() -> str:
    """Where models go by default: ``$SAMTEXT_MODELS_DIR``, else ``~/.samtext/models``."""
    return os.path.expanduser(os.environ.get(MODELS_DIR_ENV) or os.path.join("~", ".samtext", "models"))


def default_model_path(dataset: fo.Dataset, label_field: str) -> str:
    """``<models_dir>/<dataset name>_<label_field>.pt`` (characters other than letters, digits, ``.-_``
    replaced by ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "%s_%s" % (dataset.name, label_field)).strip("._") or "model"
    return os.path.join(models_dir(), name + ".pt")


@dataclass
class TrainSummary:
    """What :func:`train` did.

    ``train_samples``/``val_samples``: the samples trained and validated on; ``skipped_unlabelled``: samples
    without a label in the field (left out); ``skipped_rejected``: samples whose label a review rejected (left
    out); ``background_only``: usable samples whose label is an empty mask
    (kept, as examples of images without the classes); ``failed``/``errors``: samples left out because their
    image or mask could not be read. ``start_epoch``: the epochs the checkpoint had when this call started;
    ``epochs_done``: those it has now. ``val_iou``: the last epoch's validation IoU per class (background
    included); ``status``: "completed", "canceled" or "failed".
    """

    label_field: str
    model_path: str
    run_key: str
    classes: List[str]
    arch: str
    status: str = "completed"
    train_samples: int = 0
    val_samples: int = 0
    skipped_unlabelled: int = 0
    skipped_rejected: int = 0
    background_only: int = 0
    failed: int = 0
    errors: List[driver.SampleError] = field(default_factory=list)
    epochs: int = 0
    start_epoch: int = 0
    epochs_done: int = 0
    best_val_miou: Optional[float] = None
    best_epoch: Optional[int] = None
    val_miou: Optional[float] = None
    val_iou: Optional[Dict[str, Optional[float]]] = None
    train_loss: Optional[float] = None
    backbone_start: str = ""
    device: str = "cpu"
    seconds: float = 0.0
    history: List[dict] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def to_dict(self, max_errors: int = 50) -> dict:
        d = asdict(self)
        d["errors"] = [str(e) for e in self.errors[:max_errors]]
        return d


# ------------------------------------------------------------------------------------------- validation


def check_not_running(dataset: fo.Dataset, label_field: str) -> None:
    """Refuses a label field that a samtext action is still writing (its run record has a run "running").

    Raises:
        ValueError: naming the run(s) and the way round (``allow_running=True`` for a run that died).
    """
    action, running = records.running_runs(dataset, label_field)
    if running:
        raise SamtextError(
            "label field %r is still being written by samtext (%s run %s, status 'running'); train when it has "
            "finished, or pass allow_running=True if that run died without saying so"
            % (label_field, action, ", ".join(running)))


def training_classes(samples, label_field: str, classes: Optional[Sequence[str]],
                     label_targets: Optional[Mapping]) -> List[str]:
    """The class names to train: ``classes`` (checked against the field's names) or the field's own.

    Raises:
        ValueError: a field without class names and no (single) class given, a class the field does not have,
            ``label_targets`` on a Detections field.
    """
    dataset = samples._root_dataset
    kind = lm.field_type(dataset, label_field, "label_field")
    if not len(samples.exists(label_field).limit(1)):
        raise SamtextError("label_field %r has no labels in these %d samples (the field is declared, but no sample "
                           "has one): label them first, or choose the field that holds the labels"
                           % (label_field, len(samples)))
    if label_targets is not None and kind is not fo.Segmentation:
        raise SamtextError("label_targets names the values of a fo.Segmentation field; %r holds fo.Detections "
                         "(its classes are the detections' labels)" % label_field)
    named = lm.field_classes(samples, label_field, label_targets)
    given = None if classes is None else [str(c).strip() for c in ([classes] if isinstance(classes, str)
                                                                     else classes)]
    if given is not None and (not given or not all(given) or len(set(given)) != len(given)):
        raise SamtextError("classes must be distinct non-empty names, got %r" % (classes,))
    if not named:
        if kind is fo.Segmentation and given is not None and len(given) == 1:
            return given  # unnamed masks: every nonzero pixel is the one class
        if kind is fo.Detections:
            raise SamtextError("label field %r has no labelled detections in these samples" % label_field)
        raise SamtextError(
            "label field %r has no class names (no mask_targets); name its nonzero pixels with one class "
            "(classes=['cat']) or name its values (label_targets={255: 'cat'})" % label_field)
    if given is None:
        return named
    missing = [c for c in given if c not in named]
    if missing:
        raise SamtextError("label field %r has no class %s; its classes are %s" % (
            label_field, ", ".join(repr(c) for c in missing), named))
    return given


@dataclass
class _Plan:
    """What a training call will use, read before anything is written."""

    dataset: fo.Dataset
    ids: List[str]
    paths: Dict[str, str]
    skipped_unlabelled: int
    skipped_rejected: int
    background_only: int
    errors: List[driver.SampleError]
    total: int


def scan_samples(samples, label_field: str, reader: lm.ClassMapReader, skip_tag: Optional[str] = None,
                 approved_tag: str = APPROVED_TAG) -> _Plan:
    """Reads every sample's image and label once: which samples can be trained on, which have no label, which
    fail (image or mask unreadable, mask of another aspect ratio), and how many are background only."""
    dataset = samples._root_dataset
    plan = _Plan(dataset, [], {}, 0, 0, 0, [], 0)
    for sample in samples.select_fields([label_field, "metadata"]).iter_samples():
        plan.total += 1
        label = sample[label_field]
        if label is None:
            plan.skipped_unlabelled += 1
            continue
        if is_rejected(getattr(label, "tags", None), sample.tags, skip_tag, approved_tag):  # Detections have none
            plan.skipped_rejected += 1
            continue
        try:
            cmap = reader(label, lm.sample_size(sample.filepath, sample.metadata))  # the header, not the pixels
        except (InputError, ValueError, OSError) as e:
            err = driver.SampleError(sample.id, sample.filepath, str(e))
            logger.warning("samtext: training leaves out %s", err)
            plan.errors.append(err)
            continue
        plan.ids.append(sample.id)
        plan.paths[sample.id] = sample.filepath
        plan.background_only += int(not cmap.any())
    return plan


def _loader(dataset: fo.Dataset, label_field: str, reader: lm.ClassMapReader, paths: Mapping[str, str]):
    """``sample id -> (image, class map)``, reading both when asked (errors name the sample)."""

    def load(sid: str) -> Tuple[np.ndarray, np.ndarray]:
        path = paths[sid]
        try:
            image = load_image(path)
            labels = dataset.select(sid).values(label_field)
            if not labels:
                raise InputError("the sample is no longer in the dataset")
            cmap = reader(labels[0], image.shape[:2])
            if cmap is None:
                raise InputError("its label in %r is gone" % label_field)
        except (InputError, ValueError, OSError) as e:
            raise segtrain.UnreadableItem(str(e)) from e
        return image, cmap

    return load


# --------------------------------------------------------------------------------------------- training


def iter_train(
    train_view,
    label_field: str,
    model_path: Optional[str] = None,
    **kwargs,
) -> Generator[segtrain.TrainEvent, None, TrainSummary]:
    """The work of :func:`train`, as a generator of :class:`samtext.pipelines.training.TrainEvent` progress
    (``epoch, epochs, step, steps, metrics``) that returns the :class:`TrainSummary`. Closing it stops training
    after the step in progress (the last completed epoch's checkpoint stays) and records "canceled"."""
    from ..models.precision import resolve_device

    start = time.time()
    settings = TrainSettings.from_kwargs(dict(kwargs, model_path=model_path), "train")
    dataset, samples = driver.sample_collection(train_view)
    if len(samples) == 0:
        raise SamtextError("the training view is empty: no sample to train on")
    lm.field_type(dataset, label_field, "label_field")
    if not settings.allow_running:
        check_not_running(dataset, label_field)
    label_targets = settings.label_targets
    names = training_classes(samples, label_field, settings.classes, label_targets)
    reader = lm.ClassMapReader(dataset, label_field, names, label_targets)
    config = segtrain.TrainConfig(classes=names, **settings.recipe()).check()
    val_fraction, seed = settings.val_fraction, settings.seed
    model_path = os.path.abspath(os.path.expanduser(settings.model_path or default_model_path(dataset, label_field)))
    if os.path.isdir(model_path):
        raise SamtextError("model_path %s is a folder; give the checkpoint's file name" % model_path)
    os.makedirs(os.path.dirname(model_path), exist_ok=True)
    device = resolve_device(settings.device)

    plan = scan_samples(samples, label_field, reader, settings.skip_tag, settings.approved_tag)
    if not plan.ids:
        raise SamtextError(
            "no usable sample to train on among the %d of the view: %d have no label in %r, %d could not be read%s"
            % (plan.total, plan.skipped_unlabelled, label_field, len(plan.errors),
               " (first: %s)" % plan.errors[0] if plan.errors else ""))
    if plan.skipped_unlabelled:
        logger.info("samtext: %d samples have no label in %r and are left out of training", plan.skipped_unlabelled,
                    label_field)
    train_ids, val_ids = segtrain.split_ids(plan.ids, val_fraction, seed)
    config.data = dict(label_field=label_field, label_targets=_targets_json(label_targets),
                       val_fraction=float(val_fraction), samples=len(plan.ids),
                       samples_digest=segtrain.ids_digest(plan.ids))
    load = _loader(dataset, label_field, reader, plan.paths)
    val_set = segtrain.PairDataset(val_ids, load) if val_ids else None
    train_set = segtrain.PairDataset(train_ids, load)
    events = segtrain.iter_fit(train_set, val_set, config, model_path, device,
                               resume=settings.resume, restart=settings.restart,
                               extra=dict(dataset=dataset.name, label_field=label_field))

    key = train_run_key(label_field)
    summary = TrainSummary(
        label_field=label_field, model_path=model_path, run_key=key, classes=names, arch=config.arch,
        train_samples=len(train_ids), val_samples=len(val_ids), skipped_unlabelled=plan.skipped_unlabelled,
        skipped_rejected=plan.skipped_rejected,
        background_only=plan.background_only, failed=len(plan.errors), errors=plan.errors, epochs=config.epochs,
        device=device)
    if plan.background_only == len(plan.ids):
        summary.notes.append(
            "every one of the %d labels is background only (no pixel of %s): the network can only learn to "
            "predict background; check the field's classes (mask_targets or label_targets)" % (len(plan.ids), names))
        logger.warning("samtext: %s", summary.notes[-1])
    _record_start(dataset, key, summary, config)
    summary.status, error = "failed", None
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                _take_result(summary, stop.value)
                break
            if event.metrics.get("end_of_epoch"):
                _take_epoch(summary, event)
            yield event
        summary.status = "completed"
    except (GeneratorExit, KeyboardInterrupt):
        summary.status = "canceled"
        raise
    except Exception as e:
        error = "%s: %s" % (type(e).__name__, e)
        raise
    finally:
        events.close()
        unreadable = dict(val_set.unreadable if val_set is not None else {}, **train_set.unreadable)
        for sid, why in unreadable.items():  # found while training: left out, named
            summary.errors.append(driver.SampleError(sid, plan.paths.get(sid, ""), why))
        summary.failed += len(unreadable)
        summary.seconds = time.time() - start
        _record_end(dataset, key, summary, error)
    return summary


def _targets_json(targets: Optional[Mapping]) -> Optional[dict]:
    return None if targets is None else {str(k): str(v) for k, v in dict(targets).items()}


def _take_epoch(summary: TrainSummary, event: segtrain.TrainEvent) -> None:
    m = event.metrics
    summary.epochs_done = event.epoch
    summary.train_loss, summary.val_miou, summary.val_iou = m.get("train_loss"), m.get("val_miou"), m.get("val_iou")
    if m.get("val_miou") is not None and (summary.best_val_miou is None or m["val_miou"] > summary.best_val_miou):
        summary.best_val_miou, summary.best_epoch = m["val_miou"], event.epoch
    summary.backbone_start = m.get("backbone_start", summary.backbone_start)
    summary.history.append({k: v for k, v in m.items() if k not in ("end_of_epoch", "backbone_start")})


def _take_result(summary: TrainSummary, result: segtrain.FitResult) -> None:
    summary.start_epoch, summary.epochs_done = result.start_epoch, result.epochs_done
    summary.best_val_miou, summary.best_epoch = result.best_val_miou, result.best_epoch
    summary.history, summary.backbone_start = list(result.history), result.backbone_start
    if result.history:
        last = result.history[-1]
        summary.train_loss, summary.val_miou, summary.val_iou = last["train_loss"], last["val_miou"], last["val_iou"]


def _record_start(dataset: fo.Dataset, key: str, summary: TrainSummary, config: segtrain.TrainConfig) -> None:
    from .. import __version__

    settings = config.to_dict()
    data = settings.pop("data")
    records.register_run(dataset, key, dict(
        action=TRAIN_ACTION, label_field=summary.label_field, model_path=summary.model_path, settings=settings,
        data=data, classes=summary.classes, status="running", started=records.now(), device=summary.device,
        train_samples=summary.train_samples, val_samples=summary.val_samples,
        skipped_unlabelled=summary.skipped_unlabelled, skipped_rejected=summary.skipped_rejected,
        background_only=summary.background_only,
        failed=summary.failed, errors=[str(e) for e in summary.errors[:20]], epochs=summary.epochs,
        samtext_version=__version__, fiftyone_version=fo.constants.VERSION))


def _record_end(dataset: fo.Dataset, key: str, summary: TrainSummary, error: Optional[str] = None) -> None:
    try:
        records.update_run(dataset, key, status=summary.status, error=error, finished=records.now(),
                       seconds=summary.seconds, start_epoch=summary.start_epoch, epochs_done=summary.epochs_done,
                       best_val_miou=summary.best_val_miou, best_epoch=summary.best_epoch, val_miou=summary.val_miou,
                       val_iou=summary.val_iou, backbone_start=summary.backbone_start, history=summary.history,
                       failed=summary.failed, errors=[str(e) for e in summary.errors[:20]], notes=summary.notes)
    except Exception:  # bookkeeping: never hide the run's own outcome behind it
        logger.exception("samtext: could not record the end of training %r", key)


def train(train_view, label_field: str, model_path: Optional[str] = None,
          progress: Union[bool, Callable[..., None], None] = None, **kwargs) -> TrainSummary:
    """Trains a segmentation network on the labels in ``label_field`` of ``train_view``'s samples.

    Arguments:
        train_view: a ``fo.Dataset`` or view; samples without a label in ``label_field`` are left out (counted),
            samples whose label is an empty mask are kept as images without the classes, samples whose image or
            mask cannot be read are left out with an error naming them.
        label_field: a ``fo.Segmentation`` field (class values named by its ``mask_targets``) or a
            ``fo.Detections`` field with instance masks.
        model_path: the checkpoint file (default :func:`default_model_path`); written after every epoch.
        progress: True for a progress bar, or a callable ``(epoch, epochs, step, steps, metrics)``; the
            end-of-epoch call (``metrics["end_of_epoch"]``) comes after that epoch's checkpoint is written.
        **kwargs: the training's settings (:class:`samtext.settings.TrainSettings`, with the recipe of
            :class:`samtext.settings.TrainRecipe`): ``classes`` (default: every class the field names; a
            Segmentation field without names is read as binary with ``classes=["cat"]``), ``label_targets``,
            ``arch``, ``epochs``, ``image_size``, ``batch_size``, ``lr``, ``val_fraction``, ``seed``, ``device``,
            ``backbone_weights``, ``resume`` (continue a checkpoint trained with the same settings and samples),
            ``restart``, ``allow_running``, ``skip_tag``, and the recipe's ``weight_decay``, ``warmup``,
            ``final_lr``, ``scale_range``, ``flip``, ``jitter``.

    Returns:
        the :class:`TrainSummary`; the run is also recorded on the dataset under ``samtext_train_<label_field>``.

    Raises:
        ValueError: an empty view, a missing field or one of another type, unknown classes, a field still being
            written, no usable sample, a checkpoint trained otherwise; before anything is written.
    """
    events = iter_train(train_view, label_field, model_path, **kwargs)
    if progress is not True:
        return run_events(events, progress or None)
    from tqdm.auto import tqdm

    with tqdm(desc="samtext train", unit="step") as bar:

        def show(epoch, epochs, step, steps, metrics):
            bar.total, bar.n = epochs * steps, (epoch - 1) * steps + step
            bar.set_postfix({k: round(v, 4) for k, v in metrics.items() if k in ("loss", "val_miou") and v is not None},
                            refresh=True)

        return run_events(events, show)


# ------------------------------------------------------------------------------------------- prediction


def training_overlap(samples, model_path: str) -> int:
    """How many samples of ``samples`` the checkpoint at ``model_path`` was trained on (its training split,
    not its validation split): predictions on them flatter the model."""
    _, samples = driver.sample_collection(samples)
    path = os.path.abspath(os.path.expanduser(model_path))
    stat = os.stat(path) if os.path.isfile(path) else None
    trained = _trained_ids(path, stat.st_mtime_ns if stat else None, stat.st_size if stat else None)
    return sum(1 for sid in samples.values("id") if sid in trained) if trained else 0


@functools.lru_cache(maxsize=8)
def _trained_ids(path: str, mtime_ns, size) -> frozenset:
    """The training split of the checkpoint at ``path``, cached by its modification time and size (an
    operator's form asks on every change)."""
    return frozenset(segtrain.load_checkpoint(path).get("train_ids") or ())


def _overlap(samples, state: dict) -> int:
    trained = set(state.get("train_ids") or [])
    return sum(1 for sid in samples.values("id") if sid in trained) if trained else 0


class _Labeller:
    """``(H, W, 3)`` uint8 image -> :class:`MaskResult` with one instance per predicted class."""

    def __init__(self, predictor: segtrain.SegPredictor):
        self.predictor = predictor

    def __call__(self, image: np.ndarray) -> MaskResult:
        cmap, conf = self.predictor(image)
        instances = []
        for value in np.unique(cmap):
            if value == 0:
                continue
            mask = cmap == value
            instances.append(Instance(mask, float(conf[mask].mean()), label=self.predictor.classes[int(value) - 1]))
        if not instances:
            return MaskResult.empty(cmap.shape, "the model predicts background everywhere",
                                    confidence=float(conf.mean()))
        instances.sort(key=lambda inst: -inst.confidence)
        return MaskResult(tuple(cmap.shape), instances, np.zeros((0, 2), np.float32), np.zeros((0,), int))


def predict_action(samples, model_path: str, device: str = PredictSettings.device) -> driver.Action:
    """Reads the checkpoint and returns the "predict" :class:`samtext.run.driver.Action`; the network is built when
    the driver builds the action. Warns when ``samples`` include samples the model was trained on.

    Raises:
        ValueError: no checkpoint at ``model_path``, or not a samtext one.
    """
    from ..models.precision import resolve_device

    if not model_path:
        raise SamtextError("give model_path: the checkpoint that samtext.train() wrote")
    path = os.path.abspath(os.path.expanduser(model_path))
    state = segtrain.load_checkpoint(path)
    config = state["config"]
    device = resolve_device(device)
    overlap = _overlap(samples, state)
    if overlap:
        logger.warning("samtext: %d of the samples to predict were in the training split of %s; their predictions "
                       "say little about the model's quality", overlap, path)
    settings = dict(model_path=path, model=segtrain.file_digest(path), arch=config["arch"],
                    image_size=config["image_size"], epochs_done=int(state["epoch"]))

    def build():
        return _Labeller(segtrain.SegPredictor.from_checkpoint(state, device))

    def info(labeller):
        return dict(model=dict(arch=config["arch"], classes=list(state["classes"]), label_field=(
            state.get("extra") or {}).get("label_field"), best_val_miou=state.get("best_val_miou"),
            backbone_start=state.get("backbone_start")), training_overlap=overlap)

    return driver.Action(PREDICT_ACTION, list(state["classes"]), settings, build, info,
                         empty_hint="the model predicted background everywhere; train it longer or on more labels")


def _predict_action(samples, model_path, kwargs):
    run, options = driver.split_run_options(kwargs, out_field=PREDICTIONS_FIELD, save_instances=False)
    settings = PredictSettings.from_kwargs(options, "predict")
    _, view = driver.sample_collection(samples)
    return predict_action(view, model_path, settings.device), run


def iter_predict(samples, model_path: str, **kwargs) -> driver.Progress:
    """The work of :func:`predict`, as a generator of ``(done, total)`` progress that returns the
    :class:`samtext.run.driver.RunSummary`."""
    action, run = _predict_action(samples, model_path, kwargs)
    return (yield from driver.iter_run(samples, action, **run))


def prepare_predict(samples, model_path: str, **kwargs) -> int:
    """Checks a :func:`predict` run and creates its output field and run record, predicting nothing (what an
    operator does before it queues shards). Returns the number of samples to label."""
    action, run = _predict_action(samples, model_path, kwargs)
    return driver.prepare_outputs(samples, action, **run)


def predict(samples, model_path: str, out_field: str = PREDICTIONS_FIELD, device: str = PredictSettings.device,
            progress: Union[bool, Callable[[int, int], None], None] = None, **kwargs) -> driver.RunSummary:
    """Labels ``samples`` with the network at ``model_path`` (a :func:`train` checkpoint): a ``fo.Segmentation``
    in ``out_field`` whose ``mask_targets`` name the checkpoint's classes, its ``confidence`` the mean softmax
    maximum over each predicted class's pixels (averaged over the classes present).

    Arguments:
        samples: a ``fo.Dataset`` or view.
        model_path: the checkpoint.
        out_field: the field to write.
        device: "auto", "cpu", "cuda", ...
        progress: True for a progress bar, or a callable ``(done, total)``.
        **kwargs: the run driver's options: ``overwrite``, ``save_instances`` (default False; True: one ``fo.Detection`` per
            predicted class in ``<out_field>_instances``), ``mask_dir``, ``batch_size``, ``fail_fast``,
            ``shard`` (see :func:`samtext.run.driver.iter_run`).

    A rerun skips samples that already have ``out_field`` (the same checkpoint file is required: its content
    hash is a setting of the run). Samples the model was trained on are counted (:func:`training_overlap`),
    logged and recorded in the run record.
    """
    events = iter_predict(samples, model_path, out_field=out_field, device=device, **kwargs)
    return driver.run_with_progress_option(events, progress)


signature_with(train, TrainSettings)
