"""Labelling on Ray: 1 and 2 actors on this machine, and exactly once under a kill.

A FiftyOne dataset of N samples (pets images, cycled; the first is the reference) is labelled by "Annotate by
reference mask" through ``ray_address="local"`` with 1 and then 2 CPU actors (each actor gets the machine's
cores / actors), and once more with 2 actors, one of them killed (SIGKILL) a third of the way through. Time from
the run's first progress event to its end (Ray's start and the models' loading are reported apart). The
database's write rate is measured alone (the labels of a finished run written again into a new field), for the
100k-image plan.

    .venv/bin/python bench/bench_ray.py --samples 400          # bench/results/ray.md
"""

import argparse
import os
import signal
import sys
import time

from common import RESULTS, ROOT, command_line, loadavg, machine_lines, md_table, private_database, write_report

sys.path.insert(0, os.path.join(ROOT, "tests"))

from samtext.run.ray_labeller import local_actor_pids  # noqa: E402


def timed_run(ds, reference, field, sam, kill_at=None, **kwargs):
    """``(seconds from the first event, summary, killed pid)``."""
    import samtext

    gen = samtext.iter_annotate_by_reference(ds, "cat", reference=reference, reference_field="ground_truth",
                                             out_field=field, sam_model=sam, device="cpu", min_similarity=None,
                                             **kwargs)
    start, killed = None, None
    try:
        while True:
            done, total = next(gen)
            if start is None:
                start = time.perf_counter()
            if kill_at is not None and killed is None and done >= kill_at:
                killed = local_actor_pids()[0]
                os.kill(killed, signal.SIGKILL)
    except StopIteration as end:
        return time.perf_counter() - start, end.value, killed


def write_rate(ds, field, n):
    """Samples per second that the run driver's writer puts into the database (labels of ``field`` copied)."""
    import fiftyone as fo

    from samtext.run import fields as sds

    labels = dict(zip(ds.values("id"), ds.values(field)))
    ds.add_sample_field("copy", fo.EmbeddedDocumentField, embedded_doc_type=fo.Segmentation)
    start = time.perf_counter()
    with sds.LabelWriter(ds, 16) as writer:
        for sid, label in labels.items():
            if label is not None:
                writer.add(sid, {"copy": label.copy()})
    return n / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--sam", default="tiny")
    p.add_argument("--out", default=os.path.join(RESULTS, "ray.md"))
    args = p.parse_args()

    mongod, _ = private_database()
    import ray

    from conftest import make_pets_dataset, pets_stems
    from samtext.run.ray_labeller import connect

    start_load = loadavg()
    t = time.perf_counter()
    connect("local", num_cpus=os.cpu_count())
    ray_start = time.perf_counter() - t
    stems = pets_stems()
    ds = make_pets_dataset([stems[i % len(stems)] for i in range(args.samples)])
    reference = ds.first().id
    n = args.samples - 1
    rows, base = [], None
    for label, actors, kill in (("1 actor", 1, None), ("2 actors", 2, None), ("2 actors, one killed", 2, n // 3)):
        field = "ray_%d_%s" % (actors, "kill" if kill else "plain")
        seconds, summary, killed = timed_run(ds, reference, field, args.sam, kill_at=kill, ray_address="local",
                                             ray_actors=actors)
        once = ds.count(field) == n and summary.labelled == n and summary.failed == 0
        rate = n / seconds
        base = base or rate
        rows.append([label, actors, n, "%.1f" % seconds, "**%.1f**" % rate, "%.2fx" % (rate / base),
                     "yes" if once else "NO", "pid %d at sample %d" % (killed, kill) if killed else ""])
        print(rows[-1], flush=True)
    single_s, single, _ = timed_run(ds, reference, "single", args.sam)
    rows.append(["no Ray (the same run in this process)", 0, n, "%.1f" % single_s, "%.1f" % (n / single_s),
                 "%.2fx" % (n / single_s / base), "yes" if single.labelled == n else "NO", ""])
    writes = write_rate(ds, "single", n)
    ray.shutdown()
    lines = ["# Labelling on Ray: 1 and 2 actors, and a kill", "", "Command: `%s`" % command_line(), ""]
    lines += machine_lines() + [
        "- %d samples (pets photos, cycled), SAM %s, reference mask method prior, gate off" % (args.samples, args.sam),
        "- a local Ray (`ray_address=\"local\"`) started in %.1f s; each actor gets cores / actors threads" % ray_start,
        "- load average at start: %s; at end: %s" % (start_load, loadavg()), "",
        md_table(["run", "actors", "samples", "seconds", "samples/s", "speed-up", "each sample once", "kill"], rows),
        "", "Database writes alone (the run driver's writer, 16 samples per write, masks of about 500x375 in the "
        "database): **%.0f samples/s**." % writes, ""]
    write_report(args.out, "\n".join(lines))
    if mongod is not None:
        mongod.kill()


if __name__ == "__main__":
    main()
