"""SDK: close the review loop: labels a person approved (or corrected, then approved) feed a rerun of the action
that made the field.

Example::

    # in the App: fix a few masks with FiftyOne's tools, tag those labels (or their samples) "approved"
    summary = samtext.rerun_from_approved(dataset, "cat_masks")

What happens:

1. The approved labels of ``field`` (label tag ``approved_tag`` on the ``fo.Segmentation``, or the sample tag)
   are copied as they are now into ``<field>_approved``, a ``fo.Segmentation`` field of masks a person vouched
   for; for "Annotate by reference mask" the run's own references are copied there too.
2. The action that wrote ``field`` (read from its run record) runs again with them:
   - "Annotate by reference mask": every mask of ``<field>_approved`` is a reference;
   - "Annotate by few-shot examples": each approved mask's pixels of a class are exemplars of that class, beside
     the exemplars the run had.
   "Annotate by text" takes no examples, so its fields cannot be rerun this way (a clear error says what to do).
3. Only the samples of ``samples`` that are not approved are relabelled (``overwrite``); approved labels stay
   as the person left them. The run record keeps ``approved`` (which labels, of which samples, fed the run).
"""

import logging
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

import fiftyone as fo

from ..names import APPROVED_SUFFIX, APPROVED_TAG
from ..run import class_maps as lm
from ..run import driver
from ..run import fields as sds
from ..run import records
from ..settings import ExamplesSettings, ReferenceSettings, RerunSettings, TextSettings, signature_with
from .review import approved_expression
from ..errors import SamtextError

REFERENCE = ReferenceSettings.action
EXAMPLES = ExamplesSettings.action
TEXT = TextSettings.action

logger = logging.getLogger(__name__)


def approved_field(field: str) -> str:
    """The field holding the approved masks that feed a rerun of ``field``."""
    return field + APPROVED_SUFFIX


def approved_labels(dataset: fo.Dataset, field: str, approved_tag: str = APPROVED_TAG) -> Tuple[List[str], List[str]]:
    """``(sample ids, label ids)`` of the labels of ``field`` a person approved: the label carries
    ``approved_tag``, or its sample does. Read from the dataset."""
    if not dataset.has_field(field):
        return [], []
    view = dataset.exists(field).match(approved_expression(field, approved_tag))
    sample_ids, label_ids = view.values(["id", field + ".id"])
    return list(sample_ids), list(label_ids)


def _record(dataset: fo.Dataset, field: str) -> dict:
    record = records.read_run(dataset, records.run_key_for(field))
    if not record:
        raise SamtextError("field %r has no samtext run record, so there is no action to rerun; label it with a "
                         "samtext action first" % field)
    action = record.get("action")
    if action == TEXT:
        raise SamtextError(
            "field %r was made by 'Annotate by text', which takes no examples; use the approved labels as references "
            "instead: samtext.annotate_by_reference(view, class_name, reference=<approved sample ids>, "
            "reference_field=%r, out_field=...)" % (field, field))
    if action not in (REFERENCE, EXAMPLES):
        raise SamtextError("field %r was made by %r; only the reference and few-shot actions rerun from approved "
                         "labels" % (field, action))
    return record


def _copy_approved(dataset: fo.Dataset, field: str, target: str, sample_ids: List[str],
                   extra: Optional[Dict[str, np.ndarray]] = None) -> None:
    """Writes the approved labels' masks (``field``'s values) and ``extra`` ``{sample id: uint8 mask}`` into
    ``target`` with ``field``'s class names, replacing what a previous rerun put there."""
    sds.ensure_label_field(dataset, target, fo.Segmentation)
    targets = dataset.mask_targets.get(field) or dataset.default_mask_targets or {}
    if targets:
        dataset.mask_targets[target] = {int(k): v for k, v in targets.items()}
        dataset.save()
    values = {}
    for sid, label in zip(*dataset.select(sample_ids).values(["id", field])):
        if lm.mask_source(label) is None:
            raise SamtextError("approved label of sample %s in %r has no mask" % (sid, field))
        values[sid] = fo.Segmentation(mask=np.asarray(label.get_mask()).astype(np.uint8), approved_from=label.id)
    for sid, mask in (extra or {}).items():
        values[sid] = fo.Segmentation(mask=mask.astype(np.uint8), approved_from="reference")
    # one write over every sample (None where nothing is approved now): no clear_sample_field, whose schema lookup
    # failed in the App's server ("field does not exist") when a concurrent request reloaded the dataset just after
    # the field was declared; set_values declares it again if so
    dataset.set_values(target, {sid: values.get(sid) for sid in dataset.values("id")}, key_field="id")


def _chosen(sample_ids: List[str], label_ids: List[str], limit: int) -> Tuple[List[str], List[str]]:
    """At most ``limit`` approved labels (each costs the action an image read and, for references, an encoder
    pass when the run starts): a seeded sample of them when there are more, said in the log."""
    if len(sample_ids) <= limit:
        return sample_ids, label_ids
    keep = sorted(np.random.default_rng(0).choice(len(sample_ids), limit, replace=False))
    logger.warning("samtext: %d labels are approved; the rerun uses %d of them (max_approved)", len(sample_ids), limit)
    return [sample_ids[i] for i in keep], [label_ids[i] for i in keep]


def _reference_settings(dataset, field, settings, approved) -> dict:
    """Copies the approved labels and the run's *original* references into ``<field>_approved`` and returns
    the rerun's reference settings."""
    from .by_reference import load_references

    target = approved_field(field)
    class_name = settings["class_name"]
    value = sds.class_values(dataset, field, [class_name], overwrite=True)[class_name]
    orig_ids = [r for r in approved.get("original_reference_ids") or [] if r not in set(approved["sample_ids"])]
    originals = {}
    if orig_ids and approved.get("original_reference_field"):
        refs, _ = load_references(dataset, orig_ids, class_name, approved["original_reference_field"],
                                  reference_class_value=approved.get("original_reference_class_value"))
        originals = {rid: ref.mask.astype(np.uint8) * value for rid, ref in zip(orig_ids, refs)}
    elif orig_ids:
        logger.warning("samtext: the run's reference mask was uploaded and cannot be read again; the approved labels "
                       "are the only references of the rerun")
        orig_ids = []
    _copy_approved(dataset, field, target, approved["sample_ids"], originals)
    return dict(reference=orig_ids + approved["sample_ids"], reference_field=target)


def _examples_settings(dataset, field, settings, approved) -> dict:
    """Copies the approved labels into ``<field>_approved`` and returns the rerun's exemplars: the run's
    *original* ones plus, per class, the approved masks that show it."""
    from .by_examples import Exemplars

    target = approved_field(field)
    _copy_approved(dataset, field, target, approved["sample_ids"])
    names = lm.field_classes(dataset, target)
    reader = lm.ClassMapReader(dataset, target, names)
    present: Dict[str, List[str]] = {n: [] for n in names}
    for sid, label in zip(*dataset.select(approved["sample_ids"]).values(["id", target])):
        cmap = reader(label, np.asarray(label.mask).shape[:2])
        for k, name in enumerate(names, 1):
            if (cmap == k).any():
                present[name].append(sid)
    examples = {}
    for name, spec in approved["original_examples"].items():
        spec = Exemplars.of(dict(spec))
        if present.get(name):
            if spec.mask_field and spec.mask_field != target:
                raise SamtextError("class %r already takes mask exemplars from %r; a rerun from approved labels adds "
                                 "its own mask field: copy those masks into %r first" % (name, spec.mask_field, target))
            spec.mask_field, spec.mask_samples, spec.mask_class = target, present[name], name
        examples[name] = spec.record()
    return dict(examples=examples)


def _recorded_knobs(settings_class, recorded: dict, overrides: dict):
    """The action's settings for a rerun: the knobs its run record kept, changed by ``overrides`` (the caller's)."""
    # the approved masks are read through their field's class names, not the original reference's pixel value
    knobs = {k: recorded[k] for k in settings_class.knobs() if k in recorded and k != "reference_class_value"}
    if "sam_checkpoint" in knobs and "sam_checkpoint" not in overrides:
        knobs.pop("sam_checkpoint")  # the record keeps the file's name only: found again by name, or passed again
    if "clip_checkpoint" in knobs and "clip_checkpoint" not in overrides:
        knobs.pop("clip_checkpoint")
    return settings_class.from_kwargs(dict(knobs, **overrides), "rerun_from_approved")


def _build(dataset, samples, settings, action_name, knobs):
    """The action of a rerun whose settings (``settings``, with ``approved``) are known; ``knobs``: the action's
    settings object (:func:`_recorded_knobs`)."""
    approved = settings["approved"]
    if action_name == REFERENCE:
        from .by_reference import reference_action

        action = reference_action(dataset, settings["class_name"], reference=settings["reference_ids"],
                                  reference_field=settings["reference_field"], settings=knobs)
    else:
        from .by_examples import examples_action

        action = examples_action(dataset, settings["examples"], samples=samples, settings=knobs)
        action.exclude_ids = list(action.exclude_ids) + list(approved["sample_ids"])
    action.settings = dict(action.settings, approved=approved)
    return action


def _loop_action(samples, field, kwargs):
    run, overrides = driver.split_run_options(kwargs)
    own = RerunSettings.from_kwargs({k: overrides.pop(k) for k in RerunSettings.knobs() if k in overrides},
                                    "rerun_from_approved")
    approved_tag, max_approved = own.approved_tag, own.max_approved
    for fixed in ("out_field", "overwrite"):
        if fixed in run:
            raise SamtextError("%s is fixed for a rerun from approved labels (the field itself, relabelled)" % fixed)
    dataset, samples = driver.sample_collection(samples)
    record = _record(dataset, field)
    action_name, settings = record["action"], dict(record.get("settings") or {})
    from . import ACTIONS  # the registry imports this module

    knobs = _recorded_knobs(ACTIONS[action_name].settings, settings, overrides)  # bad knobs refused before a copy
    if run.get("shard") is None or not settings.get("approved"):
        # a whole rerun, or the operator preparing its shards: read the approvals and copy them once
        _, running = records.running_runs(dataset, field)
        if running:
            raise SamtextError("field %r is still being written by samtext (run %s); rerun it when that run has "
                             "finished" % (field, ", ".join(running)))
        sample_ids, label_ids = approved_labels(dataset, field, approved_tag)
        if not sample_ids:
            raise SamtextError("no label of %r is approved: tag the labels you checked (or their samples) %r in the "
                             "App first" % (field, approved_tag))
        sample_ids, label_ids = _chosen(sample_ids, label_ids, int(max_approved))
        before = settings.get("approved") or {}  # a rerun of a rerun starts again from the run's own inputs
        approved = dict(tag=approved_tag, field=approved_field(field), sample_ids=sample_ids, label_ids=label_ids,
                        original_reference_ids=before.get("original_reference_ids", settings.get("reference_ids")),
                        original_reference_field=before.get("original_reference_field",
                                                            settings.get("reference_field")),
                        original_reference_class_value=before.get("original_reference_class_value",
                                                                  settings.get("reference_class_value")),
                        original_examples=before.get("original_examples", settings.get("examples")))
        approved = {k: v for k, v in approved.items() if v is not None or k.startswith("original_reference")}
        if action_name == REFERENCE:
            new = _reference_settings(dataset, field, settings, approved)
            settings.update(reference_ids=new["reference"], reference_field=new["reference_field"])
        else:
            settings.update(_examples_settings(dataset, field, settings, approved))
        settings["approved"] = approved
    # else: a shard of a rerun the operator prepared: the approved masks are in place, the record says which
    action = _build(dataset, samples, settings, action_name, knobs)
    run.setdefault("mask_dir", record.get("mask_dir"))  # written as the field was
    run.setdefault("save_instances", bool(record.get("instances_field")))
    run.setdefault("save_prompts", bool(record.get("prompts_field")))
    run.update(out_field=field, overwrite=True)
    return action, run


def iter_rerun_from_approved(samples, field: str, **kwargs) -> driver.Progress:
    """The work of :func:`rerun_from_approved` as a generator of ``(done, total)`` that returns the summary."""
    action, run = _loop_action(samples, field, kwargs)
    return (yield from driver.iter_run(samples, action, **run))


def prepare_rerun_from_approved(samples, field: str, **kwargs) -> int:
    """Checks a rerun and writes its approved masks, record and fields, labelling nothing (before shards are
    queued: each shard then reuses what this wrote). Returns the number of samples to relabel."""
    action, run = _loop_action(samples, field, kwargs)
    return driver.prepare_outputs(samples, action, **run)


def rerun_from_approved(
    samples,
    field: str,
    progress: Union[bool, Callable[[int, int], None], None] = None,
    **kwargs,
) -> driver.RunSummary:
    """Reruns the action that made ``field`` with its approved labels as references or exemplars, relabelling
    the samples of ``samples`` that are not approved (see the module's docstring).

    Arguments:
        samples: the dataset or view to relabel (approved samples in it are left as they are).
        field: a ``fo.Segmentation`` field written by "Annotate by reference mask" or "Annotate by few-shot
            examples".
        progress: True for a progress bar, or a callable ``(done, total)``.
        **kwargs: the rerun's own settings (:class:`samtext.settings.RerunSettings`: ``approved_tag``,
            ``max_approved``), settings of the action to change (e.g. ``sam_checkpoint``, ``device``,
                                                                 ``threshold``) and the
            run options ``batch_size``, ``fail_fast``, ``shard``, ``mask_dir``, ``save_instances``.

    Returns:
        a :class:`samtext.run.driver.RunSummary`; the run record's ``settings.approved`` lists the labels that fed it.

    Raises:
        ValueError: no run record, an action that takes no examples, no approved label, bad settings.
    """
    events = iter_rerun_from_approved(samples, field, **kwargs)
    return driver.run_with_progress_option(events, progress)


signature_with(rerun_from_approved, RerunSettings)
