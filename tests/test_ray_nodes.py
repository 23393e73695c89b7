"""A Ray node lost mid-run: a two-node local cluster (ray.cluster_utils.Cluster, one CPU each), an actor on each; the
worker node removed after 60 samples. Its actor cannot come back (no node has room), so its samples, queued ones
included, go to the other actor: every sample labelled once, the same labels as without Ray. Slow set."""

import numpy as np
import pytest

from conftest import make_pets_dataset, pets_stems

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes():
    import ray  # a dev install has it (requirements-dev.txt): a missing ray fails, never skips
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def test_a_node_lost_mid_run_loses_no_sample(db, two_nodes):
    import samtext

    cluster, worker = two_nodes
    stems = pets_stems()
    ds = make_pets_dataset([stems[i % len(stems)] for i in range(200)])
    reference = ds.first().id
    kwargs = dict(reference=reference, reference_field="ground_truth", sam_model="tiny", device="cpu",
                  min_similarity=None)
    single = samtext.annotate_by_reference(ds, "cat", out_field="single", **kwargs)
    gen = samtext.iter_annotate_by_reference(ds, "cat", out_field="nodes", ray_address=cluster.address, ray_actors=2,
                                             **kwargs)
    removed = False
    try:
        while True:
            done, _ = next(gen)
            if done >= 60 and not removed:
                cluster.remove_node(worker)
                removed = True
    except StopIteration as end:
        summary = end.value
    assert removed and (summary.labelled, summary.failed) == (single.labelled, 0) == (199, 0)
    for a, b in zip(ds.values("single"), ds.values("nodes")):
        assert (a is None) == (b is None) and (a is None or np.array_equal(a.get_mask(), b.get_mask()))
