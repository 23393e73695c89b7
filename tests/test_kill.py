"""Runs and workers killed with -9 at random points: every sample ends labelled exactly once (a label written
before a kill is kept, not redone), the run records close (the killed run "interrupted", the others
"completed"), and a delegated operation whose worker died is failed with a message, queued again, and finished
by another worker. Real processes, real database, tiny models."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import PLUGIN_NAME, ROOT, pets_stems

URI = PLUGIN_NAME + "/annotate_by_reference_mask"
RUN = """
import sys, samtext, fiftyone as fo
ds = fo.load_dataset(sys.argv[1])
samtext.annotate_by_reference(ds, "cat", reference=ds.first(), reference_field="ground_truth", out_field="cats",
                              sam_model="tiny", device="cpu", min_similarity=None, batch_size=2)
"""


def _labels(ds):
    """``{sample id: (label id of cats, ids of the detections in cats_instances)}`` of the labelled samples."""
    ds.reload()
    if not ds.has_field("cats_instances"):
        return {}
    ids, main, inst = ds.values(["id", "cats.id", "cats_instances.detections.id"])
    return {s: (m, tuple(i) if i is not None else None) for s, m, i in zip(ids, main, inst) if m is not None}


def _wait_for_labels(ds, at_least, proc, timeout=120):
    deadline = time.time() + timeout
    while len(_labels(ds)) < at_least:
        if proc.poll() is not None or time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_runs_killed_at_random_points_resume_to_exactly_once(db, tmp_path):
    import fiftyone as fo

    from _workers import many_samples_dataset
    from samtext.run import records

    n = 60
    ds = many_samples_dataset("samtext-test-kill", n, pets_stems(animal="cat", n=10) + pets_stems(animal="dog", n=5))
    rng = random.Random(19)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    kept = {}
    try:
        for trial in range(3):
            proc = subprocess.Popen([sys.executable, "-c", RUN, ds.name], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            started = len(_labels(ds))
            if not _wait_for_labels(ds, started + rng.randint(1, 6), proc):
                pytest.fail("the run ended before it was killed: %s" % proc.stderr.read().decode()[-2000:])
            time.sleep(rng.uniform(0.0, 0.2))  # somewhere inside the next batch
            assert proc.poll() is None, "the run finished before it was killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            now = _labels(ds)
            assert all(now[s] == labels for s, labels in kept.items())  # nothing written earlier was redone
            kept = now
            action, running = records.running_runs(ds, "cats")  # the dead run is seen dead at once (same host)
            assert running == []
            entries = records.read_run(ds, records.run_key_for("cats"))["runs"]
            assert sum(e["status"] == "interrupted" for e in entries.values()) == trial + 1
        import samtext

        summary = samtext.annotate_by_reference(ds, "cat", reference=ds.first(), reference_field="ground_truth",
                                                out_field="cats", sam_model="tiny", device="cpu", min_similarity=None,
                                                batch_size=2)
        final = _labels(ds)
        assert len(final) == n - 1 and summary.labelled == n - 1 - len(kept) and summary.skipped_existing == len(kept)
        assert all(final[s] == labels for s, labels in kept.items())
        assert all(i is not None for _, i in final.values())  # every label has its instances beside it
        statuses = sorted(e["status"] for e in records.read_run(ds, records.run_key_for("cats"))["runs"].values())
        assert statuses == ["completed", "interrupted", "interrupted", "interrupted"]
        # the consumers take the field: train's check passes, an export of one sample per image file warns of
        # nothing and writes every label of it
        from samtext.actions.train import check_not_running

        check_not_running(ds, "cats")
        first_of_each_image = {}
        for sid, path in zip(ds.values("id"), ds.values("filepath")):
            first_of_each_image.setdefault(path, sid)
        view = ds.select(list(first_of_each_image.values()))  # an export writes one mask per image file
        exported = samtext.export_labels(view, "cats", os.path.join(str(tmp_path), "export"))
        assert not exported["warnings"] and exported["failed"] == 0, exported
        assert exported["exported"] == len(view.exists("cats")), exported
    finally:
        fo.delete_dataset(ds.name)


def test_a_killed_worker_s_operation_is_requeued_and_finished_by_another(db, tmp_path, monkeypatch):
    import fiftyone as fo
    import fiftyone.operators as foo
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    import samtext
    from _workers import many_samples_dataset, wait_for, workers
    from samtext.run import records

    n = 60
    ds = many_samples_dataset("samtext-test-kill-worker", n, pets_stems(animal="cat", n=10))
    service = DelegatedOperationService()
    try:
        params = dict(class_name="cat", reference_sample=ds.first().id, reference_field="ground_truth",
                      sam_model="tiny", device="cpu", out_field="cats", batch_size=2, save_prompts=False,
                      num_shards=2)
        assert foo.execute_operator(URI, {"dataset": ds, "params": params}).error is None
        queued = [str(op.id) for op in service.get_queued_operations(operator=URI, dataset_name=ds.name)]
        assert len(queued) == 2
        (tmp_path / "first").mkdir()
        with workers(1, str(tmp_path / "first")) as procs:
            deadline = time.time() + 180
            while len(_labels(ds)) < 5:
                assert time.time() < deadline and procs[0].poll() is None, "the worker never labelled"
                time.sleep(0.1)
            os.killpg(procs[0].pid, signal.SIGKILL)  # the worker and its children, mid-run
            procs[0].wait()
        running = [op for op in queued if service.get(ObjectId(op)).run_state == ExecutionRunState.RUNNING]
        assert len(running) == 1  # what FiftyOne alone would show forever
        kept = _labels(ds)
        monkeypatch.setenv("SAMTEXT_STALE_AFTER_S", "2")
        time.sleep(3)
        recovered = samtext.recover_stale_operations(ds.name)
        assert [r["operation"] for r in recovered] == running and recovered[0]["requeued_as"]
        failed = service.get(ObjectId(running[0]))
        assert failed.run_state == ExecutionRunState.FAILED and "stopped answering" in failed.result.error
        assert samtext.recover_stale_operations(ds.name) == []  # once
        monkeypatch.delenv("SAMTEXT_STALE_AFTER_S")
        rest = [recovered[0]["requeued_as"]] + [op for op in queued if op not in running]
        (tmp_path / "second").mkdir()
        with workers(1, str(tmp_path / "second")) as procs:
            docs = wait_for(rest, procs=procs, timeout=300)
        assert all(d.run_state == ExecutionRunState.COMPLETED for d in docs), [d.result for d in docs]
        final = _labels(ds)
        assert len(final) == n - 1 and all(final[s] == v for s, v in kept.items())
        assert sum(d.result.result["labelled"] for d in docs) == n - 1 - len(kept)  # nothing labelled twice
        statuses = sorted(e["status"] for e in records.read_run(ds, records.run_key_for("cats"))["runs"].values())
        assert statuses == ["completed", "completed", "interrupted"]
    finally:
        fo.delete_dataset(ds.name)
        for op in service.list_operations(dataset_name=ds.name):
            service.delete_operation(op.id)
