"""Blocks shared by samtext's operators: form pieces (models, output, gate, sharding) and the execution of an
action's ``(done, total)`` generator immediately, delegated, or split into several delegated runs."""

import copy
import os
import threading
import time

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._sdk import samtext

registry = samtext.models.registry
settings = samtext.settings

SAM_CHOICES = registry.choices(registry.SAM_MODELS)
MODELS = settings.ModelSettings
RUN = settings.RunOptions

GATE_CHOICES = {
    "auto": "Calibrated on the references (images without the object come out empty)",
    "value": "A similarity I choose",
    "off": "Off (always label the best match)",
}


ICON = "/assets/icon.svg"


def action_config(name, label, description):
    """The configuration every samtext action operator shares: a dynamic form, progress as a generator, run
    immediately or delegated."""
    return foo.OperatorConfig(name=name, label="samtext: " + label, description=description, icon=ICON,
                              dynamic=True, execute_as_generator=True, allow_immediate_execution=True,
                              allow_delegated_execution=True)


def tool_config(name, label, description, delegate_by_default=False):
    """The configuration of samtext's tools that write no labels (evaluate, review, export, train): a dynamic
    form, run immediately or delegated (``delegate_by_default`` for the long ones)."""
    return foo.OperatorConfig(name=name, label="samtext: " + label, description=description, icon=ICON,
                              dynamic=True, allow_immediate_execution=True, allow_delegated_execution=True,
                              default_choice_to_delegated=delegate_by_default)


def action_button(label, place=types.Places.SAMPLES_GRID_SECONDARY_ACTIONS):
    """A button that opens the operator's form, among the samples grid's actions unless ``place`` says
    otherwise (e.g. ``types.Places.EMBEDDINGS_ACTIONS``)."""
    return types.Placement(place, types.Button(label=label, icon=ICON, prompt=True))


def call_operator(operator, sample_collection, params, delegate=False, **request):
    """Runs ``operator`` from Python on a dataset or view with the form's ``params`` (queued when
    ``delegate``), as every operator's ``__call__`` does; ``request`` adds request-level keys (``view_target``)."""
    key = "view" if isinstance(sample_collection, fo.DatasetView) else "dataset"
    return foo.execute_operator(operator.uri, {key: sample_collection, "params": params, **request},
                                request_delegation=delegate)


class SamtextOperator(foo.Operator):
    """What every samtext operator shares: its name and label come from its action's entry in the registry
    (:data:`samtext.actions.ACTIONS`), and its button sits among the samples grid's actions unless ``place`` says
    otherwise. A subclass sets ``action`` (the registry's name) and ``description``."""

    action = description = None  # e.g. "compute_mask_proposals"
    place = types.Places.SAMPLES_GRID_SECONDARY_ACTIONS
    delegate_by_default = False

    @property
    def spec(self):
        return samtext.ACTIONS[self.action]

    @property
    def config(self):
        return tool_config(self.spec.operator, self.spec.label, self.description, self.delegate_by_default)

    def resolve_placement(self, ctx):
        return action_button(self.spec.label, self.place)


class ActionOperator(SamtextOperator):
    """What every samtext action operator shares: a form whose run the user may delegate, progress as a generator,
    and an ``execute`` that runs the action's SDK generator (or queues shards after its preparation), both looked
    up in the action registry, on the arguments ``sdk_args(ctx)`` returns. A subclass sets ``action`` and
    ``description`` and writes ``resolve_input`` and ``sdk_args``."""

    @property
    def config(self):
        return action_config(self.spec.operator, self.spec.label, self.description)

    def resolve_delegation(self, ctx):
        return None  # the user chooses in the form

    def sdk_args(self, ctx):
        """``(args, kwargs)`` of the SDK call, from the form."""
        raise NotImplementedError

    def execute(self, ctx):
        args, kwargs = self.sdk_args(ctx)
        spec = self.spec  # the action's SDK generator and shard preparation
        return execute_action(ctx, self, lambda: spec.iterate(*args, **kwargs), lambda: spec.prepare(*args, **kwargs))

    def resolve_output(self, ctx):
        return summary_output()


def choice_view(choices, view_cls=types.DropdownView):
    view = view_cls()
    for value, label in choices.items():
        view.add_choice(value, label=label)
    return view


def fields_of_types(ctx, *doc_types):
    """Names of the dataset's fields holding any of ``doc_types`` (e.g. ``fo.Segmentation``)."""
    if ctx.dataset is None:
        return []
    names = set()
    for doc_type in doc_types:
        names.update(ctx.dataset.get_field_schema(embedded_doc_type=doc_type).keys())
    return sorted(names)


def run_records(ctx, prefix: str):
    """``{run key: config dict}`` of the dataset's samtext run records whose key starts with ``prefix``
    (``samtext.names.RUN_KEY_PREFIX`` for labelling runs, ``TRAIN_RUN_KEY_PREFIX`` for trainings)."""
    if ctx.dataset is None:
        return {}
    return {key: ctx.dataset.get_run_info(key).config.serialize() for key in ctx.dataset.list_runs()
            if key.startswith(prefix)}


def output_field(inputs, ctx, default, inputs_read=(), label_cls=fo.Segmentation, side_fields=("instances", "prompts")):
    """The output field name (existing ``label_cls`` fields offered) and the output switches (``side_fields``:
    those of the side fields the action writes, "instances" and/or "prompts"). Marks the form invalid when the
    name exists with another type or is a field the run reads, so the run cannot start."""
    view = types.AutocompleteView()
    for name in fields_of_types(ctx, label_cls):
        if name not in inputs_read:
            view.add_choice(name, label=name)
    prop = inputs.str("out_field", default=default, required=True, label="Output field",
                      description="A new field, or an existing %s field" % label_cls.__name__, view=view)
    name = ctx.params.get("out_field") or default
    schema = ctx.dataset.get_field_schema() if ctx.dataset is not None else {}
    if name in inputs_read:
        prop.invalid = True
        prop.error_message = "Field %r is the reference field; write the labels to another field" % name
    elif name in schema and getattr(schema[name], "document_type", None) is not label_cls:
        prop.invalid = True
        prop.error_message = "Field %r exists with another type" % name
    inputs.bool("overwrite", default=RUN.default("overwrite"), label="Overwrite existing labels",
                description="Off: samples that already have the field are skipped (a rerun fills the gaps)")
    if "instances" in side_fields:
        inputs.bool("save_instances", default=True, label="Save instances",
                    description="Also write each object found as a Detection to <output field>_instances")
    if "prompts" in side_fields:
        inputs.bool("save_prompts", default=True, label="Save prompt points",
                    description="Write the points SAM was given to <output field>_prompts")


def gate(inputs, ctx, description):
    """The "is the object there at all" gate: calibrated, a chosen value, or off -> ``min_similarity``."""
    inputs.enum("gate", list(GATE_CHOICES), default="auto", label="Absent-object gate", description=description,
                view=choice_view(GATE_CHOICES, types.RadioGroup))
    if ctx.params.get("gate", "auto") == "value":
        inputs.float("min_similarity", default=0.5, label="Minimum similarity")


def gate_value(params):
    """``min_similarity`` for the SDK: from the form's gate choice, or as given by a Python caller of the
    operator who passed ``min_similarity`` itself."""
    if "gate" not in params and "min_similarity" in params:
        return params["min_similarity"]
    choice = params.get("gate", "auto")
    if choice == "value":
        return params.get("min_similarity", 0.5)
    return None if choice == "off" else "auto"


def models(inputs, ctx, needs_clip=False):
    inputs.enum("sam_model", list(SAM_CHOICES), default=MODELS.default("sam_model"), label="SAM model",
                view=choice_view(SAM_CHOICES))
    if needs_clip:
        inputs.str("clip_model", default=MODELS.default("clip_model"), label="CLIP model",
                   description="An open_clip model name, or 'tiny'")
        inputs.str("clip_pretrained", default=MODELS.default("clip_pretrained"), label="CLIP weights",
                   description="An open_clip tag (e.g. openai, laion2b_s34b_b79k) or a weights file path")
    device(inputs)
    inputs.enum("precision", ["auto", "fp32", "bf16"], default=MODELS.default("precision"), label="Precision",
                description="auto: bf16 where the hardware runs it fast",
                view=choice_view({"auto": "auto", "fp32": "fp32", "bf16": "bf16"}, types.RadioGroup))


def device(inputs, default=settings.AUTO):
    inputs.enum("device", ["auto", "cpu", "cuda"], default=default, label="Device",
                view=choice_view({"auto": "auto", "cpu": "cpu", "cuda": "cuda"}, types.RadioGroup))


def set_knobs(params, settings_class, names=None) -> dict:
    """The knobs of ``settings_class`` (or just ``names``) that the form or a Python caller set: a cleared field
    (None, "") is left to the settings' default."""
    return {k: params[k] for k in (names or settings_class.knobs()) if params.get(k) not in (None, "")}


def sharding(inputs):
    inputs.int("num_shards", default=1, min=1, max=256, label="Split into delegated runs",
               description="1: one run. N > 1: the target is split into N delegated runs, queued now, which "
                           "several `fiftyone delegated launch` workers run side by side")


def run_kwargs(params, side_fields=("instances", "prompts")):
    """The driver's options, from the form; a side field's switch defaults to on when the form shows it
    (``side_fields``, as given to :func:`output_field`), else to off."""
    return dict(
        set_knobs(params, RUN, ("out_field", "overwrite", "batch_size", "mask_dir", "fail_fast", "shard")),
        save_prompts=bool(params.get("save_prompts", "prompts" in side_fields)),
        save_instances=bool(params.get("save_instances", "instances" in side_fields)),
    )


def progress_label(done, total):
    return "%d / %d images" % (done, total)


# When the App cancels an immediate run it drops the request, and FiftyOne's server leaves the operator's
# generator to Python's cyclic garbage collector, which may not run for hours: the labels done so far would
# stay unwritten and the run "running". So a watchdog closes a run whose progress nobody has read for this long
# (a live App reads each message at once; an image being labelled does not count, only the wait for the reader).
ABANDONED_AFTER = float(os.environ.get("SAMTEXT_ABANDONED_AFTER_SECONDS", 30))


class _Relay:
    """An action's generator, advanced by the App's requests and closed by them or by the watchdog, whichever
    comes first (a lock keeps the two from touching it at once)."""

    _waiting = {}  # id -> relay, while the App has a progress message it has not read yet
    _registry_lock = threading.Lock()
    _watchdog = None

    def __init__(self, events):
        self.events = events
        self.lock = threading.Lock()
        self.closed_by_watchdog = False
        self.since = None

    def next(self):
        with self.lock:
            if self.closed_by_watchdog:
                raise RuntimeError("samtext closed this run: the App stopped reading its progress for %.0f s"
                                   % ABANDONED_AFTER)
            return next(self.events)

    def close(self):
        with self.lock:
            self.events.close()
        self.ready()

    def waiting(self):
        """Called before handing a message to the App: the watchdog starts counting."""
        self.since = time.monotonic()
        with _Relay._registry_lock:
            _Relay._waiting[id(self)] = self
            if _Relay._watchdog is None:
                _Relay._watchdog = threading.Thread(target=_Relay._watch, name="samtext-watchdog", daemon=True)
                _Relay._watchdog.start()

    def ready(self):
        with _Relay._registry_lock:
            _Relay._waiting.pop(id(self), None)

    @staticmethod
    def _watch():
        while True:
            time.sleep(min(5.0, ABANDONED_AFTER / 3))
            now = time.monotonic()
            with _Relay._registry_lock:
                stale = [r for r in _Relay._waiting.values() if now - r.since > ABANDONED_AFTER]
            for relay in stale:
                with relay.lock:
                    relay.closed_by_watchdog = True
                    relay.events.close()  # the driver flushes and records the run as canceled
                relay.ready()


def app_progress(ctx, events):
    """Runs an action's generator of ``(done, total)`` events for an immediate run, yielding the App's
    progress triggers; returns the generator's return value (the summary). When the App cancels, the action's
    generator is closed (by this generator's close, or by the watchdog when FiftyOne just drops it), so it
    flushes its labels and records the run as canceled."""
    relay = _Relay(events)
    try:
        while True:
            try:
                done, total = relay.next()
            except StopIteration as stop:
                return stop.value
            relay.waiting()
            yield ctx.trigger("set_progress", dict(progress=done / max(total, 1), label=progress_label(done, total)))
            relay.ready()
    finally:
        relay.close()


def delegated_progress(ctx, events):
    """Runs an action's generator for a delegated run, recording progress on the run; returns the summary."""
    return samtext.run_with_progress(
        events, lambda done, total: ctx.set_progress(progress=done / max(total, 1), label=progress_label(done, total))
    )


def error_output():
    outputs = types.Object()
    outputs.str("error", label="Error")
    return types.Property(outputs, view=types.View(label="samtext: the run failed"))


def summary_output():
    outputs = types.Object()
    outputs.str("field", label="Output field")
    outputs.str("status", label="Status")
    outputs.int("labelled", label="Images labelled")
    outputs.int("instances", label="Objects found")
    outputs.int("empty", label="Images with no object")
    outputs.int("skipped_existing", label="Skipped (already labelled)")
    outputs.int("failed", label="Failed")
    outputs.list("errors", types.String(), label="Errors")
    outputs.list("queued", types.String(), label="Queued delegated runs")
    return types.Property(outputs, view=types.View(label="samtext"))


def queue_shards(ctx, operator, count, prepare):
    """Queues ``count`` delegated runs of ``operator``, one per shard of the target, with the same parameters.
    ``prepare()`` first validates the run and creates its fields and record once (so the shards, running
    side by side, do not race to create them) and says how many samples there are to label; with none,
    nothing is queued. Returns the queued operations' IDs."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    if not prepare():
        return []  # nothing to label
    service = DelegatedOperationService()
    ids = []
    for index in range(count):
        request = copy.deepcopy(dict(ctx.request_params))
        request["params"] = dict(request.get("params") or {}, shard=[index, count], num_shards=1)
        request["delegated"] = True  # what FiftyOne sets on a request it queues
        shard_ctx = ExecutionContext(request_params=request, operator_uri=operator.uri)
        op = service.queue_operation(operator=operator.uri, context=shard_ctx.serialize(),
                                     delegation_target=ctx.delegation_target,
                                     label="%s (shard %d of %d)" % (operator.config.label, index + 1, count))
        ids.append(str(op.id))
    return ids


def execute_action(ctx, operator, events, prepare=None):
    """The body of every samtext operator's ``execute``: runs the action's ``events()`` generator
    immediately (a generator of App progress that shows the summary), delegated (progress recorded on the run,
    the summary returned plainly, since FiftyOne drops a generator's return value), or, with ``num_shards`` >
    1, queues that many delegated runs (``prepare()`` validates and creates the outputs once before)."""
    count = int(ctx.params.get("num_shards") or 1)
    if count > 1 and ctx.params.get("shard") is None:
        result = dict(field=ctx.params.get("out_field"), status="queued",
                      queued=queue_shards(ctx, operator, count, prepare))
        return result if ctx.delegated else _show_queued(ctx, result)
    if ctx.delegated:
        return delegated_progress(ctx, events()).to_dict(max_errors=20)
    return _execute_immediate(ctx, events)


def _show_queued(ctx, result):
    message = ("samtext: queued %d delegated runs; workers started with `fiftyone delegated launch` run them"
               % len(result["queued"]) if result["queued"] else "samtext: nothing to label (all labelled already)")
    yield ctx.ops.notify(message, variant="info")
    yield ctx.ops.show_output(summary_output().to_json(), result)
    return result


def _execute_immediate(ctx, events):
    try:
        summary = yield from app_progress(ctx, events())
    except Exception as e:
        # FiftyOne (1.22) drops an exception that a generator operator raises while it streams to the App
        # (fiftyone/operators/server.py::create_response_generator): the prompt just closes, silently.
        # So show it with messages, which the App does show, then raise it for Python callers.
        message = "samtext: %s" % (e.args[0] if isinstance(e, KeyError) and e.args else e)
        yield ctx.ops.reload_dataset()  # a run that failed midway has written some labels
        yield ctx.ops.notify(message, variant="error")
        yield ctx.ops.show_output(error_output().to_json(), {"error": message})
        raise
    result = summary.to_dict(max_errors=20)
    yield ctx.ops.reload_dataset()
    yield ctx.ops.notify(
        "samtext: labelled %d images into %s (%d objects, %d empty, %d failed)"
        % (summary.labelled, summary.field, summary.instances, summary.empty, summary.failed),
        variant="error" if summary.failed else "success",
    )
    # FiftyOne drops a generator's return value, so resolve_output() would show nothing: show it here
    yield ctx.ops.set_active_fields(fields=sorted(set(ctx.active_fields or []) | {summary.field}))
    yield ctx.ops.show_output(summary_output().to_json(), result)
    return result


def parse_targets(text):
    """``{value: name}`` from a form's "255=cat, 1=dog" (None when empty).

    Raises:
        ValueError: an entry that is not ``<whole number>=<name>``.
    """
    if not text or not str(text).strip():
        return None
    out = {}
    for part in str(text).replace(";", ",").split(","):
        if not part.strip():
            continue
        value, sep, name = part.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip():
            raise ValueError("class names must read like '255=cat, 1=dog'; got %r" % part.strip())
        out[int(value)] = name.strip()
    return out


def result_panel(title, fields):
    """The output panel of a tool's result: ``fields`` as ``[(key, label, kind)]``, kind "str", "float", "int" or
    "list" (of strings)."""
    outputs = types.Object()
    for key, label, kind in fields:
        if kind == "list":
            outputs.list(key, types.String(), label=label)
        else:
            getattr(outputs, kind)(key, label=label)
    return types.Property(outputs, view=types.View(label="samtext: " + title))
