"""The hub guard on real servers: an io handler whose jobs keep blocking the event loop is rerouted to the cpu
worker processes (after greenjobs.hub.reroute_after blocks; kind="auto" at the first; never with reroute off),
and its next job runs in a worker while /health keeps answering; blocks reach /events; a worker on its own
(greenjobs-worker) enforces a job's timeout itself while the server cannot stop it; POST /jobs?wait= that runs
out answers the job as stored."""
import json
import os
import signal
import threading
import time

import pytest
import requests

from tests.e2e.helpers import QUICK_STOP, wait_until
from tests.support import WorkerProcess, write_ini

pytestmark = pytest.mark.e2e

HANDLERS = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.hub_handlers"}
BASE = {**QUICK_STOP, **HANDLERS}


def handler(srv, name):
    return next(h for h in srv.get("/handlers").json()["handlers"] if h["name"] == name)


def worst_health_latency_while(srv, job_id) -> float:
    """Poll /health every 20 ms until the job ended; the slowest answer, in seconds."""
    worst = 0.0
    while srv.get(f"/jobs/{job_id}").json()["state"] not in ("succeeded", "failed", "cancelled"):
        asked = time.monotonic()
        assert srv.get("/health").status_code == 200
        worst = max(worst, time.monotonic() - asked)
        time.sleep(0.02)
    return worst


def test_an_io_handler_that_keeps_blocking_is_rerouted_to_the_workers(make_server):
    srv = make_server(app={**BASE, "greenjobs.workers.cpu": 1})
    for _ in range(3):
        done = srv.wait(srv.submit("hub.sleep", kwargs={"seconds": 0.3}, timeout=5)["id"], 30)
        assert done["state"] == "succeeded" and done["ran_in"] == "hub" and done["result"] == srv.proc.pid
        assert done["ran_by"]["pid"] == srv.proc.pid
    wait_until(lambda: handler(srv, "hub.sleep")["kind"] == "cpu", 10, message="rerouted")
    rerouted = handler(srv, "hub.sleep")
    assert rerouted["declared_kind"] == "io" and "blocked the event loop 3 time(s)" in rerouted["rerouted"]
    assert "is rerouted to the cpu worker processes" in srv.log()
    job = srv.submit("hub.sleep", kwargs={"seconds": 1.5}, timeout=5)
    worst = worst_health_latency_while(srv, job["id"])
    done = srv.wait(job["id"], 30)
    assert done["state"] == "succeeded", done
    assert (done["kind"], done["ran_in"], done["rerouted"]) == ("cpu", "worker", True)
    assert done["result"] != srv.proc.pid, "it ran in a worker process"
    assert done["ran_by"]["pid"] == done["result"], "the job says which worker ran it"
    print(f"\n[hub] rerouted io handler: a 1.5 s unpatched sleep ran in a worker; worst /health {worst * 1000:.0f} ms")


def test_kind_auto_is_rerouted_at_its_first_block_and_reroute_off_keeps_it_on_the_hub(make_server):
    srv = make_server(app={**BASE, "greenjobs.workers.cpu": 1}, name="auto")
    first = srv.wait(srv.submit("hub.auto", kwargs={"seconds": 0.3})["id"], 30)
    assert first["ran_in"] == "hub"
    blocked = wait_until(lambda: srv.get(f"/jobs/{first['id']}").json()["blocked"], 10,
                         message="its block on the record (written once the hub runs again)")
    assert blocked["count"] == 1
    wait_until(lambda: handler(srv, "hub.auto")["kind"] == "cpu", 10, message="auto rerouted at once")
    second = srv.wait(srv.submit("hub.auto", kwargs={"seconds": 0.3})["id"], 30)
    assert second["ran_in"] == "worker" and second["result"] != srv.proc.pid

    off = make_server(app={**BASE, "greenjobs.workers.cpu": 1, "greenjobs.hub.reroute": "false"}, name="off")
    for _ in range(4):
        done = off.wait(off.submit("hub.sleep", kwargs={"seconds": 0.2}, timeout=5)["id"], 30)
        assert done["ran_in"] == "hub" and done["result"] == off.proc.pid
    assert handler(off, "hub.sleep")["kind"] == "io" and handler(off, "hub.sleep")["rerouted"] is None
    assert "greenjobs_hub_blocks_total{handler=\"hub.sleep\"} 4.0" in off.get("/metrics").text


def test_a_block_is_a_blocked_event_on_the_stream(make_server):
    srv = make_server(app={**BASE, "greenjobs.workers.cpu": 0})
    seen = []

    def listen():
        with requests.get(srv.url + "/events?event=blocked", stream=True, timeout=20) as stream:
            for line in stream.iter_lines():
                if line.startswith(b"data:"):
                    seen.append(json.loads(line[5:]))
                    return
    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    time.sleep(0.5)
    job = srv.submit("hub.spin", kwargs={"seconds": 0.4}, timeout=5)
    reader.join(20)
    assert seen and seen[0]["job"] == job["id"] and seen[0]["event"] == "blocked", seen
    assert seen[0]["blocked"]["count"] == 1 and seen[0]["blocked"]["longest_ms"] >= 300
    assert f"job {job['id']} (hub.spin) blocked the event loop" in srv.log()


def test_a_lone_worker_enforces_a_timeout_while_the_server_cannot(make_server, tmp_path):
    shared = {"greenjobs.store.url": f"sqlite:///{tmp_path}/shared.sqlite",
              "greenjobs.broker.url": f"embedded:///{tmp_path}/queue.sqlite"}
    srv = make_server(app={**BASE, **shared, "greenjobs.workers.cpu": 0})
    worker = WorkerProcess(write_ini(tmp_path / "workers", {**BASE, **shared}), mode="cpu", processes=1).start()
    try:
        job = srv.submit("cpu.spin", kwargs={"seconds": 60}, timeout=1)
        wait_until(lambda: srv.get(f"/jobs/{job['id']}").json()["state"] == "running", 30, message="running")
        os.kill(srv.proc.pid, signal.SIGSTOP)         # no timer, no stop message from the server
        try:
            wait_until(lambda: "ran past its timeout" in worker.log(), 15, message="the worker ended it itself")
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
        done = srv.wait(job["id"], 30)
        assert done["state"] == "failed" and done["error"]["kind"] == "timeout", done
        wait_until(lambda: worker.log().count(" consuming ") >= 2, 30, message="a fresh worker took its place")
    finally:
        worker.stop(30)


def test_a_wait_that_runs_out_answers_the_job_as_stored(make_server):
    srv = make_server(app={**BASE, "greenjobs.workers.cpu": 1})
    answer = srv.post("/jobs?wait=1.5", {"handler": "cpu.spin", "kwargs": {"seconds": 4}})
    assert answer.status_code == 202
    job = answer.json()
    assert job["state"] == "running" and job["attempts"] == 1, job
