"""The FiftyOne side shared by every action: target selection, resume, batched writes, run records.

One writer for all actions: :class:`LabelWriter` buffers labels by sample id and writes them with
``set_values`` in batches, so a run streams through any number of samples with flat memory, and an
interruption loses at most one batch.
"""

import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

import fiftyone as fo

logger = logging.getLogger(__name__)


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
    """What a run did. ``labelled`` counts written labels, ``empty`` those of them with no object."""

    field: str
    run_key: str
    targets: int = 0
    labelled: int = 0
    empty: int = 0
    skipped_existing: int = 0
    failed: int = 0
    errors: List[SampleError] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self, max_errors: int = 50) -> dict:
        d = asdict(self)
        d["errors"] = [str(e) for e in self.errors[:max_errors]]
        return d


def run_with_progress(events, on_progress: Optional[Callable[[int, int], None]] = None):
    """Runs an action's generator of ``(done, total)`` events to its end and returns its return value (the
    summary), calling ``on_progress(done, total)`` for each event. The generator is closed on any exit, so
    its pending labels are flushed even when the caller's callback raises or the user presses Ctrl-C."""
    try:
        while True:
            try:
                done, total = next(events)
            except StopIteration as stop:
                return stop.value
            if on_progress is not None:
                on_progress(done, total)
    finally:
        events.close()


def check_field_name(name: str) -> str:
    if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError("output field %r is not a valid field name (letters, digits, _)" % name)
    return name


def check_label_field(dataset: fo.Dataset, name: str, label_cls) -> bool:
    """Whether ``name`` exists (as a ``label_cls`` field); creates nothing.

    Raises:
        ValueError: the field exists with another type.
    """
    check_field_name(name)
    schema = dataset.get_field_schema()
    if name not in schema:
        return False
    f = schema[name]
    doc_type = getattr(f, "document_type", None)
    if not isinstance(f, fo.EmbeddedDocumentField) or doc_type is not label_cls:
        found = doc_type.__name__ if doc_type else type(f).__name__
        raise ValueError(
            "field %r already exists with type %s, not %s; choose another output field" % (name, found, label_cls.__name__)
        )
    return True


def ensure_label_field(dataset: fo.Dataset, name: str, label_cls) -> None:
    """Declares ``name`` as a ``label_cls`` field, or checks that the existing one has that type.

    Raises:
        ValueError: the field exists with another type (it is left untouched).
    """
    if not check_label_field(dataset, name, label_cls):
        dataset.add_sample_field(name, fo.EmbeddedDocumentField, embedded_doc_type=label_cls)


def set_mask_targets(dataset: fo.Dataset, name: str, targets: Dict[int, str]) -> None:
    """Sets ``dataset.mask_targets[name]``, keeping other fields' targets and other classes."""
    current = dict(dataset.mask_targets.get(name, {}))
    current.update(targets)
    dataset.mask_targets[name] = current
    dataset.save()


def targets_to_label(view, out_field: str, overwrite: bool, exclude_ids=()) -> Tuple[List[str], List[str], int]:
    """The samples of ``view`` to process: ``(ids, filepaths, skipped)``.

    Without ``overwrite``, samples whose ``out_field`` is already set are skipped (and counted), so a
    rerun after an interruption labels only what is missing. Samples in ``exclude_ids`` (the
    references) are left out. IDs and paths are read up front (small) so that no database cursor stays
    open through a long run.
    """
    exclude = set(exclude_ids)
    done = set()
    if not overwrite and view.has_field(out_field):
        done = set(view.exists(out_field).values("id")) - exclude
    ids, paths = view.values(["id", "filepath"])
    keep = [i for i, sid in enumerate(ids) if sid not in exclude and sid not in done]
    return [ids[i] for i in keep], [paths[i] for i in keep], len(done)


class LabelWriter:
    """Buffers ``{sample_id: label}`` per field and writes each batch with one ``set_values`` call.

    Arguments:
        dataset: the dataset to write to.
        batch_size: labels per write.
    """

    def __init__(self, dataset: fo.Dataset, batch_size: int = 16):
        self.dataset = dataset
        self.batch_size = batch_size
        self._pending: Dict[str, Dict[str, object]] = {}
        self._count = 0

    def add(self, sample_id: str, labels: Dict[str, object]) -> None:
        """Queues ``{field: label}`` for one sample; writes when the batch is full."""
        for name, label in labels.items():
            self._pending.setdefault(name, {})[sample_id] = label
        self._count += 1
        if self._count >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        for name, values in self._pending.items():
            if values:
                self.dataset.set_values(name, values, key_field="id", validate=False)
        self._pending = {}
        self._count = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.flush()


def segmentation_label(mask: np.ndarray, value: int, mask_path: Optional[str] = None, **attributes) -> fo.Segmentation:
    """A ``fo.Segmentation`` with ``mask * value`` as uint8, stored in the database or, when
    ``mask_path`` is given, as a PNG there."""
    arr = mask.astype(np.uint8) * np.uint8(value)
    if mask_path:
        from PIL import Image

        os.makedirs(os.path.dirname(mask_path), exist_ok=True)
        Image.fromarray(arr).save(mask_path)
        return fo.Segmentation(mask_path=mask_path, **attributes)
    return fo.Segmentation(mask=arr, **attributes)


def keypoints_label(points: np.ndarray, labels: np.ndarray, size: Tuple[int, int]) -> fo.Keypoints:
    """Prompt points ``(K, 2)`` ``(x, y)`` pixels and labels ``(K,)`` as ``fo.Keypoints`` named
    "positive" and "negative", in FiftyOne's relative coordinates for an image of ``size = (H, W)``."""
    h, w = size
    kps = []
    for value, name in ((1, "positive"), (0, "negative")):
        pts = [(float(x) / w, float(y) / h) for (x, y), lbl in zip(points, labels) if lbl == value]
        if pts:
            kps.append(fo.Keypoint(label=name, points=pts))
    return fo.Keypoints(keypoints=kps)


def run_key_for(out_field: str) -> str:
    return "samtext_" + out_field


def record_run(dataset: fo.Dataset, run_key: str, **config) -> None:
    """Stores what produced a field (method, models, parameters, versions) as a FiftyOne run."""
    import fiftyone.constants as foc

    from . import __version__

    config = dict(config, samtext_version=__version__, fiftyone_version=foc.VERSION, started=time.time())
    dataset.register_run(run_key, dataset.init_run(**config), overwrite=True, cleanup=False)
