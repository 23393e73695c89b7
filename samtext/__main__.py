"""Command line: ``python -m samtext {demo,download-weights}``."""

import argparse
import logging
import sys


def _demo(args) -> int:
    import samtext

    if not args.tiny:  # the weights first: a missing file is said before anything is built
        from samtext.models.weights import WeightsUnavailableError, resolve_sam_checkpoint

        try:
            args.sam_checkpoint = resolve_sam_checkpoint("vit_b", args.sam_checkpoint)
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
    print("Open it in the App:  python -c \"import fiftyone as fo; fo.launch_app(fo.load_dataset('%s')).wait()\""
          % args.name)
    print("or in Python:  session = fo.launch_app(fo.load_dataset('%s'))" % args.name)
    return 0 if summary.failed == 0 else 1


def _download(args) -> int:
    from samtext.download import download_weights

    clip = [tuple(c.split(":", 1)) for c in args.clip]
    for path in download_weights(args.sam, clip):
        print(path)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samtext")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build the demo dataset and annotate it by reference mask")
    demo.add_argument("--tiny", action="store_true", help="tiny random models: offline, fast, meaningless masks")
    demo.add_argument("--name", default="samtext-demo")
    demo.add_argument("--out-field", default="cat_mask")
    demo.add_argument("--method", default="prior", choices=["prior", "stitch"])
    demo.add_argument("--sam-checkpoint", default=None, help="a local SAM ViT-B checkpoint (else found or downloaded)")
    demo.set_defaults(func=_demo)
    dl = sub.add_parser("download-weights", help="fetch the default SAM and CLIP weights into the cache folder")
    dl.add_argument("--sam", nargs="*", default=["vit_b"], help="SAM models: vit_b vit_l vit_h mobile_sam")
    dl.add_argument("--clip", nargs="*", default=["ViT-B-32:openai"], help="open_clip NAME:TAG pairs")
    dl.set_defaults(func=_download)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("samtext").setLevel(logging.INFO)
    from samtext.run.driver import RunStopped
    from samtext.models import WeightsUnavailableError

    try:
        return args.func(args)
    except (WeightsUnavailableError, RunStopped, ValueError) as e:  # what a user can fix: one line, no traceback
        print("samtext: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
