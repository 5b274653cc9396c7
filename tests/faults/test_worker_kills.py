"""Scenario 2: worker processes SIGKILLed mid-job, again and again, under 200 cpu jobs, on each broker."""
import os
import random
import signal
import time

import pytest

from tests.e2e.helpers import list_all, wait_until
from tests.e2e.test_cpu import alive, cpu_health, cpu_server, worker_pids  # noqa: F401 (fixture)
from tests.faults.ledger import Ledger

pytestmark = pytest.mark.faults

KILLS = 8


def running_pids(ledger: Ledger) -> dict[int, int]:
    """Worker pid -> attempt, for workers whose last recorded event is a start: inside a job right now."""
    last: dict[int, tuple[str, int]] = {}
    path = ledger.folder / "executions.log"
    for line in path.read_text().splitlines() if path.exists() else ():
        _job, attempt, event, pid = line.split()
        last[int(pid)] = (event, int(attempt))
    return {pid: attempt for pid, (event, attempt) in last.items() if event == "start"}


def test_repeated_worker_kills_mid_job_lose_nothing(cpu_server, broker_settings):
    # a job may lose at most KILLS attempts here, so the redelivery cap never fails one: all must succeed
    srv = cpu_server(2, **{"greenjobs.handlers": "greenjobs.handlers.builtin tests.faults.fault_handlers",
                           "greenjobs.workers.redeliveries": KILLS + 2})
    ledger = Ledger(srv.ini.parent)
    for _ in range(4):
        ledger.accept(srv.post("/jobs/batch", {"jobs": [{"handler": "fault.cpu", "kwargs": {"seconds": 0.1}}] * 50}))
    assert len(ledger.accepted) == 200
    rng = random.Random(7)
    killed = []
    while len(killed) < KILLS:
        def victim():      # a worker inside a job's first attempt, so that many jobs get hit
            live = worker_pids(srv)
            first = sorted(pid for pid, attempt in running_pids(ledger).items() if pid in live and attempt == 1)
            return rng.choice(first) if first else None
        pid = wait_until(victim, 60, interval=0.02, message="a worker inside a job")
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        wait_until(lambda: not alive(pid), 10, message=f"worker {pid} gone")
        time.sleep(0.2)
    states = lambda: {j["id"]: j for j in list_all(srv)}  # noqa: E731
    wait_until(lambda: all(s.get(j, {}).get("state") in ("succeeded", "failed", "cancelled")
                           for s in [states()] for j in ledger.accepted), 120, interval=0.5,
               message="every accepted job terminal")
    final = states()
    report = ledger.report(final)
    runs = ledger.executions()
    interrupted = {j for j, c in runs.items() if c["start"] > c["done"]}
    print({k: len(v) for k, v in report.items()}, "kills:", len(killed), "interrupted:", len(interrupted),
          "worker restarts:", cpu_health(srv)["worker_restarts"])
    assert not report["lost"] and not report["stuck"] and not report["unexpected"], report
    assert all(final[j]["state"] == "succeeded" for j in ledger.accepted), \
        {j: final[j]["state"] for j in ledger.accepted if final[j]["state"] != "succeeded"}
    # most kills landed mid-job (a job may end between the look and the kill)
    assert len(interrupted) >= KILLS // 2
    assert report["duplicated"] <= {j for j, c in runs.items() if c["start"] > 1}
    assert all(final[j]["attempts"] >= 2 for j in interrupted)
    assert cpu_health(srv)["worker_restarts"] >= KILLS
    wait_until(lambda: len(worker_pids(srv)) == 2 and not worker_pids(srv) & set(killed), 30,
               message="both workers replaced")


def test_workers_of_a_server_killed_while_they_start_do_not_linger(make_server):
    """SIGKILL of the server at once after it answers: its workers may still be importing; they must
    notice their parent is gone (PDEATHSIG asked for first, then the parent checked) and leave."""
    srv = make_server(app={"greenjobs.workers.cpu": 2, "greenjobs.shutdown.grace": 0.5}, name="early")
    ini = str(srv.ini).encode()
    srv.kill()

    def lingering():
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = fh.read()
            except OSError:
                continue
            if b"greenjobs.pool.cpu.worker" in cmdline and ini in cmdline and alive(int(pid)):
                found.append(int(pid))
        return found
    wait_until(lambda: not lingering(), 30, message="no worker of the killed server left")
