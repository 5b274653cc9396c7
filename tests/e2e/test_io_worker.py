"""``greenjobs-worker --io``: io capacity apart from the HTTP tier.  A real pserve and a real io worker
process on one ledger (the server's own ini): the worker takes what the server has no slot for, shows in
the servers table, and a worker that is killed or stopped leaves its jobs to the server."""
import signal
import time

import pytest

from tests.e2e.helpers import wait_until
from tests.e2e.test_cluster import BASE, health, shared_store  # noqa: F401 (a fixture)
from tests.support import WorkerProcess, write_ini


@pytest.fixture
def make_io_worker(tmp_path, shared_store):  # noqa: F811
    """An io worker on the test's shared ledger, with an ini of its own (a pool of 50)."""
    started = []

    def make():
        ini = write_ini(tmp_path / f"worker{len(started)}", {**BASE, **shared_store, "greenjobs.pool.size": 50})
        worker = WorkerProcess(ini, mode="io").start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        try:
            worker.stop(30)
        except Exception:
            worker.kill()


def servers(srv) -> dict:
    return {s["pid"]: s for s in srv.get("/servers").json()["servers"]}


def test_an_io_worker_runs_what_the_server_has_no_slot_for(make_server, make_io_worker, shared_store):
    srv = make_server(app={**BASE, **shared_store, "greenjobs.pool.size": 1})
    worker = make_io_worker()
    wait_until(lambda: servers(srv).get(worker.proc.pid, {}).get("role") == "io-worker", 20,
               message="the io worker in the servers table")
    response = srv.post("/jobs/batch", {"jobs": [{"handler": "e2e.pid", "kwargs": {"pause": 0.5}}] * 20})
    assert response.status_code == 202, response.text
    done = [srv.wait(i, 60) for i in response.json()["ids"]]
    assert {j["state"] for j in done} == {"succeeded"}, done
    ran_by = [j["result"] for j in done]
    assert set(ran_by) <= {srv.proc.pid, worker.proc.pid}
    assert ran_by.count(worker.proc.pid) >= 10, ran_by          # the server runs one at a time
    assert all(j["attempts"] == 1 for j in done)


def test_a_killed_io_worker_leaves_its_running_jobs_to_the_server(make_server, make_io_worker, shared_store):
    srv = make_server(app={**BASE, **shared_store, "greenjobs.pool.size": 1, "greenjobs.store.lease_seconds": 6})
    blocker = srv.submit("e2e.pid", kwargs={"pause": 60})      # the server's one slot
    wait_until(lambda: health(srv)["pool"]["busy"] == 1, 20, message="the server's slot busy")
    worker = make_io_worker()
    ids = [srv.submit("e2e.pid", kwargs={"pause": 3})["id"] for _ in range(5)]
    wait_until(lambda: servers(srv).get(worker.proc.pid, {}).get("pool_busy") == 5, 20,
               message="the five jobs running on the io worker")
    worker.kill()                                               # a crash mid-job
    srv.delete(f"/jobs/{blocker['id']}")                       # a slot for the adopted jobs
    done = [srv.wait(i, 60) for i in ids]
    assert [j["state"] for j in done] == ["succeeded"] * 5, done
    assert {j["result"] for j in done} == {srv.proc.pid}       # finished by the server ...
    assert {j["attempts"] for j in done} == {2}                 # ... as a second attempt
    wait_until(lambda: servers(srv)[worker.proc.pid]["alive"] is False, 20, message="the worker shown lost")


def test_a_stopped_io_worker_gives_its_jobs_back_and_leaves_the_table(make_server, make_io_worker, shared_store):
    srv = make_server(app={**BASE, **shared_store, "greenjobs.pool.size": 1})
    blocker = srv.submit("e2e.pid", kwargs={"pause": 60})
    wait_until(lambda: health(srv)["pool"]["busy"] == 1, 20, message="the server's slot busy")
    worker = make_io_worker()
    ids = [srv.submit("e2e.pid", kwargs={"pause": 30})["id"] for _ in range(3)]
    wait_until(lambda: servers(srv).get(worker.proc.pid, {}).get("pool_busy") == 3, 20,
               message="three jobs running on the io worker")
    pid = worker.proc.pid
    assert worker.stop(30) == 0                                 # SIGTERM: grace (0.5 s), then give back
    assert "3 running jobs requeued" in worker.log()
    wait_until(lambda: pid not in servers(srv), 20, message="the worker's row deleted")
    assert {srv.get(f"/jobs/{i}").json()["state"] for i in ids} == {"queued"}
    srv.delete(f"/jobs/{blocker['id']}")                       # its one free slot takes one of them
    wait_until(lambda: [srv.get(f"/jobs/{i}").json()["state"] for i in ids].count("running") == 1, 20,
               message="the server took one")
    for i in ids:
        srv.delete(f"/jobs/{i}")
