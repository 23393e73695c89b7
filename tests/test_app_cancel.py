"""The App's cancel of an immediate run: the App aborts the streaming request of a generator operator
(its operator executor's ``abortByURI``); the server then drops the operator's generator. The run must
end cleanly: what was labelled is written (even mid-batch), and the run record says it was canceled.

This drives the real App server (``python -m fiftyone.server.main``) over HTTP as the App does, without a
browser: ``POST /operators/execute/generator``, read a few progress messages, close the connection."""

import json
import os
import time
import uuid

import httpx

import _app
from conftest import PLUGIN_NAME, _require_db, make_pets_dataset, pets_stems

URI = PLUGIN_NAME + "/annotate_by_reference_mask"


def test_closing_the_stream_flushes_the_labels_and_records_the_cancel(tmp_path):
    _require_db()
    import fiftyone as fo

    ds = make_pets_dataset(pets_stems(animal="cat", n=30))
    ds.name = "samtext-cancel-%s" % uuid.uuid4().hex[:8]
    ds.persistent = True
    server = _app.AppServer(str(tmp_path))
    try:
        # FiftyOne's server just drops the generator of a request the App aborts; samtext's watchdog closes a
        # run whose progress nobody reads for this long (30 s by default)
        os.environ["SAMTEXT_ABANDONED_AFTER_SECONDS"] = "5"
        server.start()
        del os.environ["SAMTEXT_ABANDONED_AFTER_SECONDS"]
        params = dict(class_name="cat", reference_sample=ds.first().id, reference_field="ground_truth",
                      sam_model="tiny", device="cpu", out_field="canceled", batch_size=1000, save_prompts=False)
        body = dict(dataset_name=ds.name, operator_uri=URI, params=params, view=[])
        progress = 0
        with httpx.Client(timeout=120) as client:
            with client.stream("POST", server.url + "/operators/execute/generator", json=body) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    message = json.loads(line)
                    if message.get("body", {}).get("operator_uri") == "set_progress":
                        progress += 1
                    if progress == 6:  # 0/29 .. 5/29: five images done; batch_size 1000, so none written yet
                        break
        # the connection is closed here, like the App's abort
        deadline = time.time() + 60
        while True:
            ds.reload()
            runs = ds.get_run_info("samtext_canceled").config.runs if "samtext_canceled" in ds.list_runs() else {}
            statuses = [r.get("status") for r in runs.values()]
            if statuses and statuses[0] != "running":
                break
            assert time.time() < deadline, "the run did not end after the stream closed: %s\n%s" % (
                statuses, server.log_tail())
            time.sleep(0.5)
        (run,) = runs.values()
        assert run["status"] == "canceled", run
        done = run["summary"]["labelled"]
        assert 5 <= done < 29, run["summary"]
        assert ds.count("canceled") == done  # flushed, although the batch was not full
    finally:
        server.stop()
        if fo.dataset_exists(ds.name):
            fo.delete_dataset(ds.name)
