"""SDK: write a pseudo-label field to disk with FiftyOne's exporters, for users who train elsewhere.

Example::

    samtext.export_labels(dataset, "cat_masks", "/data/cats_seg")                  # images + PNG class masks
    samtext.export_labels(dataset, "cat_masks", "/data/cats_coco", format="coco")  # COCO instances JSON

Labels a review rejected (label tag ``samtext:reject``) and samples without the field are left out; empty
labels (the object is absent) are exported as all-background masks, or images without annotations in COCO.
"""

import json
import os
from typing import Dict

import fiftyone as fo

from ..run import class_maps as lm
from ..run import driver, records
from ..settings import ExportSettings, signature_with


def export_labels(samples, field: str, export_dir: str, **kwargs) -> Dict[str, object]:
    """Exports ``field`` (a ``fo.Segmentation``) of ``samples``.

    Arguments:
        samples: a dataset or view.
        field: the pseudo-label field.
        export_dir: the folder to write.
        format: "segmentation": FiftyOne's ``ImageSegmentationDirectory`` (``data/`` images, ``labels/`` PNG
            masks of class values, the class names in the field's ``mask_targets``); "coco": FiftyOne's
            ``COCODetectionDataset`` (``labels.json``, one annotation per connected object of the segmentation
            with its polygon, category names from ``mask_targets``). The segmentation folder also gets
            ``classes.json`` (``{value: name}``), which that format does not carry.
        skip_tag: leave out labels with this label tag (None: export all).
        export_media: copy the images too (False: labels only).
        overwrite: replace an existing ``export_dir``.
        (``format``, ``skip_tag``, ``export_media`` and ``overwrite`` are :class:`samtext.settings.ExportSettings`.)

    Returns:
        ``{"export_dir", "format", "exported", "skipped_rejected", "without_label", "warnings"}``.

    Raises:
        ValueError: a bad format or field, a non-empty ``export_dir`` without ``overwrite``, or an
            ``export_dir`` that holds the dataset's images or mask files.
    """
    from fiftyone import ViewField as F

    settings = ExportSettings.from_kwargs(kwargs, "export_labels")
    format, skip_tag, overwrite = settings.format, settings.skip_tag, settings.overwrite
    dataset, samples = driver.sample_collection(samples)
    if lm.field_type(dataset, field) is not fo.Segmentation:
        raise ValueError("export_labels writes a fo.Segmentation field; %r holds fo.Detections" % field)
    export_dir = os.path.abspath(os.path.expanduser(export_dir))
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite:
        raise ValueError("export_dir %s is not empty; pass overwrite=True to replace it" % export_dir)
    _check_holds_no_data(dataset, field, export_dir)
    warning = records.running_note(dataset, field)
    labelled = samples.exists(field)
    without = len(samples) - len(labelled)
    view = labelled
    if skip_tag:
        view = labelled.match(~F(field + ".tags").contains(skip_tag))
    targets = {int(k): v for k, v in (dataset.mask_targets.get(field) or dataset.default_mask_targets or {}).items()}
    media = bool(settings.export_media)
    if format == "segmentation":
        rel_dir = _names_root(view)
        view.export(export_dir=export_dir, dataset_type=fo.types.ImageSegmentationDirectory, label_field=field,
                    mask_targets=targets or None, export_media=media, overwrite=overwrite, rel_dir=rel_dir)
        with open(os.path.join(export_dir, "classes.json"), "w") as f:  # the format itself names no classes
            json.dump({str(k): v for k, v in sorted(targets.items())}, f, indent=1)
    else:
        _export_coco(view, field, export_dir, targets, media, overwrite)
    return dict(export_dir=export_dir, format=format, exported=len(view), skipped_rejected=len(labelled) - len(view),
                without_label=without, warnings=[warning] if warning else [])


def _names_root(view):
    """The folder the mask files' names are taken relative to: None (names are the images' file names) when those
    are unique; else the images' common folder, so that masks of images with one name in different folders
    (``cam1/0001.jpg``, ``cam2/0001.jpg``) do not overwrite each other.

    Raises:
        ValueError: several samples share one image file (their masks would be one file), before anything is
            written.
    """
    from collections import Counter

    paths = view.values("filepath")
    stems = Counter(os.path.splitext(os.path.basename(p))[0] for p in paths)
    if len(stems) == len(paths):
        return None
    shared = [(p, n) for p, n in Counter(paths).items() if n > 1]
    if shared:
        raise ValueError("%d image files are used by several samples (e.g. %s, by %d samples): their masks would "
                         "overwrite each other in one file; export a view with each image once"
                         % (len(shared), shared[0][0], shared[0][1]))
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    names = Counter(os.path.splitext(os.path.relpath(p, root))[0] for p in paths)
    if len(names) < len(paths):  # "a.jpg" and "a.png" in one folder
        twin = next(n for n, c in names.items() if c > 1)
        raise ValueError("images %r.* of one folder would share a mask file name; rename one" % twin)
    return root


def _check_holds_no_data(dataset: fo.Dataset, field: str, export_dir: str) -> None:
    """Refuses an export folder that holds (or is inside the folder of) the dataset's images or the field's mask
    files: replacing it would delete them.

    Raises:
        ValueError: naming the first such file.
    """
    root = export_dir.rstrip(os.sep) + os.sep
    paths = dataset.values("filepath") + [p for p in dataset.values(field + ".mask_path") if p]
    inside = next((p for p in paths if os.path.abspath(p).startswith(root)), None)
    if inside:
        raise ValueError("export_dir %s holds the dataset's own files (e.g. %s); exporting there could delete "
                         "them: choose another folder" % (export_dir, inside))


def _export_coco(view, field, export_dir, targets, media, overwrite):
    """COCO through FiftyOne's exporter: each segmentation's connected objects (FiftyOne's ``to_detections``
    with "thing" classes), converted in memory. Read from the segmentation itself, not from
    ``<field>_instances``, so that masks a person corrected in the App are what is exported."""
    import shutil

    import fiftyone.utils.coco as fouc

    if overwrite and os.path.isdir(export_dir):
        shutil.rmtree(export_dir)
    classes = [targets[k] for k in sorted(targets)] or None
    exporter = fouc.COCODetectionDatasetExporter(export_dir=export_dir, export_media=media, classes=classes)
    view.compute_metadata()
    with exporter:
        exporter.log_collection(view)
        for sample in view.select_fields(field):
            dets = sample[field].to_detections(mask_targets=targets or None, mask_types="thing")
            exporter.export_sample(sample.filepath, dets, metadata=sample.metadata)


signature_with(export_labels, ExportSettings)
