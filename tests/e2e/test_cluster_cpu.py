"""A cancel on any server stops a running cpu job where it runs, whoever granted its claim and whoever
supervises its worker: real pserve processes and a real ``greenjobs-worker`` on one ledger and one broker
(an SQLite file and the embedded broker shared by processes of one host; PostgreSQL and RabbitMQ)."""
import os
import signal
import time
import uuid

import pytest

from tests.conftest import rabbitmq_answers
from tests.e2e.helpers import E2E_HANDLERS, QUICK_STOP, wait_until
from tests.support import WorkerProcess, write_ini

BASE = {**E2E_HANDLERS, **QUICK_STOP}


@pytest.fixture(params=["sqlite+embedded", "postgres+rabbitmq"])
def shared(request, tmp_path):
    """Settings that put every process on one ledger and one broker."""
    if request.param == "sqlite+embedded":
        return {"greenjobs.store.url": f"sqlite:///{tmp_path}/shared.sqlite",
                "greenjobs.broker.url": f"embedded:///{tmp_path}/queue.sqlite"}
    if not rabbitmq_answers():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    return {"greenjobs.store.url": request.getfixturevalue("postgres").database_url("cpucluster"),
            "greenjobs.broker.url": "amqp://guest:guest@127.0.0.1:5672//",
            "greenjobs.broker.namespace": f"gjtest-{uuid.uuid4().hex[:8]}"}


@pytest.fixture
def cpu_host(tmp_path, shared):
    """``greenjobs-worker config.ini`` with one worker process: a worker host apart from every server."""
    worker = WorkerProcess(write_ini(tmp_path / "workers", {**BASE, **shared}), mode="cpu", processes=1).start()
    yield worker
    try:
        worker.stop(30)
    except Exception:
        worker.kill()


def assert_stopped_and_free(submit_to, spin: dict, log) -> None:
    """The cancelled job stays cancelled (its redelivery is refused), and the one worker is free again at
    once: a quick cpu job ends long before the 60 s spin would have (the margin is for a loaded machine)."""
    asked = time.monotonic()
    quick = submit_to.submit("cpu.pbkdf2", kwargs={"iterations": 1000})
    done = submit_to.wait(quick["id"], 60)
    assert done["state"] == "succeeded", (done, log())
    assert time.monotonic() - asked < 45, "the worker was not stopped: the next job waited for the spin to end"
    final = submit_to.get(f"/jobs/{spin['id']}").json()
    assert final["state"] == "cancelled" and final["attempts"] == 1, final


def test_a_cancel_on_another_server_stops_a_worker_host_job(make_server, shared, cpu_host):
    a = make_server(app={**BASE, **shared, "greenjobs.workers.cpu": 0}, name="a")
    b = make_server(app={**BASE, **shared, "greenjobs.workers.cpu": 0}, name="b")
    spin = a.submit("cpu.spin", kwargs={"seconds": 60})
    wait_until(lambda: a.get(f"/jobs/{spin['id']}").json()["state"] == "running", 30, message="the spin running")
    cancelled = b.delete(f"/jobs/{spin['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
    wait_until(lambda: "was stopped by a server" in cpu_host.log(), 30, message="the worker told to stop")
    assert_stopped_and_free(b, spin, cpu_host.log)
    assert "was stopped to stop its job; replacing it" in cpu_host.log()


def test_a_cancel_on_another_server_stops_a_job_of_a_server_supervised_worker(make_server, shared):
    a = make_server(app={**BASE, **shared, "greenjobs.workers.cpu": 1}, name="a")
    b = make_server(app={**BASE, **shared, "greenjobs.workers.cpu": 0}, name="b")
    wait_until(lambda: a.get("/health").json()["cpu"]["workers"] == 1, 30, message="a's worker alive")
    spin = b.submit("cpu.spin", kwargs={"seconds": 60})
    wait_until(lambda: b.get(f"/jobs/{spin['id']}").json()["state"] == "running", 30, message="the spin running")
    cancelled = b.delete(f"/jobs/{spin['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
    assert_stopped_and_free(b, spin, a.log)


def test_a_supervised_workers_result_reaches_another_server_while_its_own_is_stopped(make_server, shared):
    """The worker reports over its direct line first; a server that does not answer (SIGSTOPped) makes it
    publish the result to the control queue after RECORD_TIMEOUT (10 s), where another server records it."""
    a = make_server(app={**BASE, **shared, "greenjobs.workers.cpu": 1}, name="a")
    b = make_server(app={**BASE, **shared, "greenjobs.workers.cpu": 0}, name="b")
    wait_until(lambda: a.get("/health").json()["cpu"]["workers"] == 1, 30, message="a's worker alive")
    job = b.submit("cpu.spin", kwargs={"seconds": 2})
    wait_until(lambda: b.get(f"/jobs/{job['id']}").json()["state"] == "running", 30, message="the spin running")
    assert a.get("/health").json()["cpu"]["messages"].get("line:claim", 0) >= 1, "a's worker claimed over its line"
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        done = b.wait(job["id"], 45)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    assert "did not record job" in a.log() and "publishing it" in a.log()
    # back, a reads the late result from the line: refused by the fence, nothing changes
    wait_until(lambda: a.get("/health", timeout=5).json()["cpu"]["messages"].get("line:result", 0) >= 1, 30,
               message="a read the late result")
    again = a.get(f"/jobs/{job['id']}").json()
    assert again["state"] == "succeeded" and again["attempts"] == 1 and again["finished_at"] == done["finished_at"]
