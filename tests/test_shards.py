"""Runs split into shards: the operator queues N delegated runs, which `fiftyone delegated launch` workers
run side by side against one database; every sample is labelled exactly once."""

import collections

import pytest

from conftest import PLUGIN_NAME, make_pets_dataset, pets_stems

URI = PLUGIN_NAME + "/annotate_by_reference_mask"


def test_shards_are_disjoint_and_cover_every_id():
    from bson import ObjectId

    from samtext.run.driver import in_shard

    ids = [str(ObjectId()) for _ in range(3000)]
    for count in (1, 2, 3, 7):
        owners = [[i for i in range(count) if in_shard(sid, (i, count))] for sid in ids]
        assert all(len(o) == 1 for o in owners)  # each id in exactly one shard
        sizes = collections.Counter(o[0] for o in owners)
        assert min(sizes.values()) > 0.8 * len(ids) / count  # and the shards are even


def _params(ds, **kw):
    p = dict(class_name="cat", reference_sample=ds.first().id, reference_field="ground_truth", sam_model="tiny",
             device="cpu", out_field="sharded", save_prompts=False)
    p.update(kw)
    return {k: v for k, v in p.items() if v is not None}


def _queued(ds):
    from fiftyone.operators.delegated import DelegatedOperationService

    return DelegatedOperationService().get_queued_operations(operator=URI, dataset_name=ds.name)


def test_the_operator_queues_one_delegated_run_per_shard(db):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    ds = make_pets_dataset(pets_stems(animal="cat", n=6) + pets_stems(animal="dog", n=4))
    result = foo.execute_operator(URI, {"dataset": ds, "params": _params(ds, num_shards=3)})
    assert result.error is None
    queued = _queued(ds)
    assert len(queued) == 3
    assert sorted(tuple(q.context.request_params["params"]["shard"]) for q in queued) == [(0, 3), (1, 3), (2, 3)]
    # the outputs exist before any shard runs (so that shards starting together do not race to make them),
    # nothing is labelled yet
    assert ds.has_field("sharded") and ds.mask_targets["sharded"] == {1: "cat"}
    assert "samtext_sharded" in ds.list_runs() and ds.count("sharded") == 0

    done = DelegatedOperationService().execute_queued_operations(operator=URI, dataset_name=ds.name)
    assert len(done) == 3 and all(d.error is None for d in done), [d.error for d in done]
    ds.reload()
    assert ds.count("sharded") == len(ds) - 1  # all but the reference
    runs = ds.get_run_info("samtext_sharded").config.runs
    assert sorted(tuple(r["shard"]) for r in runs.values()) == [(0, 3), (1, 3), (2, 3)]
    assert sum(r["summary"]["labelled"] for r in runs.values()) == len(ds) - 1
    assert all(r["status"] == "completed" for r in runs.values())


def test_a_bad_sharded_request_queues_nothing(db):
    import fiftyone.operators as foo

    ds = make_pets_dataset(pets_stems(animal="cat", n=3))
    with pytest.raises(Exception, match="unknown clip_model 'ViT-Q-99'"):
        foo.execute_operator(URI, {"dataset": ds, "params": _params(ds, num_shards=2, clip_check=True,
                                                                       clip_model="ViT-Q-99")})
    assert _queued(ds) == [] and not ds.has_field("sharded")


def test_two_workers_label_a_thousand_samples_exactly_once(db, tmp_path):
    """Two `fiftyone delegated launch` processes share 4 queued shards of 1000 samples."""
    import fiftyone as fo
    import fiftyone.operators as foo

    from _workers import many_samples_dataset, span_seconds, wait_for, workers

    n = 1000
    ds = many_samples_dataset("samtext-test-shards", n, pets_stems(animal="cat", n=20) + pets_stems(animal="dog", n=20))
    try:
        result = foo.execute_operator(URI, {"dataset": ds, "params": _params(ds, num_shards=4, batch_size=32)})
        assert result.error is None
        op_ids = [str(q.id) for q in _queued(ds)]
        assert len(op_ids) == 4
        with workers(2, str(tmp_path)) as procs:
            docs = wait_for(op_ids, procs=procs)
        logs = [open(tmp_path / ("worker_%d.log" % i), "rb").read().decode("utf-8", "replace") for i in range(2)]
        assert all(d.result is not None and d.result.error is None for d in docs), ([d.run_state for d in docs],
                                                                                   logs)
        ds.reload()
        labelled = ds.exists("sharded")
        assert labelled.count() == n - 1 and ds.first()["sharded"] is None
        summaries = [d.result.result for d in docs]
        assert sum(s["labelled"] for s in summaries) == n - 1  # each sample once: no shard labelled another's
        assert sum(s["targets"] for s in summaries) == n - 1
        assert all(s["failed"] == 0 and s["status"] == "completed" for s in summaries)
        # both workers took part
        assert all("Running operation" in log for log in logs), logs
        print("\n2 workers, %d samples: %.1f samples/s" % (n - 1, (n - 1) / span_seconds(docs)))
    finally:
        fo.delete_dataset(ds.name)


def test_nothing_to_label_queues_nothing(db):
    import fiftyone.operators as foo

    ds = make_pets_dataset(pets_stems(animal="cat", n=2))
    foo.get_operator(URI)(ds, "cat", ds.first().id, **_params(ds, class_name=None, reference_sample=None))  # all labelled
    foo.execute_operator(URI, {"dataset": ds, "params": _params(ds, num_shards=3)})
    assert _queued(ds) == []
    # a target of only the reference is refused by the form, before anything is queued
    from fiftyone.operators.executor import ExecutionError

    with pytest.raises(ExecutionError, match="only the reference"):
        foo.execute_operator(URI, {"view": ds.limit(1), "params": _params(ds, num_shards=3)})
    assert _queued(ds) == []
