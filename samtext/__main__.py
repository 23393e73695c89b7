"""Command line: ``python -m samtext {run,settings,demo,download-weights}``.

::

    python -m samtext settings annotate_by_text          # its inputs and every knob with its default
    python -m samtext run annotate_by_text --dataset street prompts="car; person" threshold=0.4 sam_model=tiny
    python -m samtext run compute_proposal_map --dataset street num_clusters=8

``run`` takes any action of :data:`samtext.actions.ACTIONS`; its inputs and knobs are ``name=value`` pairs, each value
read as JSON when it reads as JSON (numbers, true/false, null, lists, objects), else as text.
"""

import argparse
import logging
import os
import shlex
import sys
from .errors import SamtextError


def _demo(args) -> int:
    import samtext

    if not args.tiny:  # the weights first: a missing file is said before anything is built
        from samtext.models.registry import DEFAULT_SAM
        from samtext.models.weights import WeightsUnavailableError, resolve_sam_checkpoint

        try:
            args.sam_checkpoint = resolve_sam_checkpoint(DEFAULT_SAM, args.sam_checkpoint)
        except WeightsUnavailableError as e:
            raise WeightsUnavailableError("%s On the command line: --sam-checkpoint PATH; offline, try --tiny." % e)
    dataset = samtext.make_demo_dataset(args.name)
    reference = dataset.match_tags("reference").first()
    models = dict(sam_model="tiny", clip_model="tiny") if args.tiny else dict(sam_checkpoint=args.sam_checkpoint)
    summary = samtext.annotate_by_reference(
        dataset, "cat", reference=reference, reference_field="reference_mask", out_field=args.out_field,
        method=args.method, save_prompts=True, overwrite=True, progress=True, **models,
    )
    print(
        "Labelled %d of %d images into %r (%d objects, %d images empty, %d failed) in %.1f s."
        % (summary.labelled, summary.targets, summary.field, summary.instances, summary.empty, summary.failed,
           summary.seconds)
    )
    for err in summary.errors:
        print("  failed:", err)
    plugins = plugins_dir_to_set()
    env = "FIFTYONE_PLUGINS_DIR=%s " % shlex.quote(plugins) if plugins else ""
    print("Open it in the App, with samtext's operators:\n  %s%s -c \"import fiftyone as fo; "
          "fo.launch_app(fo.load_dataset('%s')).wait()\"" % (env, shlex.quote(sys.executable), args.name))
    if plugins:
        print("(FiftyOne finds plugins in FIFTYONE_PLUGINS_DIR: without it the App shows no samtext operator)")
    print("or in Python:  session = fo.launch_app(fo.load_dataset('%s'))" % args.name)
    return 0 if summary.failed == 0 else 1


def plugins_dir_to_set():
    """The folder FiftyOne must be told about (``FIFTYONE_PLUGINS_DIR``) for its App to show samtext's operators:
    the one that holds this checkout, when FiftyOne's plugins folder does not already hold samtext; else None."""
    import fiftyone as fo

    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(checkout, "fiftyone.yml")):
        return None  # an installed package: the plugin lives in FiftyOne's plugins folder
    current = fo.config.plugins_dir
    if current and os.path.realpath(checkout).startswith(os.path.realpath(current) + os.sep):
        return None
    return os.path.dirname(checkout)


def _value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items):
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SamtextError("expected name=value, got %r" % item)
        out[name.strip()] = _value(value)
    return out


def _run(args) -> int:
    import inspect
    import json

    import fiftyone as fo

    import samtext

    spec = samtext.actions.get(args.action)
    if args.dataset not in fo.list_datasets():
        raise SamtextError("no FiftyOne dataset named %r; the datasets here: %s" % (args.dataset, fo.list_datasets()))
    view = fo.load_dataset(args.dataset)
    if args.tags:
        view = view.match_tags(args.tags.split(","))
    kwargs = _pairs(args.values)
    if "progress" in inspect.signature(spec.run).parameters:
        kwargs["progress"] = True
    try:
        inspect.signature(spec.run).bind(view, **kwargs)
    except TypeError as e:
        raise SamtextError("%s: %s (its inputs: %s; see python -m samtext settings %s)"
                         % (spec.name, e, ", ".join(spec.inputs) or "none", spec.name)) from None
    result = spec.run(view, **kwargs)
    out = result.to_dict() if hasattr(result, "to_dict") else result if isinstance(result, dict) else vars(result)
    print(json.dumps(out, indent=1, default=str))
    return 1 if out.get("failed") else 0


def _settings(args) -> int:
    import samtext

    specs = [samtext.actions.get(args.action)] if args.action else list(samtext.ACTIONS.values())
    for spec in specs:
        cls = spec.settings
        print("%s  (%s; operator %s; samtext.settings.%s)" % (spec.name, spec.label, spec.operator, cls.__name__))
        print("  inputs: %s" % (", ".join(spec.inputs) or "none"))
        for name in cls.knobs():
            internal = cls.__dataclass_fields__[name].metadata.get("internal")
            print("  %s=%r%s" % (name, cls.default(name), "  (internal)" if internal else ""))
        if spec.iterate is not None and spec.output in ("segmentation", "detections"):
            print("  run options: %s" % ", ".join("%s=%r" % (n, samtext.settings.RunOptions.default(n))
                                                 for n in samtext.settings.RunOptions.knobs()))
    return 0


def _download(args) -> int:
    from samtext.download import download_weights

    clip = [tuple(c.split(":", 1)) for c in args.clip]
    for path in download_weights(args.sam, clip):
        print(path)
    return 0


def _recover(args) -> int:
    from samtext.run.operations import recover_stale_operations

    done = recover_stale_operations(args.dataset, requeue=not args.no_requeue, stale_after=args.stale_after)
    for op in done:
        print("samtext: operation %s (%s) had lost its worker: %s" % (
            op["operation"], op["operator"], "queued again as %s" % op["requeued_as"] if op["requeued_as"] else "failed"))
    if not done:
        print("samtext: no stale samtext operation")
    return 0


def main(argv=None) -> int:
    from samtext.models.registry import DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED, DEFAULT_SAM, SAM_MODELS
    from samtext.settings import REFERENCE_METHODS, ReferenceSettings

    parser = argparse.ArgumentParser(prog="python -m samtext")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build the demo dataset and annotate it by reference mask")
    demo.add_argument("--tiny", action="store_true", help="tiny random models: offline, fast, meaningless masks")
    demo.add_argument("--name", default="samtext-demo")
    demo.add_argument("--out-field", default="cat_mask")
    demo.add_argument("--method", default=ReferenceSettings.method, choices=REFERENCE_METHODS)
    demo.add_argument("--sam-checkpoint", default=None,
                      help="a local checkpoint of the default SAM (else found or downloaded)")
    demo.set_defaults(func=_demo)
    run = sub.add_parser("run", help="run an action on a dataset: inputs and knobs as name=value pairs",
                         description="Runs ACTION (see `python -m samtext settings`) on a FiftyOne dataset.")
    run.add_argument("action", help="annotate_by_text, compute_mask_proposals, ... (python -m samtext settings)")
    run.add_argument("--dataset", required=True, help="the FiftyOne dataset's name")
    run.add_argument("--tags", default=None, help="only samples with these sample tags (comma-separated)")
    run.add_argument("values", nargs="*", metavar="name=value", help="inputs and knobs, e.g. prompts=car threshold=0.4")
    run.set_defaults(func=_run)
    show = sub.add_parser("settings", help="list an action's inputs and knobs with their defaults")
    show.add_argument("action", nargs="?", default=None)
    show.set_defaults(func=_settings)
    dl = sub.add_parser("download-weights", help="fetch the default SAM and CLIP weights into the cache folder")
    dl.add_argument("--sam", nargs="*", default=[DEFAULT_SAM],
                    help="SAM models: %s" % " ".join(n for n, m in SAM_MODELS.items() if not m.for_tests))
    dl.add_argument("--clip", nargs="*", default=["%s:%s" % (DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED)],
                    help="open_clip NAME:TAG pairs")
    dl.set_defaults(func=_download)
    rec = sub.add_parser("recover", help="fail and queue again the samtext delegated operations whose worker died",
                         description="Finds RUNNING samtext delegated operations whose heartbeat stopped (their worker "
                                     "was killed or lost), marks them FAILED with a message, and queues them again; "
                                     "a worker resumes each where it stopped. Safe to run from cron.")
    rec.add_argument("--dataset", default=None, help="only this dataset's operations")
    rec.add_argument("--stale-after", type=float, default=None, help="seconds without a heartbeat (default 120)")
    rec.add_argument("--no-requeue", action="store_true", help="mark them FAILED only")
    rec.set_defaults(func=_recover)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "run" and all("=" in e and not e.startswith("-") for e in extra):
        args.values += extra  # name=value pairs after the options (argparse fills a positional list only once)
    elif extra:
        parser.error("unrecognized arguments: %s" % " ".join(extra))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("samtext").setLevel(logging.INFO)
    from samtext.models import WeightsUnavailableError
    from samtext.run.driver import RunStopped

    try:
        return args.func(args)
    except (WeightsUnavailableError, RunStopped, ValueError) as e:  # what a user can fix: one line, no traceback
        print("samtext: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
