"""Embeddings kept out of the database: vectors keyed by label id, in a folder of chunk files.

At 100k images and ~50 proposals per image, embeddings are millions of vectors: too many for sample
documents, which FiftyOne loads whole. They live beside the dataset instead, as pairs of ``.npy`` files per
chunk under ``<root>``: ``part-<time>-<random>.vectors.npy`` (``(N, D)`` float16) and
``part-<time>-<random>.ids.npy`` (the label ids as 12-byte ObjectIds, sorted, rows in the same order). A chunk
is written once, atomically (the vectors first, then the ids under a temporary name and a rename: a chunk
without its ids file does not exist), by one writer, so workers running shards of one run side by side never
touch the same file. Lookups go through one sorted index of every chunk's ids (12 bytes and two integers per
vector), built once per store object, and memory-mapped vectors, so reading the vectors of one image's
proposals costs a binary search, not a scan.
A run records where its store is; :func:`default_root` is used when none is given.
"""

import glob
import os
import time
import uuid
from typing import Iterable, List, Optional, Tuple

import numpy as np
from ..errors import SamtextError


def default_root(dataset_name: str, field: str) -> str:
    """``$SAMTEXT_EMBEDDINGS_DIR`` (default ``~/.samtext/embeddings``) / dataset / field."""
    base = os.environ.get("SAMTEXT_EMBEDDINGS_DIR") or os.path.join(os.path.expanduser("~"), ".samtext", "embeddings")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset_name)
    return os.path.join(os.path.abspath(base), safe, field)


def _keys(ids: Iterable[str]) -> np.ndarray:
    """Label ids (24-character hex ObjectIds) as a ``(N,)`` ``S12`` array."""
    ids = list(ids)
    if any(not isinstance(i, str) or len(i) != 24 for i in ids):
        raise SamtextError("label ids must be 24-character hex ObjectIds")
    try:
        return np.array([bytes.fromhex(i) for i in ids], dtype="S12")
    except ValueError:
        raise SamtextError("label ids must be 24-character hex ObjectIds") from None


def _hex(keys: np.ndarray) -> List[str]:
    """``S12`` keys back to hex ids (numpy drops trailing NUL bytes of ``S`` values, so go through bytes)."""
    return [row.tobytes().hex() for row in np.ascontiguousarray(keys).view(np.uint8).reshape(-1, 12)]


def _save(path: str, array: np.ndarray) -> None:
    tmp = path[:-4] + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


class EmbeddingStore:
    """The chunk files under ``root`` (created on the first write).

    Arguments:
        root: the folder (made absolute).
    """

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(root))
        self._index = None  # (sorted keys (M,) S12, part number (M,), row (M,)), parts

    def parts(self) -> List[str]:
        """The complete chunks, as path stems (``.../part-<time>-<random>``)."""
        return sorted(p[: -len(".ids.npy")] for p in glob.glob(os.path.join(self.root, "part-*.ids.npy"))
                      if not p.endswith(".tmp.npy"))

    def write(self, ids: List[str], vectors: np.ndarray) -> Optional[str]:
        """Writes one chunk of ``ids`` (label ids) and their ``(N, D)`` vectors; returns its stem (None when
        empty)."""
        if not len(ids):
            return None
        vectors = np.asarray(vectors, dtype=np.float16)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise SamtextError("expected (%d, D) vectors, got %s" % (len(ids), vectors.shape))
        keys = _keys(ids)
        order = np.argsort(keys, kind="stable")
        os.makedirs(self.root, exist_ok=True)
        # named by write time, so that sorted names put a later chunk after an earlier one
        stem = os.path.join(self.root, "part-%020d-%s" % (time.time_ns(), uuid.uuid4().hex[:8]))
        _save(stem + ".vectors.npy", np.ascontiguousarray(vectors[order]))
        _save(stem + ".ids.npy", keys[order])  # last: the chunk exists once its ids do
        self._index = None
        return stem

    def _lookup(self):
        """``(sorted keys, part number, row, part stems)``; the vectors files are opened only when read, so that a
        store of thousands of chunks does not hold thousands of open files."""
        if self._index is None:
            parts = self.parts()
            keys, part_no, rows = [], [], []
            for n, stem in enumerate(parts):
                k = np.load(stem + ".ids.npy")
                keys.append(k)
                part_no.append(np.full(len(k), n, dtype=np.int32))
                rows.append(np.arange(len(k), dtype=np.int64))
            if keys:
                keys, part_no, rows = np.concatenate(keys), np.concatenate(part_no), np.concatenate(rows)
                # a later chunk wins when an id was written twice: stable sort, then keep the last of equal keys
                order = np.lexsort((part_no, keys))
                keys, part_no, rows = keys[order], part_no[order], rows[order]
                last = np.append(keys[1:] != keys[:-1], True)
                keys, part_no, rows = keys[last], part_no[last], rows[last]
            else:
                keys, part_no, rows = np.zeros(0, "S12"), np.zeros(0, np.int32), np.zeros(0, np.int64)
            self._index = (keys, part_no, rows, parts)
        return self._index

    def refresh(self) -> None:
        """Forgets the index, so that chunks written by other processes since are seen."""
        self._index = None

    def load(self, ids: Optional[Iterable[str]] = None) -> Tuple[List[str], np.ndarray]:
        """``(ids, (N, D) float32 vectors)``: all stored, or those of ``ids`` in that order (ids with no vector
        are left out)."""
        keys, part_no, rows, parts = self._lookup()
        if ids is None:
            found = np.arange(len(keys))
            out_ids = _hex(keys)
        else:
            ids = list(ids)
            want = _keys(ids)
            pos = np.searchsorted(keys, want).clip(max=max(len(keys) - 1, 0))
            hit = (keys[pos] == want) if len(keys) else np.zeros(len(ids), bool)
            found = pos[hit]
            out_ids = [i for i, h in zip(ids, hit.tolist()) if h]
        if not len(found):
            return [], np.zeros((0, 0), np.float32)
        out = None
        for n in np.unique(part_no[found]).tolist():  # one chunk file open at a time
            sel = np.flatnonzero(part_no[found] == n)
            vectors = np.load(parts[n] + ".vectors.npy", mmap_mode="r")
            if out is None:
                out = np.empty((len(found), vectors.shape[1]), np.float32)
            out[sel] = vectors[rows[found[sel]]]
            del vectors
        return out_ids, out

    def count(self) -> int:
        return len(self._lookup()[0])


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
