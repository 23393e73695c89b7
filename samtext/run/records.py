"""Run records: what produced a field (action, settings, classes, one entry per run or shard), kept as a FiftyOne
run on the dataset under the key ``samtext_<field>``. Updates are single atomic database writes, so shards that
finish together never overwrite each other's entries."""

import json
import logging
from typing import List, Optional, Tuple

import fiftyone as fo

logger = logging.getLogger(__name__)


def run_key_for(out_field: str) -> str:
    return "samtext_" + out_field


def jsonable(value):
    """``value`` as it reads back from a run record (tuples become lists, numpy numbers plain numbers)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def read_run(dataset: fo.Dataset, key: str) -> Optional[dict]:
    """The config dict of the samtext run ``key``, or None."""
    if key not in dataset.list_runs():
        return None
    return dataset.get_run_info(key).config.serialize()


def register_run(dataset: fo.Dataset, key: str, config: dict) -> None:
    """Stores (or replaces) the record of what produced a field, as a FiftyOne run."""
    dataset.register_run(key, dataset.init_run(**jsonable(config)), overwrite=True, cleanup=False)


def running_runs(dataset: fo.Dataset, field: str) -> Tuple[Optional[str], List[str]]:
    """``(action, run ids)`` of the samtext runs still writing ``field`` (their entries under ``runs`` say
    "running"): a field read now may still change. A run that died without saying so stays "running"."""
    record = read_run(dataset, run_key_for(field)) or {}
    running = sorted(k for k, r in (record.get("runs") or {}).items() if (r or {}).get("status") == "running")
    return record.get("action"), running


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


def update_run(dataset: fo.Dataset, key: str, **fields) -> None:
    """Sets ``config.<name>`` of the run record ``key`` in one atomic database update, so that runs writing
    their own entries at the same time (shards on several workers) do not overwrite each other. Names may be
    dotted paths (``runs.<id>``)."""
    doc = dataset._doc.runs[key]  # FiftyOne keeps each run record as a RunDocument
    updates = {"config." + name: jsonable(value) for name, value in fields.items()}
    doc._get_collection().update_one({"_id": doc.id}, {"$set": updates})
    doc.reload()
