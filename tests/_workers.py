"""Helpers for runs split into shards: a dataset of many samples, `fiftyone delegated launch` workers in
subprocesses, and waiting for queued operations (tests/test_shards.py, bench/bench_shards.py)."""

import contextlib
import os
import subprocess
import sys
import time

from conftest import PETS


def many_samples_dataset(name, n, stems, gt_field="ground_truth"):
    """A persistent dataset of ``n`` samples cycling over the pets ``stems`` (the first one carries its mask
    in ``gt_field``, as a reference). Persistent, so that worker processes see it."""
    import numpy as np
    from PIL import Image

    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name, persistent=True)
    samples = [fo.Sample(filepath=os.path.join(PETS, "images", stems[i % len(stems)] + ".jpg"), index=i)
               for i in range(n)]
    samples[0][gt_field] = fo.Segmentation(
        mask=np.asarray(Image.open(os.path.join(PETS, "masks", stems[0] + ".png"))))
    ds.add_samples(samples)
    return ds


@contextlib.contextmanager
def workers(count, log_dir, threads=1):
    """``count`` `fiftyone delegated launch` processes sharing this process's database and plugins."""
    exe = os.path.join(os.path.dirname(sys.executable), "fiftyone")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS="true")
    procs, logs = [], []
    try:
        for i in range(count):
            log = open(os.path.join(log_dir, "worker_%d.log" % i), "wb")
            logs.append(log)
            procs.append(subprocess.Popen([exe, "delegated", "launch"], stdout=log, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True))
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()


def wait_for(op_ids, timeout=900, procs=()):
    """Waits until the delegated operations ``op_ids`` are all COMPLETED or FAILED; returns their docs."""
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    service = DelegatedOperationService()
    deadline = time.time() + timeout
    while True:
        docs = [service.get(ObjectId(i)) for i in op_ids]
        if all(d.run_state in (ExecutionRunState.COMPLETED, ExecutionRunState.FAILED) for d in docs):
            return docs
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError("a worker exited with %s" % p.returncode)
        if time.time() > deadline:
            raise TimeoutError("delegated runs not done after %ds: %s" % (timeout, [d.run_state for d in docs]))
        time.sleep(1)


def span_seconds(docs):
    """From the first operation's start to the last one's end."""
    return (max(d.completed_at for d in docs) - min(d.started_at for d in docs)).total_seconds()
