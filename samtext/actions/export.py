"""SDK: write a pseudo-label field to disk with FiftyOne's exporters, for users who train elsewhere.

Example::

    samtext.export_labels(dataset, "cat_masks", "/data/cats_seg")                  # images + PNG class masks
    samtext.export_labels(dataset, "cat_masks", "/data/cats_coco", format="coco")  # COCO instances JSON

Labels a review rejected (label tag ``samtext:reject``, unless a person approved them since) and samples
without the field are left out; empty labels (the object is absent) are exported as all-background masks, or
images without annotations in COCO.

Nothing is lost: the export is written to a staging folder on ``export_dir``'s filesystem and moved into place only
when it is complete (a failure leaves ``export_dir`` as it was). ``export_dir`` gets a manifest of the files
samtext wrote there (:data:`MANIFEST`); replacing an export (``overwrite=True``) deletes only those, and a file of
the new export that would replace a file samtext did not write is refused before anything changes.
"""

import json
import os
import shutil
import tempfile
from typing import Dict, List, Set

import fiftyone as fo

from ..images import InputError, image_size
from ..run import class_maps as lm
from ..run import driver, records
from ..settings import ExportSettings, check_folder, signature_with
from .review import rejected_expression
from ..errors import SamtextError

MANIFEST = ".samtext_export.json"  # the files samtext wrote into an export folder, relative to it


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
        skip_tag: leave out labels with this label tag unless they carry ``approved_tag`` (None: export all).
        approved_tag: a label (or sample) tag that overrides ``skip_tag``.
        export_media: copy the images too (False: labels only).
        overwrite: replace an earlier export in ``export_dir`` (only the files samtext wrote there).
        (``format``, ``skip_tag``, ``approved_tag``, ``export_media`` and ``overwrite`` are
        :class:`samtext.settings.ExportSettings`.)

    Returns:
        ``{"export_dir", "format", "exported", "skipped_rejected", "without_label", "failed", "errors",
        "warnings"}``: ``errors`` names each sample left out because its image or mask could not be read.

    Raises:
        SamtextError: a bad format or field; ``export_dir`` a file, not writable, non-empty without
            ``overwrite``, holding the dataset's images or mask files, or holding a file of the new export's
            names that samtext did not write. Nothing is written then.
    """
    settings = ExportSettings.from_kwargs(kwargs, "export_labels")
    format, overwrite = settings.format, settings.overwrite
    dataset, samples = driver.sample_collection(samples)
    if lm.field_type(dataset, field) is not fo.Segmentation:
        raise SamtextError("export_labels writes a fo.Segmentation field; %r holds fo.Detections" % field)
    export_dir = _check_export_dir(export_dir, overwrite)
    _check_holds_no_data(dataset, field, export_dir)
    warning = records.running_note(dataset, field)
    labelled = samples.exists(field)
    without = len(samples) - len(labelled)
    view = labelled
    if settings.skip_tag:
        view = labelled.match(~rejected_expression(field, settings.skip_tag, settings.approved_tag))
    rejected = len(labelled) - len(view)
    errors = _unreadable(view, field, need_images=bool(settings.export_media) or format == "coco")
    if errors:
        view = view.exclude([e.sample_id for e in errors])
    targets = {int(k): v for k, v in (dataset.mask_targets.get(field) or dataset.default_mask_targets or {}).items()}
    # staged on export_dir's own filesystem: inside it when it exists (a mount point, a link to another disk),
    # else beside it; the move into place is then renames only
    export_dir = os.path.realpath(export_dir)
    stage_in = export_dir if os.path.isdir(export_dir) else os.path.dirname(export_dir)
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=stage_in)
    try:
        try:
            if format == "segmentation":
                view.export(export_dir=staging, dataset_type=fo.types.ImageSegmentationDirectory, label_field=field,
                            mask_targets=targets or None, export_media=bool(settings.export_media), overwrite=True,
                            rel_dir=_names_root(view))
                with open(os.path.join(staging, "classes.json"), "w") as f:  # the format itself names no classes
                    json.dump({str(k): v for k, v in sorted(targets.items())}, f, indent=1)
            else:
                _export_coco(view, field, staging, targets, bool(settings.export_media))
        except SamtextError:
            raise
        except Exception as e:
            raise SamtextError("the export of %r failed (%s: %s); nothing was written to %s"
                               % (field, type(e).__name__, e, export_dir)) from e
        _move_into_place(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dict(export_dir=export_dir, format=format, exported=len(view), skipped_rejected=rejected,
                without_label=without, failed=len(errors), errors=[str(e) for e in errors[:50]],
                warnings=[warning] if warning else [])


def _check_export_dir(export_dir, overwrite: bool) -> str:
    """``export_dir`` made absolute, once it is usable.

    Raises:
        SamtextError: not a path, a file, under a file, not writable (:func:`samtext.settings.check_folder`), or
            non-empty without ``overwrite``.
    """
    from types import SimpleNamespace

    export_dir = check_folder(SimpleNamespace(export_dir=export_dir), "export_dir")
    if export_dir is None:
        raise SamtextError("export_dir must be a folder path, got None")
    held = [n for n in os.listdir(export_dir) if not n.startswith(STAGING_PREFIX)] if os.path.isdir(export_dir) else []
    if held and not overwrite:
        raise SamtextError("export_dir %s is not empty; pass overwrite=True to replace an earlier export there (only "
                           "the files samtext wrote are replaced)" % export_dir)
    os.makedirs(os.path.dirname(export_dir), exist_ok=True)
    return export_dir


def _unreadable(view, field: str, need_images: bool) -> List[driver.SampleError]:
    """The samples of ``view`` whose mask file (and, with ``need_images``, image) is missing or not an image,
    each with its problem (headers only: the pixels are read by the export)."""
    errors = []
    for sid, path, mask_path in zip(*view.values(["id", "filepath", field + ".mask_path"])):
        try:
            if mask_path:
                image_size(mask_path)
            if need_images:
                image_size(path)
        except InputError as e:
            errors.append(driver.SampleError(sid, path, "left out of the export: %s" % e))
    return errors


STAGING_PREFIX = ".samtext-export-"


def _files(root: str) -> Set[str]:
    """Every file under ``root``, relative to it (staging folders of exports in progress left out)."""
    out = set()
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(STAGING_PREFIX)]
        out.update(os.path.relpath(os.path.join(folder, f), root) for f in names)
    return out


def _manifest(export_dir: str) -> Set[str]:
    """The files an earlier samtext export wrote into ``export_dir`` (its manifest; entries that would point
    outside the folder are ignored)."""
    try:
        with open(os.path.join(export_dir, MANIFEST)) as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return set()
    safe = {os.path.normpath(e) for e in entries if isinstance(e, str)}
    return {e for e in safe if not os.path.isabs(e) and not e.startswith("..")} | {MANIFEST}


def _move_into_place(staging: str, export_dir: str) -> None:
    """Moves the complete export in ``staging`` to ``export_dir``. When ``export_dir`` does not exist, ``staging``
    (beside it) is renamed. Otherwise (``staging`` is inside it): first every new file is checked not to replace a
    file samtext did not write (the manifest of the earlier export names those it did); then the new files are
    moved in (replacing the earlier export's files of the same names), and only then are the earlier export's
    other files deleted, so a failure part-way leaves every file of one export or the other.

    Raises:
        SamtextError: naming a file samtext did not write; ``export_dir`` is unchanged then.
    """
    new = _files(staging)
    with open(os.path.join(staging, MANIFEST), "w") as f:
        json.dump(sorted(new), f, indent=0)
    new.add(MANIFEST)
    if not os.path.isdir(export_dir):
        os.rename(staging, export_dir)
        os.chmod(export_dir, 0o777 & ~_umask())
        return
    old = _manifest(export_dir)
    foreign = sorted(p for p in new if p not in old and os.path.lexists(os.path.join(export_dir, p)))
    if foreign:
        raise SamtextError("export_dir %s holds %s, which samtext did not write (and %d more such files with the "
                           "export's names); it is left as it was: choose another folder or move them away"
                           % (export_dir, foreign[0], len(foreign) - 1))
    for rel in sorted(new - {MANIFEST}) + [MANIFEST]:  # the manifest last: it lists what is there
        target = os.path.join(export_dir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(staging, rel), target)
    for rel in sorted(old - new):
        path = os.path.join(export_dir, rel)
        if os.path.isfile(path) or os.path.islink(path):
            os.remove(path)
            _prune_empty(os.path.dirname(path), export_dir)


def _umask() -> int:
    """This process's umask, read without changing it (other threads may be creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _prune_empty(folder: str, root: str) -> None:
    while folder != root and folder.startswith(root) and os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
        folder = os.path.dirname(folder)


def _names_root(view):
    """The folder the mask files' names are taken relative to: None (names are the images' file names) when those
    are unique; else the images' common folder, so that masks of images with one name in different folders
    (``cam1/0001.jpg``, ``cam2/0001.jpg``) do not overwrite each other.

    Raises:
        SamtextError: several samples share one image file (their masks would be one file), before anything is
            written.
    """
    from collections import Counter

    paths = view.values("filepath")
    stems = Counter(os.path.splitext(os.path.basename(p))[0] for p in paths)
    if len(stems) == len(paths):
        return None
    shared = [(p, n) for p, n in Counter(paths).items() if n > 1]
    if shared:
        raise SamtextError("%d image files are used by several samples (e.g. %s, by %d samples): their masks would "
                           "overwrite each other in one file; export a view with each image once"
                           % (len(shared), shared[0][0], shared[0][1]))
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    names = Counter(os.path.splitext(os.path.relpath(p, root))[0] for p in paths)
    if len(names) < len(paths):  # "a.jpg" and "a.png" in one folder
        twin = next(n for n, c in names.items() if c > 1)
        raise SamtextError("images %r.* of one folder would share a mask file name; rename one" % twin)
    return root


def _check_holds_no_data(dataset: fo.Dataset, field: str, export_dir: str) -> None:
    """Refuses an export folder that holds (or is inside the folder of) the dataset's images or the field's mask
    files: the export would mix with them.

    Raises:
        SamtextError: naming the first such file.
    """
    root = export_dir.rstrip(os.sep) + os.sep
    paths = dataset.values("filepath") + [p for p in dataset.values(field + ".mask_path") if p]
    inside = next((p for p in paths if os.path.abspath(p).startswith(root)), None)
    if inside:
        raise SamtextError("export_dir %s holds the dataset's own files (e.g. %s); exporting there could replace "
                           "them: choose another folder" % (export_dir, inside))


def _export_coco(view, field, export_dir, targets, media):
    """COCO through FiftyOne's exporter: each segmentation's connected objects (FiftyOne's ``to_detections``
    with "thing" classes), converted in memory. Read from the segmentation itself, not from
    ``<field>_instances``, so that masks a person corrected in the App are what is exported."""
    import fiftyone.utils.coco as fouc

    classes = [targets[k] for k in sorted(targets)] or None
    exporter = fouc.COCODetectionDatasetExporter(export_dir=export_dir, export_media=media, classes=classes)
    view.compute_metadata()
    with exporter:
        exporter.log_collection(view)
        for sample in view.select_fields(field):
            dets = sample[field].to_detections(mask_targets=targets or None, mask_types="thing")
            exporter.export_sample(sample.filepath, dets, metadata=sample.metadata)


signature_with(export_labels, ExportSettings)
