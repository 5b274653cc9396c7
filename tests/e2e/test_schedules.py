"""Schedules across real servers: two pserve on one ledger fire each slot of an every-second schedule once,
also while one is SIGKILLed and restarted; a schedule outlives a restart of every server, and after the
whole cluster was down, missed = once fires one catch-up job."""
import time
from datetime import datetime

import pytest

from tests.e2e.helpers import E2E_HANDLERS, QUICK_STOP, wait_until
from tests.support import ServerProcess

BASE = {**E2E_HANDLERS, **QUICK_STOP, "greenjobs.workers.cpu": 0, "greenjobs.store.lease_seconds": 6}


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def jobs_of(srv, name) -> list[dict]:
    return srv.get(f"/jobs?schedule={name}&limit=500").json()["jobs"]


def slots_of(srv, name) -> list[float]:
    return sorted(epoch(j["schedule"]["fire_at"]) for j in jobs_of(srv, name))


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        return {"greenjobs.store.url": f"sqlite:///{tmp_path}/shared.sqlite"}
    return {"greenjobs.store.url": request.getfixturevalue("postgres").database_url("schedules")}


def test_two_servers_fire_every_slot_once_while_one_is_killed_and_restarted(make_server, ledger):
    a = make_server(app={**BASE, **ledger}, name="a")
    b = make_server(app={**BASE, **ledger}, name="b")
    created = a.post("/schedules", {"name": "tick", "handler": "echo", "every": 1})
    assert created.status_code == 201, created.text
    wait_until(lambda: len(jobs_of(b, "tick")) >= 4, 20, message="slots fired")
    a.kill()                                            # SIGKILL: mid-run, no cleanup
    time.sleep(2.5)
    restarted = ServerProcess(a.ini).start()
    try:
        time.sleep(4)
        assert restarted.post("/schedules/tick/pause", None).status_code == 200
    finally:
        restarted.stop()
    time.sleep(0.5)
    slots = slots_of(b, "tick")
    gaps = [later - earlier for earlier, later in zip(slots, slots[1:])]
    print(f"\n[schedule] {len(slots)} slots fired once each across a SIGKILL and a restart; gaps {set(gaps)}")
    assert len(slots) >= 10 and len(set(slots)) == len(slots)
    assert set(gaps) == {1.0}, gaps                     # every slot from the first to the last, none twice
    lags = sorted(epoch(j["created_at"]) - epoch(j["schedule"]["fire_at"]) for j in jobs_of(b, "tick"))
    print(f"[schedule] lag slot -> job made: p50 {lags[len(lags) // 2] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms")
    wait_until(lambda: all(j["state"] == "succeeded" for j in jobs_of(b, "tick")), 30, message="every job done")


def test_a_schedule_outlives_the_cluster_and_missed_once_fires_one_catch_up(make_server, tmp_path):
    app = {**BASE, "greenjobs.store.url": f"sqlite:///{tmp_path}/alone.sqlite", "greenjobs.schedules.grace": 1}
    srv = make_server(app=app, name="only")
    for name, missed in (("once", "once"), ("skip", "skip")):
        made = srv.post("/schedules", {"name": name, "handler": "echo", "every": 2, "missed": missed})
        assert made.status_code == 201, made.text
    wait_until(lambda: len(jobs_of(srv, "once")) >= 2, 20, message="slots fired")
    srv.stop()                                          # the whole cluster is down for five slots or so
    down_at = time.time()
    time.sleep(10)
    back = ServerProcess(srv.ini).start()
    try:
        assert back.get("/schedules/once").json()["missed"] == "once"     # stored in the ledger, not in memory
        up_at = time.time()
        wait_until(lambda: slots_of(back, "once")[-1] > up_at + 1, 20, message="on-time slots again")
        late = {name: [j for j in jobs_of(back, name)
                       if epoch(j["created_at"]) - epoch(j["schedule"]["fire_at"]) > 1.5] for name in ("once", "skip")}
        in_gap = {name: [s for s in slots_of(back, name) if down_at < s < up_at - 1.5] for name in ("once", "skip")}
    finally:
        back.stop()
    print(f"\n[schedule] after {up_at - down_at:.1f} s down: missed=once fired {len(late['once'])} late job(s), "
          f"missed=skip {len(late['skip'])}")
    assert len(late["once"]) == 1, late["once"]         # one catch-up job for all the slots missed
    assert late["skip"] == [] and in_gap["skip"] == []
    assert len(in_gap["once"]) <= 1
