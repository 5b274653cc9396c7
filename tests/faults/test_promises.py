"""Scenarios 8, 9 and 11 on a real server: cancels survive a crash, a handler that swallows its timeout
still fails and gives its slot back, retries run exactly as many attempts as promised."""
import os
import time

import pytest

from tests.e2e.helpers import wait_until
from tests.e2e.test_cpu import worker_pids
from tests.faults.ledger import Ledger

pytestmark = pytest.mark.faults

APP = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.faults.fault_handlers", "greenjobs.shutdown.grace": 0.5,
       "greenjobs.store.lease_seconds": 2, "greenjobs.retry.base": 0.05, "greenjobs.retry.max": 0.2}


def state(srv, job_id):
    return srv.get(f"/jobs/{job_id}").json()


def test_cancelled_jobs_stay_cancelled_after_a_crash(make_server, tmp_path, store_backend):
    srv = make_server(app={**APP, **store_backend, "greenjobs.pool.size": 1, "greenjobs.workers.cpu": 1}, name="cancel")
    ledger = Ledger(srv.ini.parent)
    gate = tmp_path / "open-the-gate"
    running_io = srv.submit("fault.io", kwargs={"seconds": 30})
    queued_io = srv.submit("fault.io", kwargs={"seconds": 0.1})      # behind the single slot
    running_cpu = srv.submit("fault.gate", kwargs={"path": str(gate)})
    for job in (running_io, queued_io, running_cpu):
        ledger.accepted.add(job["id"])
    wait_until(lambda: set(ledger.executions()) == {running_io["id"], running_cpu["id"]}, 30,
               message="the io and the cpu job running")
    assert state(srv, queued_io["id"])["state"] == "queued"
    for job in (queued_io, running_io, running_cpu):
        response = srv.delete(f"/jobs/{job['id']}")
        assert response.status_code == 200 and response.json()["state"] == "cancelled", response.text
    srv.kill()
    gate.touch()                                  # were the cpu job ever to run again, it would finish now
    srv.start()
    wait_until(lambda: len(worker_pids(srv)) == 1, 30, message="a worker after the restart")
    time.sleep(3)                                 # longer than a lease: adoption had every chance to act
    final = {j: state(srv, j) for j in ledger.accepted}
    assert {j: f["state"] for j, f in final.items()} == {j: "cancelled" for j in ledger.accepted}
    runs = ledger.executions()
    assert queued_io["id"] not in runs                                   # never ran
    assert all(runs[j]["done"] == 0 and runs[j]["start"] == 1 for j in (running_io["id"], running_cpu["id"])), runs
    report = ledger.report(final)
    assert not report["stuck"] and not report["unexpected"] and not report["duplicated"], report


def test_a_handler_that_swallows_its_timeout_still_fails_and_returns_its_slot(make_server):
    srv = make_server(app={**APP, "greenjobs.pool.size": 1, "greenjobs.workers.cpu": 0}, name="swallow")
    bad = srv.submit("fault.swallow", kwargs={"seconds": 3}, timeout=0.5)
    behind = srv.submit("echo", kwargs={"behind": True})
    assert behind["state"] == "queued"
    done = srv.wait(bad["id"], 20)
    assert done["state"] == "failed" and done["error"]["kind"] == "timeout", done
    assert srv.wait(behind["id"], 20)["state"] == "succeeded"           # the one slot came back
    wait_until(lambda: srv.get("/health").json()["pool"]["busy"] == 0, 15, message="no slot held")
    ledger = Ledger(srv.ini.parent)
    wait_until(lambda: ledger.executions()[bad["id"]]["done"] == 1, 20, message="the swallowing greenlet ended")
    again = state(srv, bad["id"])                                       # its late return changes nothing
    assert again["state"] == "failed" and again["error"]["kind"] == "timeout" and again["result"] is None


def test_retries_run_exactly_the_promised_attempts_and_retry_revives(make_server):
    srv = make_server(app={**APP, "greenjobs.workers.cpu": 0}, name="retries")
    ledger = Ledger(srv.ini.parent)
    flaky = srv.submit("fault.flaky", kwargs={"fail_times": 2})                    # max_retries 3
    failing = srv.submit("fault.flaky", kwargs={"fail_times": 3}, max_retries=2)   # 3 attempts, all fail
    ok = srv.wait(flaky["id"], 30)
    assert ok["state"] == "succeeded" and ok["result"] == {"attempt": 3} and ok["attempts"] == 3, ok
    assert [e["message"] for e in ok["errors"]] == [f"RuntimeError: attempt {n} fails on purpose" for n in (1, 2)]
    bad = srv.wait(failing["id"], 30)
    assert bad["state"] == "failed" and bad["attempts"] == 3 and len(bad["errors"]) == 3, bad
    assert "attempt 3 fails" in bad["error"]["message"] and "Traceback" in bad["error"]["traceback"]
    assert ledger.executions()[failing["id"]]["start"] == 3
    listed = srv.get("/jobs?state=failed&handler=fault.flaky").json()["jobs"]
    assert [j["id"] for j in listed] == [failing["id"]]
    revived = srv.post(f"/jobs/{failing['id']}/retry", {})
    assert revived.status_code == 202 and revived.json()["id"] == failing["id"], revived.text
    again = srv.wait(failing["id"], 30)
    assert again["state"] == "succeeded" and again["result"] == {"attempt": 4} and again["attempts"] == 4, again
    assert ledger.executions()[failing["id"]]["start"] == 4
