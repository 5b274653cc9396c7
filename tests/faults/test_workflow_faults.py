"""Workflows across faults, on both ledgers: two servers share one; the one that accepted a chord is SIGKILLed
while its header jobs run.  The other adopts them, and the workflow ends as if nothing happened: the right
result, the body run exactly once, each header counted once (a header whose end the dead server recorded
is not re-run; one it was still running is run again, and counted once)."""
import time
from collections import Counter

import pytest

from tests.e2e.helpers import QUICK_STOP, wait_until

pytestmark = pytest.mark.faults

HEADERS = 20


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        return {"greenjobs.store.url": f"sqlite:///{tmp_path}/shared.sqlite"}
    return {"greenjobs.store.url": request.getfixturevalue("postgres").database_url("workflows")}


def test_a_chord_survives_the_sigkill_of_the_server_that_took_it(make_server, ledger, tmp_path):
    executions = tmp_path / "executions.log"
    app = {**QUICK_STOP, **ledger, "greenjobs.workers.cpu": 0, "greenjobs.store.lease_seconds": 6,
           "greenjobs.handlers": "greenjobs.handlers.builtin tests.workflow_handlers"}
    env = {"GREENJOBS_TEST_EXECUTIONS": str(executions)}
    a = make_server(app=app, name="a", env=env)
    b = make_server(app=app, name="b", env=env)
    header = [{"handler": "wf.nap", "kwargs": {"x": i, "seconds": 0.2 + 0.1 * i}} for i in range(HEADERS)]
    made = a.post("/workflows", {"chain": [{"chord": {"header": header, "body": {"handler": "wf.total"}}},
                                           {"handler": "wf.add", "args": [1000]}]})
    assert made.status_code == 202, made.text
    workflow = made.json()["id"]
    wait_until(lambda: b.get(f"/workflows/{workflow}").json()["counts"].get("succeeded", 0) >= 3, 30,
               message="some headers done")
    a.kill()                                            # SIGKILL: its running headers are cut off mid-nap
    killed_at = time.time()
    wait_until(lambda: b.get(f"/workflows/{workflow}").json()["state"] != "running", 60, message="workflow ended")
    done = b.get(f"/workflows/{workflow}").json()
    took = time.time() - killed_at
    assert done["state"] == "succeeded", done
    assert done["result"] == sum(range(HEADERS)) + 1000
    *headers, body, last = done["jobs"]
    lines = [line.split() for line in executions.read_text().splitlines()]
    runs = Counter(job_id for job_id, *_ in lines)
    adopted = {job_id for job_id, _, _, pid in lines if int(pid) == b.proc.pid} & {h["id"] for h in headers}
    assert runs[body["id"]] == 1, "the body ran once"
    assert all(runs[h["id"]] >= 1 for h in headers)
    rerun = sum(1 for h in headers if runs[h["id"]] > 1)
    body_job = b.get(f"/jobs/{body['id']}").json()
    assert body_job["attempts"] == 1 and body_job["args"] == [list(range(HEADERS))]
    assert adopted, "the surviving server ran some of the dead one's headers"
    print(f"\n[workflow] chord of {HEADERS} on two servers, the accepting one SIGKILLed: succeeded {took:.1f} s "
          f"after the kill; {len(adopted)} header(s) run by the survivor, {rerun} twice, the body once")
