"""Throughput of "Annotate by reference mask" split into delegated runs, with 1 and with 2 workers.

A persistent FiftyOne dataset of N samples (pets images, cycled; the first is the reference) is labelled by
the operator with ``num_shards`` (default 4): the shards are queued as delegated operations and
`fiftyone delegated launch` workers, started here as subprocesses against one private mongod, run them. The
time is from the first shard's start to the last one's end (worker start-up not counted). Each
configuration writes its own output field; the report checks that every sample was labelled exactly once.

Tiny models by default (the point is the plumbing: claiming, writing, recording); torch threads per worker =
cores / workers, so both configurations use the whole machine.

    .venv/bin/python bench/bench_shards.py --samples 1000          # bench/results/shards.md (3-4 minutes)
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

from common import RESULTS, ROOT, command_line, loadavg, machine_lines, md_table, private_database, write_report

sys.path.insert(0, os.path.join(ROOT, "tests"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--sam", default="tiny")
    p.add_argument("--out", default=os.path.join(RESULTS, "shards.md"))
    args = p.parse_args()

    import _workers  # first: tests/conftest.py sets FIFTYONE_PLUGINS_DIR (a folder with this plugin) for fiftyone

    mongod, db_dir = private_database()
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    from conftest import PLUGIN_NAME, pets_stems

    uri = PLUGIN_NAME + "/annotate_by_reference_mask"
    cores = os.cpu_count() or 1
    rows, start, load_start = [], time.time(), loadavg()
    name = "samtext-bench-shards"
    try:
        ds = _workers.many_samples_dataset(name, args.samples, pets_stems(animal="cat", n=40) +
                                           pets_stems(animal="dog", n=40))
        for count in args.workers:
            field = "sharded_%dw" % count
            params = dict(class_name="cat", reference_sample=ds.first().id, reference_field="ground_truth",
                          sam_model=args.sam, device="cpu", out_field=field, save_prompts=False,
                          num_shards=args.shards, batch_size=32)
            foo.execute_operator(uri, {"dataset": ds, "params": params})
            ops = [str(o.id) for o in DelegatedOperationService().get_queued_operations(operator=uri,
                                                                                       dataset_name=name)]
            threads = max(1, cores // count)
            with tempfile.TemporaryDirectory() as logs, _workers.workers(count, logs, threads=threads) as procs:
                docs = _workers.wait_for(ops, procs=procs)
            ds.reload()
            span = _workers.span_seconds(docs)
            results = [d.result.result for d in docs]
            labelled = sum(r["labelled"] for r in results)
            n = args.samples - 1
            ok = ds.count(field) == n and labelled == n and all(r["failed"] == 0 for r in results)
            rows.append([count, threads, len(ops), n, "%.1f" % span, "**%.1f**" % (n / span),
                         "yes" if ok else "**no** (%d written, %d counted)" % (ds.count(field), labelled)])
            print(rows[-1], flush=True)
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
        if mongod is not None:
            mongod.terminate()
            mongod.wait(timeout=60)
            shutil.rmtree(db_dir, ignore_errors=True)
    base = float(rows[0][5].strip("*"))
    for row in rows:
        row.append("%.2fx" % (float(row[5].strip("*")) / base))
    out = ["# Runs split into delegated shards: throughput by number of workers", "",
           "Command: `%s`" % command_line(), ""] + machine_lines() + [
        "- SAM %s; %d samples (pets images cycled), %d shards queued by the operator, `fiftyone delegated launch` "
        "workers as subprocesses sharing one mongod; time from the first shard's start to the last one's end"
        % (args.sam, args.samples, args.shards),
        "- Load average at start: %s, at end: %s; total wall time %.0f s" % (load_start, loadavg(),
                                                                          time.time() - start), "",
        md_table(["workers", "torch threads each", "shards", "samples labelled", "seconds", "samples/s",
                  "each sample once", "speed-up"], rows), ""]
    write_report(args.out, "\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
