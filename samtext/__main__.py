"""Command line: ``python -m samtext {demo,download-weights}``."""

import argparse
import logging
import sys


def _demo(args) -> int:
    import samtext

    dataset = samtext.make_demo_dataset(args.name)
    reference = dataset.match_tags("reference").first()
    models = dict(sam_model="tiny", clip_model="tiny") if args.tiny else {}
    summary = samtext.annotate_by_reference(
        dataset, "cat", reference=reference, reference_field="reference_mask", out_field=args.out_field,
        method=args.method, save_prompts=True, overwrite=True, progress=True, **models,
    )
    print(
        "Labelled %d of %d images into %r (%d empty, %d failed) in %.1f s."
        % (summary.labelled, summary.targets, summary.field, summary.empty, summary.failed, summary.seconds)
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
    demo.set_defaults(func=_demo)
    dl = sub.add_parser("download-weights", help="fetch the default SAM and CLIP weights into the cache folder")
    dl.add_argument("--sam", nargs="*", default=["vit_b"], help="SAM models: vit_b vit_l vit_h")
    dl.add_argument("--clip", nargs="*", default=["ViT-B-32:openai"], help="open_clip NAME:TAG pairs")
    dl.set_defaults(func=_download)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
