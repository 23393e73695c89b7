"""Embeddings kept out of the database: vectors keyed by label id, in a folder of chunk files.

At 100k images and ~50 proposals per image, embeddings are millions of vectors: too many for sample
documents, which FiftyOne loads whole. They live beside the dataset instead, in ``<root>/part-*.npz`` files
(``ids``: label ids, ``vectors``: ``(N, D)`` float16), each written once, atomically (a temporary name, then a
rename), by one writer: workers running shards of one run side by side never touch the same file. A run
records where its store is; :func:`default_root` is used when none is given.
"""

import glob
import os
import uuid
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np


def default_root(dataset_name: str, field: str) -> str:
    """``$SAMTEXT_EMBEDDINGS_DIR`` (default ``~/.samtext/embeddings``) / dataset / field."""
    base = os.environ.get("SAMTEXT_EMBEDDINGS_DIR") or os.path.join(os.path.expanduser("~"), ".samtext", "embeddings")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset_name)
    return os.path.join(os.path.abspath(base), safe, field)


class EmbeddingStore:
    """The chunk files under ``root`` (created on the first write).

    Arguments:
        root: the folder (made absolute).
    """

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(root))

    def parts(self) -> List[str]:
        return sorted(glob.glob(os.path.join(self.root, "part-*.npz")))

    def write(self, ids: List[str], vectors: np.ndarray) -> Optional[str]:
        """Writes one chunk of ``ids`` and their ``(N, D)`` vectors; returns its path (None when empty)."""
        if not ids:
            return None
        vectors = np.asarray(vectors, dtype=np.float16)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError("expected (%d, D) vectors, got %s" % (len(ids), vectors.shape))
        os.makedirs(self.root, exist_ok=True)
        path = os.path.join(self.root, "part-%s.npz" % uuid.uuid4().hex)
        tmp = path[:-4] + ".tmp.npz"
        np.savez(tmp, ids=np.asarray(ids, dtype="U24"), vectors=vectors)
        os.replace(tmp, path)
        return path

    def load(self, ids: Optional[Iterable[str]] = None) -> Tuple[List[str], np.ndarray]:
        """``(ids, (N, D) float32 vectors)``: all stored, or those of ``ids`` in that order (ids with no vector
        are left out; the later chunk wins when an id was written twice)."""
        found: Dict[str, np.ndarray] = {}
        want = None if ids is None else set(ids)
        for path in self.parts():
            with np.load(path) as part:
                for i, v in zip(part["ids"].tolist(), part["vectors"]):
                    if want is None or i in want:
                        found[i] = v
        order = list(found) if ids is None else [i for i in ids if i in found]
        if not order:
            return [], np.zeros((0, 0), np.float32)
        return order, np.stack([found[i] for i in order]).astype(np.float32)

    def count(self) -> int:
        n = 0
        for path in self.parts():
            with np.load(path) as part:
                n += len(part["ids"])
        return n


class EmbeddingSidecar:
    """Collects the embeddings of the instances a run writes as ``fo.Detections`` and writes them to an
    :class:`EmbeddingStore` each time the run's labels are flushed, just before the labels (so a label in the
    database always has its vector on disk).

    Arguments:
        store: the :class:`EmbeddingStore`.
        field: the ``fo.Detections`` field whose detections carry the instances' ids.
    """

    def __init__(self, store: EmbeddingStore, field: str):
        self.store, self.field = store, field
        self._ids: List[str] = []
        self._vectors: List[np.ndarray] = []

    def add(self, sample_id: str, labels: dict, result) -> None:
        dets = labels[self.field].detections
        for det, inst in zip(dets, result.instances):
            if inst.embedding is not None:
                self._ids.append(det.id)
                self._vectors.append(np.asarray(inst.embedding, dtype=np.float32))

    def flush(self) -> None:
        if self._ids:
            self.store.write(self._ids, np.stack(self._vectors))
        self._ids, self._vectors = [], []
