"""Blocks shared by samtext's operators: form pieces (models, output, gate, sharding) and the execution of an
action's ``(done, total)`` generator immediately, delegated, or split into several delegated runs."""

import contextlib
import copy
import functools
import logging
import os
import threading
import time

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._sdk import samtext

logger = logging.getLogger(__name__)
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


def icon_of(operator_name):
    """The operator's own toolbar icon (``assets/<operator name>.svg``: each button is told apart by its picture,
    its label shows on hover), else samtext's."""
    path = "/assets/%s.svg" % operator_name
    return path if os.path.isfile(os.path.join(PLUGIN_DIR, path.lstrip("/"))) else ICON


PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def action_config(name, label, description):
    """The configuration every samtext action operator shares: a dynamic form, progress as a generator, run
    immediately or delegated."""
    return foo.OperatorConfig(name=name, label="samtext: " + label, description=description, icon=icon_of(name),
                              dynamic=True, execute_as_generator=True, allow_immediate_execution=True,
                              allow_delegated_execution=True)


def tool_config(name, label, description, delegate_by_default=False, as_generator=False):
    """The configuration of samtext's tools that write no labels (evaluate, review, export, train): a dynamic
    form, run immediately or delegated (``delegate_by_default`` for the long ones; ``as_generator`` for one that
    streams its progress to the App)."""
    return foo.OperatorConfig(name=name, label="samtext: " + label, description=description, icon=icon_of(name),
                              dynamic=True, allow_immediate_execution=True, allow_delegated_execution=True,
                              default_choice_to_delegated=delegate_by_default, execute_as_generator=as_generator)


def action_button(label, place=types.Places.SAMPLES_GRID_SECONDARY_ACTIONS, icon=ICON):
    """A button that opens the operator's form, among the samples grid's actions unless ``place`` says
    otherwise (e.g. ``types.Places.EMBEDDINGS_ACTIONS``)."""
    return types.Placement(place, types.Button(label=label, icon=icon, prompt=True))


def call_operator(operator, sample_collection, params, delegate=False, **request):
    """Runs ``operator`` from Python on a dataset or view with the form's ``params`` (queued when
    ``delegate``), as every operator's ``__call__`` does; ``request`` adds request-level keys (``view_target``)."""
    key = "view" if isinstance(sample_collection, fo.DatasetView) else "dataset"
    request = dict(request, **{PYTHON_CALL: True})
    return foo.execute_operator(operator.uri, {key: sample_collection, "params": params, **request},
                                request_delegation=delegate)


# Set on requests made by call_operator: FiftyOne runs a generator operator called from Python to its end and
# drops what it returns (ExecutionResult.result is None), so such a run returns its summary plainly instead.
PYTHON_CALL = "samtext_python_call"


class SamtextOperator(foo.Operator):
    """What every samtext operator shares: its name and label come from its action's entry in the registry
    (:data:`samtext.actions.ACTIONS`), and its button sits among the samples grid's actions unless ``place`` says
    otherwise. A subclass sets ``action`` (the registry's name) and ``description``."""

    action = description = None  # e.g. "compute_mask_proposals"
    place = types.Places.SAMPLES_GRID_SECONDARY_ACTIONS
    delegate_by_default = False
    as_generator = False

    @property
    def spec(self):
        return samtext.ACTIONS[self.action]

    @property
    def config(self):
        return tool_config(self.spec.operator, self.spec.label, self.description, self.delegate_by_default,
                           self.as_generator)

    def resolve_placement(self, ctx):
        return action_button(self.spec.label, self.place, icon_of(self.spec.operator))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "execute" in cls.__dict__:  # every samtext operator's execute does a worker's duties when delegated
            cls.execute = _with_worker_duties(cls.__dict__["execute"])


def _with_worker_duties(execute):
    @functools.wraps(execute)
    def run(self, ctx):
        if not ctx.delegated:
            return execute(self, ctx)
        with worker_duties(ctx):
            return execute(self, ctx)

    return run


@contextlib.contextmanager
def worker_duties(ctx):
    """What a samtext operation does on a delegated worker: first it fails and queues again the samtext
    operations of its dataset whose worker died (:func:`samtext.run.operations.recover_stale_operations`); while
    it runs, it keeps its own operation alive (a heartbeat on ``updated_at``) and names it in the run records it
    opens."""
    from samtext.run import records
    from samtext.run.operations import OperationHeartbeat, recover_quietly

    operation_id = ctx.request_params.get("run_doc")
    recover_quietly(ctx.dataset.name if ctx.dataset is not None else None)
    with records.in_operation(operation_id), OperationHeartbeat(operation_id):
        yield


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

    extra_fields = ()  # [(key, label, kind)] that finish() adds to the summary, for its panel
    finishing = None  # the progress label while finish() works, e.g. "computing the proposal map"

    def finish(self, ctx, summary) -> dict:
        """Work that follows the run in the same operation (e.g. the map after the proposals), once the run has
        labelled something; returns what it adds to the run's result (keys of ``extra_fields``)."""
        return {}

    def resolve_output(self, ctx):
        return summary_output(ctx.results, self.extra_fields)

    def show_results(self, ctx, summary):
        """The App's messages once an immediate run is done: the dataset reloads (the run wrote new fields). An
        operator whose view was made by a lasso or a selection shows what the run produced instead."""
        yield ctx.ops.reload_dataset()


def whole_view_target(ctx, prefer_dataset=False):
    """The target a form starts on: the whole current view (the dataset when no view is applied; the base view of
    a patches view), never "Current selection" (FiftyOne's own default when samples are selected: selecting the
    reference tile would make the reference the only target). ``prefer_dataset``: the dataset even under a view
    (the few-shot form, whose view is usually the lasso that picked the exemplars)."""
    view = ctx.view
    if view is not None and getattr(view, "_is_generated", False):
        return "BASE_VIEW"
    if prefer_dataset or view is None or ctx.dataset is None or view == ctx.dataset.view():
        return "DATASET"
    return "CURRENT_VIEW"


def target(inputs, ctx, action_description, exclude=(), exclude_what="the reference", prefer_dataset=False,
           **kwargs):
    """The form's target (FiftyOne's view target), defaulting to :func:`whole_view_target`. Marks it invalid, so
    the run cannot start, when it holds no sample, or only samples the run never labels (``exclude``: sample ids,
    e.g. the references, described by ``exclude_what``). Returns the property."""
    prop = inputs.view_target(ctx, action_description=action_description,
                              default_target=whole_view_target(ctx, prefer_dataset), **kwargs)
    if ctx.dataset is None:
        return prop
    try:
        view = ctx.target_view()
    except Exception:  # a target FiftyOne cannot build yet (the form is still being filled in)
        return prop
    count = len(view)
    problem = None
    if not count:
        problem = "The target holds no sample: choose the dataset or another view"
    elif exclude and count <= len(set(exclude)) and set(view.values("id")) <= set(exclude):
        problem = ("The target holds only %s (%d sample%s), which is never labelled: choose the dataset or the "
                   "current view" % (exclude_what, count, "s" if count > 1 else ""))
    if problem:
        prop.invalid = True
        prop.error_message = problem
        inputs.view("target_problem", types.Warning(label=problem))
    return prop


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


SAM3_CHOICES = {name: label for name, label in SAM_CHOICES.items() if registry.sam_spec(name).family == "sam3"}


def models(inputs, ctx, needs_clip=False, sam3_only=False):
    """The models' fields. ``sam3_only``: the chosen method runs on SAM 3 (its concept or exemplar prompts), so the
    SAM model offers SAM 3's choices, defaults to SAM 3, and another model already in the form is marked invalid
    with the reason (Execute stays off)."""
    choices = SAM3_CHOICES if sam3_only else SAM_CHOICES
    default = next(iter(SAM3_CHOICES)) if sam3_only else MODELS.default("sam_model")
    prop = inputs.enum("sam_model", list(choices), default=default, label="SAM model", view=choice_view(choices))
    chosen = ctx.params.get("sam_model")
    if sam3_only and chosen and chosen not in SAM3_CHOICES:
        prop.invalid = True
        prop.error_message = "this method runs on SAM 3: choose a SAM 3 model (%r is not one)" % chosen
    inputs.str("sam_checkpoint", label="SAM weights file (optional)",
               description="A local checkpoint of the chosen SAM model (SAM 2.1: Meta's .pt file or a folder with "
                           "config.json and model.safetensors; SAM 3: Meta's sam3.pt or such a folder); default: samtext's cache, the "
                           "Hugging Face cache or FiftyOne's model zoo, downloaded on first use (the way to run "
                           "offline)")
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
    inputs.str("ray_address", label="Ray cluster (optional)",
               description="Label on a Ray cluster: 'auto' (the cluster this machine has joined), "
                           "'ray://head:10001', or 'local'; this run writes the labels and reports progress, Ray's "
                           "actors run the models (pip install 'samtext[ray]')")
    inputs.int("ray_actors", min=1, max=1024, label="Ray actors (optional)",
               description="Default: one per GPU of the cluster, or its CPUs")


def run_kwargs(params, side_fields=("instances", "prompts")):
    """The driver's options, from the form; a side field's switch defaults to on when the form shows it
    (``side_fields``, as given to :func:`output_field`), else to off."""
    return dict(
        set_knobs(params, RUN, ("out_field", "overwrite", "batch_size", "mask_dir", "fail_fast", "shard", "ray_address",
                                "ray_actors", "ray_gpus_per_actor")),
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


def images_progress(done, total):
    """``(fraction, label)`` of a labelling run's ``(done, total)`` event."""
    return done / max(total, 1), progress_label(done, total)


def app_progress(ctx, events, describe=images_progress):
    """Runs an action's generator of progress events for an immediate run, yielding the App's progress triggers
    (``describe(*event) -> (fraction, label)``); returns the generator's return value (the summary). When the App cancels, the action's
    generator is closed (by this generator's close, or by the watchdog when FiftyOne just drops it), so it
    flushes its labels and records the run as canceled."""
    relay = _Relay(events)
    try:
        while True:
            try:
                event = relay.next()
            except StopIteration as stop:
                return stop.value
            relay.waiting()
            fraction, label = describe(*event)
            yield ctx.trigger("set_progress", dict(progress=fraction, label=label))
            relay.ready()
    finally:
        relay.close()


def delegated_progress(ctx, events):
    """Runs an action's generator for a delegated run (or one called from Python), recording progress on the run;
    returns the summary."""
    def progress(done, total):
        if ctx.delegated:
            ctx.set_progress(progress=done / max(total, 1), label=progress_label(done, total))

    return samtext.run_with_progress(events, progress)


def error_output():
    outputs = types.Object()
    outputs.str("error", label="Error")
    return types.Property(outputs, view=types.View(label="samtext: the run failed"))


SUMMARY_FIELDS = [("field", "Output field", "str"), ("status", "Status", "str"), ("notes", "Why nothing was found", "list"),
                  ("labelled", "Images labelled", "int"), ("instances", "Objects found", "int"),
                  ("empty", "Images with no object", "int"), ("skipped_existing", "Skipped (already labelled)", "int"),
                  ("failed", "Failed", "int"), ("errors", "Errors", "list"), ("queued", "Queued delegated runs", "list")]


def summary_output(result=None, extra_fields=()):
    """The output panel of a labelling run's summary (lists and values the run left empty are not shown)."""
    return result_panel(None, SUMMARY_FIELDS + list(extra_fields), result)


def delegation_off_notice(inputs, what):
    """A notice, in a form whose operator is delegated by default, when this App cannot delegate (FiftyOne's
    open-source App delegates only with ``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true``): the run then happens in
    the App, with its progress shown, and the user should know before pressing Execute."""
    if not fo.config.allow_legacy_orchestrators:
        inputs.view("runs_here", types.Notice(
            label="%s runs here, in the App, with its progress shown: delegated runs are off in this App. To run it "
                  "in the background instead, start the App with FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true and a "
                  "worker with `fiftyone delegated launch`" % what))


def queue_shards(ctx, operator, count, prepare):
    """Queues ``count`` delegated runs of ``operator``, one per shard of the target, with the same parameters.
    ``prepare()`` first validates the run and creates its fields and record once (so the shards, running
    side by side, do not race to create them) and says how many samples there are to label; with none,
    nothing is queued. Returns the queued operations' IDs."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    from samtext.run.operations import recover_quietly

    if not prepare():
        return []  # nothing to label
    if not ctx.delegated:  # a delegated run checked already (worker_duties)
        recover_quietly(ctx.dataset.name)  # shards of an earlier run whose workers died go back in the queue
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
    if ctx.delegated or ctx.request_params.get(PYTHON_CALL):
        summary = delegated_progress(ctx, events())
        return dict(summary.to_dict(max_errors=20), **_finish(ctx, operator, summary))
    return _execute_immediate(ctx, operator, events)


def _finish(ctx, operator, summary):
    """``operator.finish`` after a run that labelled something (not after one sharded run of several). Its failure
    leaves the run's labels as they are and becomes a note of the result."""
    if not summary.labelled or summary.status != "completed" or ctx.params.get("shard") is not None:
        return {}
    try:
        return operator.finish(ctx, summary)
    except Exception as e:
        logger.exception("samtext: %s failed after the run into %r", operator.finishing, summary.field)
        return {"notes": summary.notes + ["%s failed (%s); the labels are written, and the step can be run on "
                                          "its own" % (operator.finishing or "the follow-up step", e)]}


def _show_queued(ctx, result):
    message = ("samtext: queued %d delegated runs; workers started with `fiftyone delegated launch` run them"
               % len(result["queued"]) if result["queued"] else "samtext: nothing to label (all labelled already)")
    yield ctx.ops.notify(message, variant="info")
    yield ctx.ops.show_output(summary_output(result).to_json(), result)
    return result


def _execute_immediate(ctx, operator, events):
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
    if operator.finishing and summary.labelled:
        yield ctx.trigger("set_progress", dict(progress=1.0, label=operator.finishing))
    result.update(_finish(ctx, operator, summary))
    yield from operator.show_results(ctx, summary)
    message = ("samtext: labelled %d images into %s (%d objects, %d empty, %d failed)"
               % (summary.labelled, summary.field, summary.instances, summary.empty, summary.failed))
    if result["notes"]:  # nothing was found or labelled, or a step failed: say why, not "success"
        message += ". " + result["notes"][-1]
    yield ctx.ops.notify(message, variant="error" if summary.failed else "warning" if result["notes"] else "success")
    # FiftyOne drops a generator's return value, so resolve_output() would show nothing: show it here
    from samtext.run.fields import UNTICKED_KINDS

    if operator.spec.output not in UNTICKED_KINDS:  # the grid shows the labels, not dozens of proposals per image
        yield ctx.ops.set_active_fields(fields=sorted(set(ctx.active_fields or []) | {summary.field}))
    elif "active_fields" in ctx.request_params:  # the App ticks a new label field when it reloads the dataset
        yield ctx.ops.set_active_fields(fields=sorted(set(ctx.active_fields) - {summary.field}))
    yield ctx.ops.show_output(summary_output(result, operator.extra_fields).to_json(), result)
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


def result_panel(title, fields, result=None):
    """The output panel of a tool's result: ``fields`` as ``[(key, label, kind)]``, kind "str", "float", "int" or
    "list" (of strings). With the ``result`` (``ctx.results`` once the run is done), keys it holds no value for
    (None, an empty list) are left out, so the panel shows no empty headers."""
    outputs = types.Object()
    for key, label, kind in fields:
        if result and result.get(key) in (None, [], ""):
            continue
        if kind == "list":
            outputs.list(key, types.String(), label=label)
        else:
            getattr(outputs, kind)(key, label=label)
    return types.Property(outputs, view=types.View(label="samtext" + (": " + title if title else "")))


def rounded(result, places=4):
    """``result`` with its floats rounded for the App's panels (an mIoU of 0.6180339887 reads 0.618)."""
    return {k: round(v, places) if isinstance(v, float) else v for k, v in result.items()}
