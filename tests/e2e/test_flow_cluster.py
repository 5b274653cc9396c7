"""Flow control holds across servers: two real pserve processes share one ledger (a SQLite file; PostgreSQL)
and submissions go to both.  A 5/s rate limit spaces the starts of 20 jobs whichever server runs them;
max_running=2 holds under 50 jobs; the slot of a SIGKILLed runner is freed by its lease; 50 concurrent
submissions of one unique_key make one job."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.helpers import QUICK_STOP, wait_until

HANDLERS = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.flow_handlers"}


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        return {"greenjobs.store.url": f"sqlite:///{tmp_path}/shared.sqlite"}
    return {"greenjobs.store.url": request.getfixturevalue("postgres").database_url("flow")}


@pytest.fixture
def pair(make_server, ledger, tmp_path):
    """Two servers on one ledger, both logging their jobs' starts and ends to one file."""
    log = tmp_path / "executions.log"
    app = {**QUICK_STOP, **HANDLERS, **ledger, "greenjobs.workers.cpu": 0, "greenjobs.store.lease_seconds": 3}
    env = {"GREENJOBS_TEST_EXECUTIONS": str(log)}
    return make_server(app=app, name="a", env=env), make_server(app=app, name="b", env=env), log


def records(log) -> list[tuple[str, str, float, int]]:
    out = []
    for line in (log.read_text() if log.exists() else "").splitlines():
        what, job_id, at, pid = line.split()
        out.append((what, job_id, float(at), int(pid)))
    return out


def test_a_rate_limit_holds_across_two_servers(pair):
    a, b, log = pair
    ids = [(a if i % 2 else b).submit("flow.limited", kwargs={"n": i})["id"] for i in range(20)]
    done = [(b if i % 2 else a).wait(job_id, 60) for i, job_id in enumerate(ids)]
    assert [j["state"] for j in done] == ["succeeded"] * 20
    starts = sorted(at for what, _, at, _ in records(log) if what == "start")
    pids = {pid for what, _, _, pid in records(log) if what == "start"}
    assert len(starts) == 20, "each job started once"
    # 5/s, spaced: any 6 consecutive starts span at least 1 s (less a little for the two servers' timers)
    spans = [starts[k + 5] - starts[k] for k in range(len(starts) - 5)]
    gaps = [y - x for x, y in zip(starts, starts[1:])]
    assert min(spans) >= 1.0 - 0.05, spans
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    print(f"\n[rate] 5/s over 20 jobs on two servers ({len(pids)} ran some): observed {rate:.3f}/s, gaps "
          f"min {min(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms")
    assert rate <= 5.0 * 1.02


def test_max_running_holds_across_two_servers(pair):
    a, b, log = pair
    for srv in (a, b):
        made = srv.post("/jobs/batch", {"jobs": [{"handler": "flow.capped", "kwargs": {"seconds": 0.1}}] * 25})
        assert made.status_code == 202, made.text
    wait_until(lambda: sum(1 for r in records(log) if r[0] == "end") == 50, 90, message="50 jobs ended")
    running, most, by = 0, 0, set()
    for what, _, _, pid in sorted(records(log), key=lambda r: (r[2], r[0] == "start")):   # an end before a start
        running += 1 if what == "start" else -1
        most = max(most, running)
        by.add(pid)
    assert most == 2, most
    assert running == 0
    print(f"\n[max_running] 50 jobs of max_running=2 on two servers: at most {most} at once, run by {len(by)} server(s)")


def test_the_slot_of_a_killed_runner_is_freed_by_its_lease(pair):
    a, b, log = pair
    held = [a.submit("flow.capped", kwargs={"seconds": 60})["id"] for _ in range(2)]
    wait_until(lambda: sum(1 for r in records(log) if r[0] == "start") == 2, 20, message="two running on a")
    waiting = b.submit("flow.capped", kwargs={"seconds": 0.1}, priority=9)     # first in line once a slot is free
    time.sleep(0.5)
    assert b.get(f"/jobs/{waiting['id']}").json()["waiting"] == {"reason": "max_running"}
    a.kill()
    killed = time.time()
    ended = b.wait(waiting["id"], 30)
    assert ended["state"] == "succeeded", ended
    started = min(at for what, job_id, at, _ in records(log) if what == "start" and job_id == waiting["id"])
    print(f"\n[max_running] slot of a SIGKILLed runner freed: the waiting job started {started - killed:.1f} s "
          f"after the kill (lease 3 s)")
    assert started - killed < 3 + 5, "freed within the lease (plus a tick or two), not a long TTL"
    assert {b.get(f"/jobs/{i}").json()["state"] for i in held} <= {"running", "queued"}   # adopted, run again


def test_fifty_concurrent_submissions_of_one_unique_key_make_one_job(pair):
    a, b, _ = pair

    def send(i):
        return (a if i % 2 else b).post("/jobs", {"handler": "flow.capped", "kwargs": {"seconds": 2},
                                                 "unique_key": "report-42"})
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(send, range(50)))
    assert sorted({r.status_code for r in answers}) == [200, 202], [r.text for r in answers if r.status_code >= 300]
    assert sum(r.status_code == 202 for r in answers) == 1
    assert len({r.json()["id"] for r in answers}) == 1
    job_id = answers[0].json()["id"]
    assert a.wait(job_id, 30)["state"] == "succeeded"
    again = a.post("/jobs", {"handler": "flow.capped", "kwargs": {"seconds": 0}, "unique_key": "report-42"})
    assert again.status_code == 202 and again.json()["id"] != job_id, "once it ended, a new job"
