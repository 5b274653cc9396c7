"""Workflows across faults, on both ledgers: a cpu worker process is SIGKILLed while it runs a step of a chord's
header.  The step is delivered again and runs on a live worker; the workflow ends as if nothing happened: the
right result, every header counted once, the killed step run twice (attempts 2) and succeeded, every other step
run once, and the chord body run exactly once."""
import os
import signal
import sqlite3
import time
from collections import Counter

import pytest

from greenjobs.pool.owners import owner_pid
from tests.e2e.helpers import QUICK_STOP, parse_time, wait_until
from tests.e2e.test_cpu import alive, wait_workers, worker_pids

pytestmark = pytest.mark.faults

HEADERS = 8
NAP = 2.0           # seconds each header step sleeps in its worker: a kill lands well inside one, even loaded


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        return {"greenjobs.store.url": f"sqlite:///{tmp_path}/ledger.sqlite"}
    return {"greenjobs.store.url": request.getfixturevalue("postgres").database_url("wfkill")}


def running_steps(url: str, workflow: str) -> list[tuple[str, str, float]]:
    """(job id, lease owner, started_at) of the workflow's running steps, read from the ledger itself."""
    sql = "SELECT id, lease_owner, started_at FROM jobs WHERE workflow_id = ? AND state = 'running'"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):], timeout=10) as conn:
            return conn.execute(sql, (workflow,)).fetchall()
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.replace("?", "%s"), (workflow,)).fetchall()


def test_a_chord_survives_the_sigkill_of_a_worker_running_a_header(make_server, ledger, tmp_path):
    executions = tmp_path / "executions.log"
    app = {**QUICK_STOP, **ledger, "greenjobs.workers.cpu": 2,
           "greenjobs.handlers": "greenjobs.handlers.builtin tests.workflow_handlers"}
    srv = make_server(app=app, env={"GREENJOBS_TEST_EXECUTIONS": str(executions)})
    workers = wait_workers(srv, 2)
    header = [{"handler": "wf.cpu_add", "kwargs": {"x": i, "seconds": NAP}} for i in range(HEADERS)]
    made = srv.post("/workflows", {"chain": [{"chord": {"header": header, "body": {"handler": "wf.total"}}},
                                             {"handler": "wf.add", "args": [1000]}]})
    assert made.status_code == 202, made.text
    workflow = made.json()["id"]

    def victim():
        """(step, worker pid) of a header step a live worker has run for a little while, far from its end,
        once the workflow is under way (some headers done)."""
        if srv.get(f"/workflows/{workflow}").json()["counts"].get("succeeded", 0) < 2:
            return None
        live = worker_pids(srv)
        for step, owner, started in running_steps(ledger["greenjobs.store.url"], workflow):
            pid = owner_pid(owner or "")
            if pid in live and 0.1 <= time.time() - started <= NAP / 2:
                return step, pid
        return None
    step, pid = wait_until(victim, 30, interval=0.02, message="a worker inside a header step")
    os.kill(pid, signal.SIGKILL)                        # cut off mid-sleep: its result is never published
    killed_at = time.time()
    assert pid in workers
    wait_until(lambda: not alive(pid), 10, message=f"worker {pid} gone")
    wait_until(lambda: srv.get(f"/workflows/{workflow}").json()["state"] != "running", 60, message="workflow ended")
    done = srv.get(f"/workflows/{workflow}").json()
    took = time.time() - killed_at
    assert done["state"] == "succeeded", done
    assert done["result"] == sum(range(HEADERS)) + 1000, done
    *headers, body, last = done["jobs"]
    assert [h["handler"] for h in headers] == ["wf.cpu_add"] * HEADERS and body["handler"] == "wf.total", done
    jobs = {j["id"]: srv.get(f"/jobs/{j['id']}").json() for j in done["jobs"]}
    assert step in {h["id"] for h in headers}
    killed = jobs[step]
    assert killed["state"] == "succeeded" and killed["attempts"] == 2, killed       # it ran again, to its end
    assert killed["result"] == killed["kwargs"]["x"], killed
    others = {j: (job["state"], job["attempts"]) for j, job in jobs.items() if j != step}
    assert all(v == ("succeeded", 1) for v in others.values()), others
    # the body got each header's result exactly once, in the header's order, and ran once
    assert jobs[body["id"]]["args"] == [list(range(HEADERS))], jobs[body["id"]]
    assert jobs[body["id"]]["result"] == sum(range(HEADERS)) and jobs[last["id"]]["result"] == done["result"]
    runs = Counter(line.split()[0] for line in executions.read_text().splitlines())
    assert runs == {body["id"]: 1}, runs
    # the supervisor replaced the dead worker
    after = wait_workers(srv, 2, gone={pid})
    assert pid not in after
    rerun = parse_time(killed["started_at"]).timestamp() - killed_at   # attempt 2's claim
    assert rerun > 0, killed
    print(f"\n[workflow] chord of {HEADERS} cpu steps, a worker SIGKILLed mid-step: the step started again "
          f"{rerun:.1f} s and the workflow succeeded {took:.1f} s after the kill; the killed step run twice, "
          f"every other step and the body once")
