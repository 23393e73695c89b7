"""Labelling on Ray (samtext/run/ray_labeller.py), on a local Ray with 2 CPU actors and tiny models, at 500 samples:
the same labels as the single-process run, every sample written exactly once, an actor killed mid-run, a run
stopped and resumed. Marked slow (a local Ray starts in about 10 s; each run is a minute)."""

import os
import signal

import numpy as np
import pytest

from conftest import make_pets_dataset, pets_stems
from samtext.run.ray_labeller import local_actor_pids

pytestmark = pytest.mark.slow

N = 500
RUN = dict(sam_model="tiny", device="cpu", class_name="cat", reference_field="ground_truth", min_similarity=None)


@pytest.fixture(scope="module")
def local_ray():
    import ray  # a dev install has it (requirements-dev.txt): a missing ray fails, never skips
    from samtext.run.ray_labeller import connect

    connect("local", num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def photos(db):
    stems = pets_stems()
    return make_pets_dataset([stems[i % len(stems)] for i in range(N)])


def _iter(ds, reference, field, **kwargs):
    import samtext

    args = dict(RUN)
    name = args.pop("class_name")
    return samtext.iter_annotate_by_reference(ds, name, reference=reference, out_field=field, **dict(args, **kwargs))


def _run(gen, stop_at=None, on_progress=None):
    """Drives a run's generator; ``stop_at``: close it after that many samples (a stopped job)."""
    try:
        while True:
            done, total = next(gen)
            if on_progress is not None:
                on_progress(done)
            if stop_at is not None and done >= stop_at:
                gen.close()
                return None
    except StopIteration as end:
        return end.value


def _masks(ds, field):
    return dict(zip(ds.values("id"), [None if label is None else label.get_mask() for label in ds.values(field)]))


def _same(a, b):
    return a.keys() == b.keys() and all((a[k] is None) == (b[k] is None) and (a[k] is None or np.array_equal(a[k], b[k]))
                                        for k in a)


def test_on_ray_the_labels_are_the_single_process_ones_exactly_once_through_a_kill_and_a_stop(local_ray, photos):
    from samtext.run.records import samtext_records

    ds = photos
    reference = ds.first().id
    single = _run(_iter(ds, reference, "single"))
    assert (single.labelled, single.failed) == (N - 1, 0)
    expected = _masks(ds, "single")

    # 2 actors; one of them killed (SIGKILL) after 100 samples: its samples go to the other, nothing is lost
    killed = []

    def kill_one(done):
        if done >= 100 and not killed:
            pids = local_actor_pids()
            assert len(pids) == 2, pids
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    summary = _run(_iter(ds, reference, "on_ray", ray_address="local", ray_actors=2), on_progress=kill_one)
    assert killed and (summary.labelled, summary.failed) == (N - 1, 0)
    assert _same(_masks(ds, "on_ray"), expected)
    assert ds.count("on_ray_instances.detections") == ds.count("single_instances.detections")

    # a run stopped after 150 samples, then resumed: the rest is labelled, the first 150 are kept, not redone
    assert _run(_iter(ds, reference, "resumed", ray_address="local", ray_actors=2), stop_at=150) is None
    first = {k: v for k, v in _masks(ds, "resumed").items() if v is not None}
    assert 150 <= len(first) < N - 1
    label_ids = dict(zip(ds.values("id"), ds.values("resumed._id")))
    summary = _run(_iter(ds, reference, "resumed", ray_address="local", ray_actors=2))
    assert summary.failed == 0 and summary.skipped_existing == len(first) and summary.labelled == N - 1 - len(first)
    assert _same(_masks(ds, "resumed"), expected)
    after = dict(zip(ds.values("id"), ds.values("resumed._id")))
    assert all(after[k] == label_ids[k] for k in first)  # written once
    record = [c for c in samtext_records(ds).values() if c.get("out_field") == "resumed"][0]
    statuses = sorted(entry["status"] for entry in record["runs"].values())
    assert statuses == ["canceled", "completed"], statuses
    assert record["learnt"]["models"]["sam"] == "tiny"  # asked of an actor


def test_a_bad_image_is_the_samples_error_on_ray_too(local_ray, db, tmp_path):
    import fiftyone as fo

    import samtext

    ds = make_pets_dataset(pets_stems()[:6])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    ds.add_sample(fo.Sample(filepath=str(broken)))
    summary = samtext.annotate_by_reference(ds, "cat", reference=ds.first().id, reference_field="ground_truth",
                                            out_field="ray_bad", ray_address="local", ray_actors=2,
                                            **{k: v for k, v in RUN.items() if k not in ("class_name", "reference_field")})
    assert (summary.labelled, summary.failed) == (5, 1)
    assert "broken.jpg" in summary.errors[0].filepath and "Traceback" not in summary.errors[0].message


def test_ray_options_are_checked_before_anything_is_created(db):
    """Bad options, and an address where no cluster answers, are refused at once (Ray itself would retry for many
    minutes), with the reason, before anything is created."""
    import time

    import samtext

    start = time.time()

    ds = make_pets_dataset(pets_stems()[:2])
    for bad, match in ((dict(ray_address=""), "ray_address must be"),
                       (dict(ray_address="local", ray_actors=0), "ray_actors"),
                       (dict(ray_address="my-cluster"), "not a Ray address"),
                       (dict(ray_address="http://127.0.0.1:8265"), "not a Ray address .http:// is not Ray's"),
                       (dict(ray_address="127.0.0.1:1"), r"cannot reach the Ray cluster at '127.0.0.1:1'"),
                       (dict(ray_address="ray://127.0.0.1:1"), "cannot reach the Ray cluster")):
        with pytest.raises(ValueError, match=match):
            samtext.annotate_by_reference(ds, "cat", reference=ds.first().id, reference_field="ground_truth",
                                          out_field="nope", sam_model="tiny", **bad)
    assert not ds.has_sample_field("nope") and time.time() - start < 60


def test_the_app_operator_runs_on_ray_and_reports_progress(local_ray, db):
    """The form's "Ray cluster" field, as the App sends it: the operator labels through Ray, with its progress."""
    import fiftyone.operators as foo

    from conftest import PLUGIN_NAME

    ds = make_pets_dataset(pets_stems()[:12])
    ref = ds.first()
    result = foo.execute_operator(PLUGIN_NAME + "/annotate_by_reference_mask", {"dataset": ds, "params": dict(
        class_name="cat", reference_sample=ref.id, reference_field="ground_truth", sam_model="tiny", device="cpu",
        gate="off", out_field="app_ray", ray_address="local", ray_actors=2)})
    assert result.error is None and ds.count("app_ray") == len(ds) - 1
    requests = result.executor.to_json()["requests"]
    progress = [r["params"]["progress"] for r in requests if r["operator_uri"] == "set_progress"]
    assert progress[0] == 0 and progress[-1] == 1 and len(progress) > 3


def test_a_cluster_without_room_or_models_that_cannot_load_are_refused_before_anything_is_created(local_ray, db,
                                                                                                  tmp_path):
    import samtext

    ds = make_pets_dataset(pets_stems()[:3])
    args = dict(reference=ds.first().id, reference_field="ground_truth", device="cpu", ray_address="local")
    with pytest.raises(ValueError, match="cannot hold 1 actor"):
        samtext.annotate_by_reference(ds, "cat", out_field="no_room", sam_model="tiny", ray_gpus_per_actor=1, **args)
    junk = tmp_path / "sam_vit_b.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not load the models"):
        samtext.annotate_by_reference(ds, "cat", out_field="no_load", sam_model="vit_b", sam_checkpoint=str(junk),
                                      ray_actors=1, **args)
    assert not ds.has_sample_field("no_room") and not ds.has_sample_field("no_load")


def test_text_proposals_and_few_shot_on_ray_equal_the_local_runs(local_ray, db):
    """The other actions on Ray: text and proposals read their images in the actors; few-shot's input (the stored
    proposals) is read here and sent. Each gives the local run's labels."""
    import samtext

    ds = make_pets_dataset(pets_stems()[:8])
    tiny = dict(sam_model="tiny", device="cpu")
    props = dict(clip_model="tiny", points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_area=0)
    for field, on_ray in (("local", {}), ("ray", dict(ray_address="local", ray_actors=2))):
        samtext.annotate_by_text(ds, "cat", clip_model="tiny", threshold=0.0, max_proposals=8, out_field="text_" + field,
                                 **tiny, **on_ray)
        samtext.compute_mask_proposals(ds, out_field="props_" + field, **tiny, **props, **on_ray)
        picked = ds.values("props_%s.detections.id" % field, unwind=True)[:3]
        samtext.annotate_by_examples(ds, {"cat": picked}, proposals_field="props_" + field, threshold=0.5,
                                     out_field="shots_" + field, **on_ray)
    for kind in ("text", "shots"):
        assert _same(_masks(ds, kind + "_local"), _masks(ds, kind + "_ray")), kind
    assert ds.count("props_local.detections") == ds.count("props_ray.detections") > 0


def test_a_delegated_operation_runs_on_the_cluster_s_address_and_reports_progress(local_ray, db, tmp_path):
    """The App's way onto a cluster: the form's "Ray cluster" field holds the cluster's address and the run is
    delegated; a `fiftyone delegated launch` worker (another process, another driver) joins the cluster at
    that address, labels through its actors, and reports progress on the operation as it goes."""
    import time

    import fiftyone.operators as foo
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    from _workers import many_samples_dataset, wait_for, workers
    from conftest import PLUGIN_NAME

    uri = PLUGIN_NAME + "/annotate_by_reference_mask"
    ds = many_samples_dataset("samtext-test-ray-delegated", 120, pets_stems(animal="cat", n=10))
    address = local_ray.get_runtime_context().gcs_address
    service = DelegatedOperationService()
    try:
        params = dict(class_name="cat", reference_sample=ds.first().id, reference_field="ground_truth",
                      sam_model="tiny", device="cpu", gate="off", out_field="on_cluster", ray_address=address,
                      ray_actors=2)
        assert foo.execute_operator(uri, {"dataset": ds, "params": params, "request_delegation": True}).error is None
        queued = [str(op.id) for op in service.get_queued_operations(operator=uri, dataset_name=ds.name)]
        assert len(queued) == 1 and not ds.has_sample_field("on_cluster")  # nothing ran in the App's process
        seen = set()
        with workers(1, str(tmp_path)) as procs:
            deadline = time.time() + 600
            while time.time() < deadline:
                doc = service.get(ObjectId(queued[0]))
                if doc.status is not None and doc.status.progress is not None:
                    seen.add(round(float(doc.status.progress), 3))
                if doc.run_state in (ExecutionRunState.COMPLETED, ExecutionRunState.FAILED):
                    break
                time.sleep(0.1)
            done = wait_for(queued, timeout=60, procs=procs)
        logs = "".join(p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("worker_*.log"))
        assert done[0].run_state == ExecutionRunState.COMPLETED, (done[0].result, logs)
        ds.reload()
        assert ds.count("on_cluster") == len(ds) - 1  # every target, once
        assert any(0 < p < 1 for p in seen), seen  # progress reached the operation while it ran
        from samtext.run.records import samtext_records

        record = [c for c in samtext_records(ds).values() if c.get("out_field") == "on_cluster"][0]
        (entry,) = record["runs"].values()
        assert entry["status"] == "completed" and entry["summary"]["labelled"] == len(ds) - 1
        assert record["learnt"]["ray"] == dict(address=address, actors=2, gpus_per_actor=0.0)
    finally:
        ds.delete()
