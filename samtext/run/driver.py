"""The run driver every action hangs on: an action is "image in, labels out"; the rest happens here, once.

::

    summary = yield from iter_run(samples, action, out_field="cat_masks")

1. Everything is validated first (fields, classes, a resumed run's settings); nothing is created when
   something is wrong.
2. The samples to label are read from the *dataset* (a view that hides the output field still skips what is
   labelled), minus the action's own inputs (the references), minus other shards' samples.
3. The action's models load (:attr:`Action.build`); only then are fields, class names and the run record
   written.
4. Each image is loaded and labelled (the next ones load, and are prepared for the labeller, on a background
   thread meanwhile: :mod:`samtext.run.prefetch`); each failure is recorded with the sample and the problem and the run
   goes on, unless the first ``fail_fast`` samples all fail: then it stops with one error.
5. Labels are written in batches; an interruption (Ctrl-C, the App's cancel, an error) flushes what was
   done and records how the run ended.
"""

import contextlib
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable, Generator, List, Optional, Sequence, Tuple, Union

import fiftyone as fo

from ..images import InputError, load_image
from ..pipelines.result import MaskResult
from ..progress import run_events
from ..settings import RunOptions
from . import fields as sds
from . import records
from .prefetch import Prefetcher
from ..errors import SamtextError

logger = logging.getLogger(__name__)

Progress = Generator[Tuple[int, int], None, "RunSummary"]


class RunStopped(RuntimeError):
    """The run stopped because its first samples all failed (the same problem, most likely, for every sample)."""


@dataclass
class SampleError:
    """A sample that could not be labelled, and why."""

    sample_id: str
    filepath: str
    message: str

    def __str__(self):
        return "sample %s (%s): %s" % (self.sample_id, self.filepath, self.message)


@dataclass
class RunSummary:
    """What a run did. ``labelled`` counts written labels, ``empty`` those of them with no object, and
    ``instances`` the objects in all of them. ``status``: "completed", "stopped" (fail-fast), "canceled"
    (interrupted) or "failed". ``notes``: when the run labelled nothing or found nothing, why, and the knob to
    try (empty otherwise)."""

    field: str
    run_key: str
    targets: int = 0
    labelled: int = 0
    empty: int = 0
    instances: int = 0
    skipped_existing: int = 0
    failed: int = 0
    errors: List[SampleError] = field(default_factory=list)
    seconds: float = 0.0
    status: str = "completed"
    shard: Optional[Tuple[int, int]] = None
    notes: List[str] = field(default_factory=list)

    def to_dict(self, max_errors: int = 50) -> dict:
        d = asdict(self)
        d["errors"] = [str(e) for e in self.errors[:max_errors]]
        return d


@dataclass
class Action:
    """What an action hands the driver.

    Attributes:
        name: the action, e.g. "annotate_by_reference" (recorded; a resume must match it).
        classes: the class names its labeller may return; an instance without a label is ``classes[0]``.
        settings: JSON-able settings that shape the labels (recorded; a resume must match them).
        build: loads the models and returns the labeller ``(H, W, 3) uint8 image -> MaskResult``. Called after
            validation and before anything is written, so a model that cannot load leaves nothing behind. A
            labeller with ``prepare(inputs)`` (``prepare_batch`` inputs per call) gets the upcoming inputs on the
            loader thread first, and ``discard_prepared()`` when the run ends (see
            :class:`samtext.pipelines.result.PreparesImages`).
        info: ``labeller -> dict``: what the built labeller learnt (a calibrated gate, the models that ran, ...),
            for the run record.
        input_fields: fields the action reads; none may be an output field.
        exclude_ids: samples never to label (the references).
        exclude_what: what ``exclude_ids`` are, for the note of a run left with nothing to label ("the reference").
        empty_hint: why an action may find nothing and which knob to try, for the note of a run whose every
            image came back empty.
        output: "segmentation" (a ``fo.Segmentation`` with the instances beside it) or "detections" (the
            instances as the ``fo.Detections`` output field itself, e.g. mask proposals).
        loader: ``(sample_id, filepath) -> input`` of the labeller for one sample (default: the image, as an
            ``(H, W, 3)`` uint8 array); an action that labels from what is stored already (proposals, say)
            reads that instead. Its errors count as the sample's.
        sidecar: ``(dataset, fields) -> object`` with ``add(sample_id, labels, result)`` and ``flush()``, for
            what a run keeps outside the database (embeddings); flushed just before each database write.
    """

    name: str
    classes: Sequence[str]
    settings: dict
    build: Callable[[], Callable[..., MaskResult]]
    info: Callable[[Callable[..., MaskResult]], dict] = lambda labeller: {}
    input_fields: Sequence[str] = ()
    exclude_ids: Sequence[str] = ()
    exclude_what: str = "the run's own inputs"
    empty_hint: str = ""
    output: str = "segmentation"
    sidecar: Optional[Callable] = None
    loader: Optional[Callable[[str, str], object]] = None
    local_info: Optional[Callable[[], dict]] = None  # what the record keeps that this process knows (on Ray too)


def _load_image(sample_id: str, filepath: str):
    return load_image(filepath)


def run_with_progress(events, on_progress: Optional[Callable[[int, int], None]] = None):
    """Runs an action's generator of ``(done, total)`` events to its end and returns its return value (the
    summary), calling ``on_progress(done, total)`` for each event (see :func:`samtext.progress.run_events`: the
    generator is closed on any exit, so its pending labels are flushed even on Ctrl-C)."""
    return run_events(events, on_progress)


def run_with_progress_option(events, progress: Union[bool, Callable[[int, int], None], None] = None):
    """:func:`run_with_progress` for an SDK call's ``progress`` argument: True shows a progress bar, a callable
    gets ``(done, total)``, None or False shows nothing."""
    if progress is not True:
        return run_with_progress(events, progress or None)
    from tqdm.auto import tqdm

    bars = []  # opened at the first event, so that a call refused before it starts shows no bar

    def show(done, total):
        if not bars:
            bars.append(tqdm(desc="samtext", unit="image", total=total))
        bars[0].total, bars[0].n = total, done
        bars[0].refresh()

    try:
        return run_with_progress(events, show)
    finally:
        for bar in bars:
            bar.close()


def sample_collection(samples):
    """The dataset and the sample-level collection to label. A patches view stands for the samples its
    patches come from (labels are per image).

    Raises:
        ValueError: not a FiftyOne collection, or not images.
    """
    if not isinstance(samples, fo.core.collections.SampleCollection):
        raise SamtextError("expected a FiftyOne dataset or view to label, got %s" % type(samples).__name__)
    if getattr(samples, "_is_patches", False) or getattr(samples, "_is_frames", False) or getattr(
            samples, "_is_clips", False):
        dataset = samples._root_dataset
        samples = dataset.select(sorted(set(samples.values("sample_id"))), ordered=True)
    dataset = samples._root_dataset
    if dataset.media_type != "image":
        raise SamtextError("samtext labels images; dataset %r holds %s" % (dataset.name, dataset.media_type))
    return dataset, samples


def in_shard(sample_id: str, shard: Optional[Tuple[int, int]]) -> bool:
    """Whether a sample belongs to shard ``(index, count)``: its ObjectId taken modulo ``count`` (the id's
    trailing counter makes the shards even and disjoint)."""
    return shard is None or int(sample_id, 16) % shard[1] == shard[0]


def _differences(old: dict, new: dict) -> List[str]:
    keys = sorted(set(old) | set(new))
    return ["%s: %r -> %r" % (k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def check_resume(dataset: fo.Dataset, key: str, action: Action, out_field: str, overwrite: bool) -> Optional[dict]:
    """Refuses to add labels to a field that a samtext run with other settings wrote, unless ``overwrite``.
    Returns the existing record (None when there is none)."""
    record = records.read_run(dataset, key)
    if record is None or overwrite or not sds.has_labels(dataset, out_field):
        return record
    new = records.jsonable(dict(action=action.name, **action.settings))
    old = dict(action=record.get("action"), **(record.get("settings") or {}))
    diff = _differences(old, new)
    if diff:
        raise SamtextError(
            "field %r holds labels of a run with other settings (%s); a resumed run must use the same ones. "
            "Pass overwrite=True to relabel with the new settings, or choose another output field"
            % (out_field, "; ".join(diff)))
    return record


def prepare_run(samples, action: Action, options: RunOptions):
    """The checks of :func:`iter_run` that need no model: ``(dataset, samples, fields, values, record)``.
    Creates nothing. The operator calls it before queueing shards."""
    out_field, overwrite = options.out_field, options.overwrite
    dataset, samples = sample_collection(samples)
    fields = sds.OutputFields(out_field, options.save_instances, options.save_prompts, options.mask_dir,
                              kind=action.output)
    fields.check(dataset, action.input_fields)
    if not action.classes:
        raise SamtextError("the action names no class")
    if fields.has_classes:
        values = sds.class_values(dataset, out_field, action.classes, overwrite)
    else:
        values = {name: value for value, name in enumerate(dict.fromkeys(action.classes), 1)}
    record = check_resume(dataset, records.run_key_for(out_field), action, out_field, overwrite)
    records.check_not_busy(dataset, out_field, action.name, action.settings)
    return dataset, samples, fields, values, record


def _targets(dataset, samples, out_field, overwrite, exclude_ids, shard):
    """``(ids, paths, skipped, excluded)``: the samples of ``samples`` to label, in view order; how many already
    have ``out_field``; how many are ``exclude_ids``."""
    exclude = set(exclude_ids)
    done = set() if overwrite else sds.labelled_ids(dataset, out_field)
    ids, paths = samples.values(["id", "filepath"])
    mine = [i for i, sid in enumerate(ids) if in_shard(sid, shard)]
    keep = [i for i in mine if ids[i] not in exclude]
    todo = [i for i in keep if ids[i] not in done]
    return [ids[i] for i in todo], [paths[i] for i in todo], len(keep) - len(todo), len(mine) - len(keep)


def nothing_labelled_note(out_field: str, skipped: int, excluded: int, exclude_what: str) -> str:
    """Why a run had no sample to label, and what to change."""
    if skipped:
        return ("all %d target samples already have %r%s; pass overwrite=True (the form's 'Overwrite existing "
                "labels') to label them again" % (skipped + excluded, out_field,
                                                  " or are %s" % exclude_what if excluded else ""))
    if excluded:
        return ("the target holds only %s (%d sample%s), which the run never labels; target the dataset or a view "
                "with other samples" % (exclude_what, excluded, "s" if excluded > 1 else ""))
    return "the target holds no sample; target the dataset or a view with samples"


def nothing_found_note(summary: "RunSummary", hint: str) -> str:
    """Why every image of a run came back empty, and the knob to try."""
    return "no object was found in any of the %d images%s" % (summary.labelled, ": " + hint if hint else "")


def _uncount(summary: "RunSummary", dropped) -> None:
    """Takes back from ``summary`` the samples deleted from the dataset while the run labelled them."""
    for empty, instances in dropped:
        summary.labelled -= 1
        summary.empty -= empty
        summary.instances -= instances
    if dropped:
        summary.notes.append("%d samples were deleted from the dataset while the run labelled them; their labels "
                             "were dropped" % len(dropped))
        logger.warning("samtext: %s", summary.notes[-1])


def open_outputs(dataset, action: Action, fields: "sds.OutputFields", values, overwrite: bool,
                 entry: Optional[dict] = None) -> Optional[str]:
    """Creates the output fields, adds the classes to the field's ``mask_targets`` and writes (or keeps) the
    run record, under the field's lock (:func:`samtext.run.records.field_lock`): the record is read again
    there, a run of another action writing the field now is refused, and a record with the same action and
    settings is kept (a resumed run or a sibling shard adds its own entry under ``runs``); otherwise it is
    replaced. With ``entry`` (:func:`samtext.run.records.new_entry`), adds it under a new run id and returns
    the id."""
    with records.field_lock(dataset, fields.out):
        record = check_resume(dataset, records.run_key_for(fields.out), action, fields.out, overwrite)
        records.check_not_busy(dataset, fields.out, action.name, action.settings)
        _open_outputs(dataset, action, fields, values, record)
        if entry is None:
            return None
        run_id = uuid.uuid4().hex[:12]
        records.update_run(dataset, records.run_key_for(fields.out), **{"runs." + run_id: entry})
        return run_id


def _open_outputs(dataset, action: Action, fields: "sds.OutputFields", values, record) -> None:
    fields.ensure(dataset)
    if fields.has_classes:
        sds.set_mask_targets(dataset, fields.out, values)
    key = records.run_key_for(fields.out)
    settings = records.jsonable(action.settings)
    same = record is not None and record.get("action") == action.name and record.get("settings") == settings
    if not same:
        from .. import __version__

        records.register_run(dataset, key, dict(
            action=action.name, out_field=fields.out, instances_field=fields.instances,
            prompts_field=fields.prompts, mask_dir=fields.mask_dir, settings=settings,
            input_fields=[f for f in action.input_fields if f],
            classes={str(v): k for k, v in values.items()}, samtext_version=__version__,
            fiftyone_version=fo.constants.VERSION, started=records.now(), runs={},
        ))


def split_run_options(kwargs: dict, **defaults) -> Tuple[dict, dict]:
    """``(the driver's options, the action's options)`` of an SDK call's keyword arguments: the driver's are the
    knobs of :class:`samtext.settings.RunOptions`, ``defaults`` the action's own (its ``out_field``, ...)."""
    run = dict(defaults)
    run.update({k: v for k, v in kwargs.items() if k in RunOptions.knobs()})
    return run, {k: v for k, v in kwargs.items() if k not in RunOptions.knobs()}


def run_options(out_field: str, **options) -> RunOptions:
    """The checked :class:`samtext.settings.RunOptions` of a run into ``out_field``.

    Raises:
        ValueError: a bad option, naming it.
    """
    return RunOptions.from_kwargs(dict(options, out_field=out_field), "the run")


def prepare_outputs(samples, action: Action, out_field: str, **options) -> int:
    """Validates a run and creates its output fields, class names and record without loading a model or
    labelling anything, for a run split into shards that start side by side. Returns the number of samples
    the shards will label. Takes :func:`iter_run`'s options (those about the labelling itself are unused)."""
    opts = run_options(out_field, **options)
    dataset, samples, fields, values, record = prepare_run(samples, action, opts)
    ids = _targets(dataset, samples, out_field, opts.overwrite, action.exclude_ids, None)[0]
    if ids:
        open_outputs(dataset, action, fields, values, opts.overwrite)
    return len(ids)


def iter_run(samples, action: Action, out_field: str, **options) -> Progress:
    """Labels every sample of ``samples`` with ``action``; a generator of ``(done, total)`` progress that
    returns the :class:`RunSummary`.

    Arguments:
        samples: a ``fo.Dataset`` or view (a patches view stands for its images).
        action: the :class:`Action`.
        out_field: the ``fo.Segmentation`` field to write; instances go to ``<out_field>_instances``
            (``fo.Detections``), prompts to ``<out_field>_prompts`` (``fo.Keypoints``).
        **options: the run options of :class:`samtext.settings.RunOptions` (``overwrite``, ``save_prompts``,
            ``save_instances``, ``mask_dir``, ``batch_size``, ``fail_fast``, ``shard``: see :func:`in_shard`).

    Raises:
        ValueError: bad arguments, before anything is created.
        RunStopped: the first ``fail_fast`` samples all failed.
    """
    start = time.time()
    opts = run_options(out_field, **options)
    overwrite, shard = opts.overwrite, opts.shard
    dataset, samples, fields, values, record = prepare_run(samples, action, opts)
    key = records.run_key_for(out_field)
    summary = RunSummary(field=out_field, run_key=key, shard=shard)
    ids, paths, summary.skipped_existing, excluded = _targets(dataset, samples, out_field, overwrite,
                                                              action.exclude_ids, shard)
    summary.targets = len(ids)
    if not ids:
        summary.notes.append(nothing_labelled_note(out_field, summary.skipped_existing, excluded, action.exclude_what))
        logger.warning("samtext: nothing labelled in %r: %s", out_field, summary.notes[0])
        return summary

    load = action.loader or _load_image
    if opts.ray_address:  # actors build the labeller and read the images; this process writes
        from .ray_labeller import RayLabeller, load_ref

        labeller = RayLabeller(action.build, action.info, address=opts.ray_address, actors=opts.ray_actors,
                               gpus_per_actor=opts.ray_gpus_per_actor)
        load = action.loader or load_ref
        labeller_info = labeller.info
    else:
        labeller = action.build()
        labeller_info = lambda: action.info(labeller)  # noqa: E731

    def learnt() -> dict:
        return dict(labeller_info(), **(action.local_info() if action.local_info else {}))
    from ..models import encoder_workload  # torch: imported once a model is loaded anyway

    try:
        run_id = open_outputs(dataset, action, fields, values, overwrite, records.new_entry(
            shard=shard, overwrite=overwrite, targets=len(ids), operation=records.current_operation()))
    except BaseException:
        if opts.ray_address:
            labeller.close()  # the actors hold models (GPU memory): not until garbage collection
        raise
    default_label = action.classes[0]
    summary.status = "failed"
    beating = contextlib.ExitStack()  # the entry is alive from here until the finally below closes it
    try:
        beating.enter_context(records.Heartbeat(dataset, key, run_id))
        sidecar = action.sidecar(dataset, fields) if action.sidecar else None
        records.update_run(dataset, key, learnt=learnt())
        yield 0, len(ids)
        with sds.LabelWriter(dataset, opts.batch_size, before_flush=sidecar.flush if sidecar else None) as writer, \
                encoder_workload(len(ids)), \
                Prefetcher(zip(ids, paths), load, prepare=getattr(labeller, "prepare", None),
                           batch=getattr(labeller, "prepare_batch", 1),
                           discard=getattr(labeller, "discard_prepared", None)) as feed:
            for done, (sid, path, loaded, load_error) in enumerate(feed, 1):
                try:
                    if load_error is not None:
                        raise load_error
                    result = labeller(loaded)
                except Exception as e:  # one bad sample must not stop the run
                    message = str(e) if isinstance(e, InputError) else "%s: %s" % (type(e).__name__, e)
                    err = SampleError(sid, path, message)
                    logger.warning("samtext: %s", err)
                    summary.errors.append(err)
                    summary.failed += 1
                    if summary.labelled == 0 and summary.failed == opts.fail_fast:
                        summary.status = "stopped"
                        raise RunStopped(
                            "the first %d samples all failed, so the run stopped (nothing was written); the first "
                            "error: %s" % (summary.failed, summary.errors[0])) from e
                else:
                    labels = sds.labels_for(result, fields, values, default_label, sid)
                    if sidecar is not None:
                        sidecar.add(sid, labels, result)
                    writer.add(sid, labels, stats=(int(result.is_empty), len(result.instances)))
                    summary.labelled += 1
                    summary.empty += int(result.is_empty)
                    summary.instances += len(result.instances)
                yield done, len(ids)
        _uncount(summary, writer.dropped)
        summary.status = "completed"
        if summary.labelled and not summary.instances:
            summary.notes.append(nothing_found_note(summary, action.empty_hint))
            logger.warning("samtext: %s", summary.notes[-1])
    except GeneratorExit:
        summary.status = "canceled"
        raise
    except KeyboardInterrupt:
        summary.status = "canceled"
        raise
    finally:
        beating.close()
        if opts.ray_address:
            labeller.close()
        summary.seconds = time.time() - start
        if summary.labelled:
            sds.declare_attributes(dataset, fields.names())
        try:
            entry = "runs." + run_id
            records.update_run(dataset, key, **{entry + ".finished": records.now(), entry + ".status": summary.status,
                                            entry + ".summary": summary.to_dict(max_errors=20)}, last_run=run_id)
        except Exception:  # the record is bookkeeping: never hide the run's own outcome behind it
            logger.exception("samtext: could not record the end of run %s of %r", run_id, out_field)
    return summary
