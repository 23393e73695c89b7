"""Run records: what produced a field (action, settings, classes, one entry per run or shard), kept as a FiftyOne
run on the dataset under the key ``samtext_<field>``.

Promises, and how they are kept:

- **Atomic updates.** Each change is one database update of the fields it sets (:func:`update_run`), so shards
  that finish together never overwrite each other's entries. Creating or replacing a record, and adding a run's
  entry, happen under a per-field lock (:func:`field_lock`), so two runs started at the same moment both keep
  their entries, and a run of another action into a field being written is refused (:func:`check_not_busy`).
- **A dead run is seen as dead.** A running entry carries its process (``host``, ``pid``) and a ``heartbeat``
  (seconds since the epoch) that a thread of the run refreshes every :data:`HEARTBEAT_S` seconds
  (:class:`Heartbeat`). An entry whose process is gone (same host and pid namespace, :func:`host_id`), or whose
  heartbeat is older than :func:`stale_after` seconds, is dead: whoever reads the record next closes it as "interrupted"
  (:func:`live_runs`), so training, export, review, rerun and new runs treat the field as finished.
"""

import contextlib
import contextvars
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable, Dict, List, Optional, Tuple

import fiftyone as fo

from .. import names
from ..errors import SamtextError

logger = logging.getLogger(__name__)

HEARTBEAT_S = 10.0  # how often a running run refreshes its heartbeat
STALE_AFTER_S = 120.0  # a running entry whose heartbeat is older than this is dead (env SAMTEXT_STALE_AFTER_S)
LOCK_TTL_S = 60.0  # a field lock older than this was left by a dead process and is taken over
LOCK_WAIT_S = 120.0  # how long a run waits for a field's lock before giving up
INTERRUPTED = "interrupted"


def stale_after() -> float:
    """Seconds without a heartbeat after which a running entry is dead (``SAMTEXT_STALE_AFTER_S``, default
    :data:`STALE_AFTER_S`)."""
    try:
        return max(float(os.environ.get("SAMTEXT_STALE_AFTER_S", STALE_AFTER_S)), 1.0)
    except ValueError:
        return STALE_AFTER_S


def run_key_for(out_field: str) -> str:
    return names.RUN_KEY_PREFIX + out_field


def jsonable(value):
    """``value`` as it reads back from a run record (tuples become lists, numpy numbers plain numbers)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _db():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()


def _run_ids(dataset: fo.Dataset) -> Dict[str, object]:
    """``{run key: id of its run document}`` as the database has them now (other processes' runs included; this
    process's copy of the dataset may be older)."""
    doc = _db().datasets.find_one({"_id": dataset._doc.id}, {"runs": 1}) or {}
    return dict(doc.get("runs") or {})


def read_run(dataset: fo.Dataset, key: str) -> Optional[dict]:
    """The config dict of the samtext run ``key``, or None; read from the database, so that what other processes
    wrote is seen."""
    run_id = _run_ids(dataset).get(key)
    raw = _db().runs.find_one({"_id": run_id}, {"config": 1}) if run_id is not None else None
    return dict(raw["config"]) if raw and raw.get("config") else None


def samtext_records(dataset: fo.Dataset) -> Dict[str, dict]:
    """``{run key: config}`` of every samtext field record of ``dataset`` (training records left out)."""
    ids = {k: v for k, v in _run_ids(dataset).items()
           if k.startswith(names.RUN_KEY_PREFIX) and not k.startswith(names.TRAIN_RUN_KEY_PREFIX)}
    by_id = {d["_id"]: d.get("config") or {} for d in _db().runs.find({"_id": {"$in": list(ids.values())}},
                                                                      {"config": 1})}
    return {k: by_id[v] for k, v in ids.items() if by_id.get(v, {}).get("out_field")}


def register_run(dataset: fo.Dataset, key: str, config: dict) -> None:
    """Stores (or replaces) the record of what produced a field, as a FiftyOne run."""
    dataset.register_run(key, dataset.init_run(**jsonable(config)), overwrite=True, cleanup=False)


def update_run(dataset: fo.Dataset, key: str, _only_if: Optional[dict] = None, **fields) -> bool:
    """Sets ``config.<name>`` of the run record ``key`` in one atomic database update, so that runs writing
    their own entries at the same time (shards on several workers) do not overwrite each other. Names may be
    dotted paths (``runs.<id>``). ``_only_if``: ``{config path: value}`` the record must hold for the update to
    happen. Returns whether it happened."""
    run_id = _run_ids(dataset).get(key)
    if run_id is None:
        logger.warning("samtext: run record %r is gone; %s not recorded", key, sorted(fields))
        return False
    query = {"_id": run_id}
    query.update({"config." + k: v for k, v in (_only_if or {}).items()})
    updates = {"config." + name: jsonable(value) for name, value in fields.items()}
    done = _db().runs.update_one(query, {"$set": updates}).modified_count > 0
    try:  # this process's copy, for FiftyOne's own get_run_info(); another process may have replaced the record
        cached = dataset._doc.runs.get(key)
        if cached is not None and cached.id == run_id:
            cached.reload()
        elif cached is not None:
            dataset.reload()
    except Exception:
        logger.debug("samtext: could not refresh the cached run record %r", key, exc_info=True)
    return done


# ------------------------------------------------------------------------------------------- liveness


def _process_gone(pid: int) -> bool:
    """Whether process ``pid`` of this host has ended (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def entry_is_dead(entry: dict, now: Optional[float] = None) -> bool:
    """Whether a "running" entry's run has died: its process, on this host, is gone; or its heartbeat (its start,
    for entries without one) is older than :func:`stale_after` seconds."""
    if (entry or {}).get("status") != "running":
        return False
    now = time.time() if now is None else now
    if entry.get("host") == host_id() and entry.get("pid") and entry["pid"] != os.getpid():
        if _process_gone(int(entry["pid"])):
            return True
    beat = entry.get("heartbeat")
    if beat is None:
        from datetime import datetime

        try:
            beat = datetime.fromisoformat(entry.get("started")).timestamp()
        except (TypeError, ValueError):
            return True
    return now - float(beat) > stale_after()


def close_dead_runs(dataset: fo.Dataset, key: str, record: Optional[dict] = None) -> List[str]:
    """Closes, as "interrupted", the running entries of record ``key`` whose runs died (:func:`entry_is_dead`).
    Each close is conditional on the entry being unchanged, so a run that is alive after all is never closed by
    a race. Returns the ids closed."""
    record = read_run(dataset, key) if record is None else record
    closed = []
    for run_id, entry in sorted((record or {}).get("runs", {}).items()):
        if not entry_is_dead(entry):
            continue
        path = "runs." + run_id
        guard = {path + ".status": "running", path + ".heartbeat": entry.get("heartbeat")}
        note = ("its process stopped without closing the run (killed, or its machine lost); labels it wrote are "
                "kept, and a new run with the same settings labels the rest")
        if update_run(dataset, key, _only_if=guard, **{path + ".status": INTERRUPTED, path + ".finished": now(),
                                                       path + ".note": note}):
            closed.append(run_id)
            logger.warning("samtext: run %s of %r had died; closed as interrupted", run_id, record.get("out_field"))
    return closed


def live_runs(dataset: fo.Dataset, key: str) -> Tuple[Optional[dict], List[str]]:
    """``(record, ids of its runs that are alive and running)``, after closing the dead ones."""
    record = read_run(dataset, key)
    if record and close_dead_runs(dataset, key, record):
        record = read_run(dataset, key)
    running = sorted(k for k, r in ((record or {}).get("runs") or {}).items() if (r or {}).get("status") == "running")
    return record, running


def running_runs(dataset: fo.Dataset, field: str) -> Tuple[Optional[str], List[str]]:
    """``(action, run ids)`` of the samtext runs still writing ``field`` and alive: a field read now may still
    change. Runs that died are closed as "interrupted" on the way (:func:`live_runs`)."""
    record, running = live_runs(dataset, run_key_for(field))
    return (record or {}).get("action"), running


def running_note(dataset: fo.Dataset, field: str) -> Optional[str]:
    """A warning (logged, and returned for the caller's report) when a samtext run is still writing ``field``;
    None otherwise."""
    action, running = running_runs(dataset, field)
    if not running:
        return None
    note = ("field %r is still being written by samtext (%s run %s, status 'running'): what is read now may "
            "change; read it again when the run has finished" % (field, action, ", ".join(running)))
    logger.warning("samtext: %s", note)
    return note


def check_not_busy(dataset: fo.Dataset, field: str, action: str, settings: dict) -> None:
    """Refuses a run into ``field`` while a live run of another action (or other settings) writes it: their
    labels and their record would mix.

    Raises:
        ValueError: naming the running run.
    """
    record, running = live_runs(dataset, run_key_for(field))
    if not running or (record.get("action") == action and record.get("settings") == jsonable(settings)):
        return
    raise SamtextError(
        "field %r is being written right now by another samtext run (%s, run %s, with other settings): wait until "
        "it ends, or choose another output field" % (field, record.get("action"), ", ".join(running)))


_OPERATION = contextvars.ContextVar("samtext_delegated_operation", default=None)


def current_operation() -> Optional[str]:
    """The id of the delegated operation this code runs in (see :func:`in_operation`), else None."""
    return _OPERATION.get()


@contextlib.contextmanager
def in_operation(operation_id: Optional[str]):
    """Marks the block as running in delegated operation ``operation_id``: run entries created there name it."""
    token = _OPERATION.set(str(operation_id) if operation_id else None)
    try:
        yield
    finally:
        _OPERATION.reset(token)


def host_id() -> str:
    """Where this process's pid means something: the host name and the inode of its pid namespace (containers
    that share a host name have their own), so that a pid is only looked up where it was issued."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return "%s/%s" % (socket.gethostname(), namespace)


def new_entry(**fields) -> dict:
    """A running entry for this process (see :func:`entry_is_dead`)."""
    return dict(fields, status="running", started=now(), heartbeat=time.time(), host=host_id(), pid=os.getpid())


def now() -> str:
    """The time now, UTC, ISO 8601 to the second: what run records keep."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Beat:
    """Calls ``beat()`` every ``interval`` seconds on a daemon thread while a ``with`` block runs; nothing when
    ``beat`` is None. Bookkeeping: a failed beat is logged (naming ``what``), never raised."""

    def __init__(self, beat: Optional[Callable[[], object]], what: str, interval: float = HEARTBEAT_S):
        self._beat, self._what, self._interval = beat, what, interval
        self._stop = threading.Event()
        self._thread = None

    def _run(self):
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception:
                logger.exception("samtext: heartbeat of %s failed", self._what)

    def __enter__(self):
        if self._beat is not None:
            self._thread = threading.Thread(target=self._run, name="samtext-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class Heartbeat(Beat):
    """Refreshes ``runs.<run_id>.heartbeat`` of record ``key`` every :data:`HEARTBEAT_S` seconds while the run
    lasts (``with Heartbeat(...):``), as long as that entry says "running"."""

    def __init__(self, dataset: fo.Dataset, key: str, run_id: str, interval: float = HEARTBEAT_S):
        collection, record_id = _db().runs, _run_ids(dataset).get(key)
        path, status = "config.runs.%s.heartbeat" % run_id, "config.runs.%s.status" % run_id

        def beat():
            collection.update_one({"_id": record_id, status: "running"}, {"$set": {path: time.time()}})

        super().__init__(beat if record_id is not None else None, path, interval)


# ------------------------------------------------------------------------------------------- field lock


def _locks():
    return _db()["samtext_locks"]


@contextlib.contextmanager
def field_lock(dataset: fo.Dataset, field: str, wait: float = LOCK_WAIT_S):
    """Holds the lock of ``field`` of ``dataset`` (a document of the ``samtext_locks`` collection, shared by every
    process of the database) while the block runs: the short critical section where a run checks who writes the
    field, creates its record and adds its entry. A lock left by a dead process expires after
    :data:`LOCK_TTL_S` seconds.

    Raises:
        TimeoutError: the lock was not free within ``wait`` seconds.
    """
    import pymongo.errors

    locks, key, token = _locks(), "%s:%s" % (dataset._doc.id, field), uuid.uuid4().hex
    deadline = time.time() + wait
    while True:
        now = time.time()
        try:
            locks.insert_one({"_id": key, "owner": token, "expires": now + LOCK_TTL_S})
            break
        except pymongo.errors.DuplicateKeyError:
            locks.delete_one({"_id": key, "expires": {"$lt": now}})
            if now > deadline:
                raise TimeoutError("field %r of dataset %r stayed locked by another samtext run for %d s; try again"
                                   % (field, dataset.name, wait)) from None
            time.sleep(0.05)
    try:
        yield
    finally:
        locks.delete_one({"_id": key, "owner": token})
