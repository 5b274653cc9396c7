"""Whole hosts killed, partitioned and paused: servers on hosts of their own (network namespaces with
their own hostnames, tests/faults/netns.py) on a private PostgreSQL on the lab's services address.

Across hosts a dead server is known only by its lease running out (``greenjobs.store.lease_seconds``),
so these tests check what single-host tests cannot: the others adopt a dead host's jobs after the lease
and run them to the end; a server cut off, or frozen, past its lease cannot record an outcome for a job
another server adopted; and every accepted job ends once (at-least-once: an adopted job runs twice,
its result is the adopter's).  Each prints the failover time it measured."""
from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.helpers import E2E_HANDLERS, wait_until
from tests.faults import netns
from tests.faults.pg_cluster import PgCluster
from tests.support import child_env, free_port, write_ini

LEASE = 4.0
TOKEN = "lab-token-0123456789abcdef"
APP = {**E2E_HANDLERS, "greenjobs.workers.cpu": 0, "greenjobs.store.lease_seconds": LEASE,
       "greenjobs.shutdown.grace": 0.5, "greenjobs.auth.tokens": f"{TOKEN}:admin", "greenjobs.pool.size": 200}

pytestmark = pytest.mark.skipif(not netns.available() or not PgCluster.available(),
                                reason="needs root, iproute2, unshare and PostgreSQL's initdb")


class LabServer:
    """pserve on a lab host, reached at the host's address with the lab's token."""

    def __init__(self, host: netns.Host, folder, store_url: str):
        self.host = host
        self.port = free_port()
        self.url = f"http://{host.address}:{self.port}"
        self.ini = write_ini(folder / host.name, {**APP, "greenjobs.store.url": store_url},
                             server={"host": host.address, "port": self.port})
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {TOKEN}"
        env = child_env()
        with open(self.ini.parent / "server.log", "ab") as log:
            self.proc = host.run([sys.executable, "-m", "pyramid.scripts.pserve", str(self.ini)], self.ini.parent,
                                 log, env)
        wait_until(self.healthy, 60, message=f"the server on {host.name}")

    @property
    def pid(self) -> int:
        return self.proc.pid            # ip netns exec, unshare and sh all exec: this is pserve

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"pserve on {self.host.name} exited:\n{self.log()}")
        try:
            return self.http.get(self.url + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return (self.ini.parent / "server.log").read_text(errors="replace")

    def post(self, path, body):
        return self.http.post(self.url + path, json=body, timeout=30)

    def get(self, path, timeout=30):
        return self.http.get(self.url + path, timeout=timeout)

    def batch(self, n: int, pause: float) -> list[str]:
        response = self.post("/jobs/batch", {"jobs": [{"handler": "e2e.pid", "kwargs": {"pause": pause}}] * n})
        assert response.status_code == 202, response.text
        return response.json()["ids"]

    def metric(self, name: str) -> float:
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


@pytest.fixture
def lab(tmp_path):
    lab = netns.Lab().open()
    # not under tmp_path: its parents are root's alone, and the cluster runs as the postgres user
    pg = PgCluster(Path(tempfile.mkdtemp(prefix="greenjobs-pg-")), listen=lab.services)
    try:
        pg.init()
        lab.pg = pg
        yield lab
    finally:
        lab.close()
        pg.destroy()


def servers(lab, tmp_path, *names) -> list[LabServer]:
    return [LabServer(lab.host(name), tmp_path, lab.pg.url) for name in names]


def jobs(srv: LabServer, ids: list[str]) -> dict[str, dict]:
    """The jobs as ``srv`` reads them from the ledger, 200 per request."""
    found = {}
    for i in range(0, len(ids), 200):
        for job_id in ids[i:i + 200]:
            found[job_id] = srv.get(f"/jobs/{job_id}").json()
    return found


def wait_all_succeeded(srv: LabServer, ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        seen = jobs(srv, ids)
        left = [j for j in seen.values() if j["state"] != "succeeded"]
        if not left:
            return seen
        assert not [j for j in left if j["state"] in ("failed", "cancelled")], left[:3]
        assert time.monotonic() < deadline, f"{len(left)} of {len(ids)} not succeeded: {left[:3]}"
        time.sleep(0.5)


def test_a_killed_host_s_jobs_are_finished_by_the_others_after_the_lease(lab, tmp_path):
    a, b, c = servers(lab, tmp_path, "ha", "hb", "hc")
    ids = []
    for srv in (a, b, c, a, b, c):                   # 600 jobs round-robin: each server runs its share
        ids += srv.batch(100, pause=3.0)
    wait_until(lambda: a.get("/health").json()["pool"]["busy"] >= 150, 30, message="a running its share")
    killed_at = time.monotonic()
    a.host.signal_all(signal.SIGKILL)                # the whole host: every process, no cleanup
    done = wait_all_succeeded(b, ids, LEASE + 60)
    failover = time.monotonic() - killed_at
    ran_by = [j["result"] for j in done.values()]
    adopted = [j for j in done.values() if j["attempts"] == 2]
    print(f"\n[host killed] {len(ids)} jobs, {len(adopted)} adopted from the dead host; all done "
          f"{failover:.1f} s after the kill (lease {LEASE} s, jobs of 3 s)")
    assert set(ran_by) <= {b.pid, c.pid} | {a.pid}
    assert ran_by.count(b.pid) > 0 and ran_by.count(c.pid) > 0
    assert len(adopted) >= 150 and all(j["result"] in (b.pid, c.pid) for j in adopted)
    assert all(j["attempts"] in (1, 2) for j in done.values())
    assert failover < LEASE + 3.0 + 30, failover     # lease + one job + a generous margin for a loaded machine


@pytest.mark.parametrize("fault", ["partition", "pause"])
def test_a_host_cut_off_or_frozen_past_its_lease_cannot_record_its_outcomes(lab, tmp_path, fault):
    a, b = servers(lab, tmp_path, "ha", "hb")
    ids = a.batch(20, pause=6.0)                     # they start on a (the fast path) and run 6 s
    wait_until(lambda: a.get("/health").json()["pool"]["busy"] == 20, 30, message="a running all 20")
    started = time.monotonic()
    if fault == "partition":
        a.host.partition()
    else:
        a.host.signal_all(signal.SIGSTOP)
    try:
        # b adopts after a's lease and runs them again (6 s); a finishes its own meanwhile, unrecorded
        done = wait_all_succeeded(b, ids, LEASE + 60)
        failover = time.monotonic() - started
    finally:
        if fault == "partition":
            a.host.heal()
        else:
            a.host.signal_all(signal.SIGCONT)
    print(f"\n[{fault}] 20 jobs of 6 s re-run and recorded by the other server {failover:.1f} s after the fault"
          f" (lease {LEASE} s)")
    assert {j["result"] for j in done.values()} == {b.pid}, done        # the adopter's results, every one
    assert {j["attempts"] for j in done.values()} == {2}
    # back in touch, a learns its leases are gone: it stops what still runs or its late outcomes are refused
    wait_until(lambda: a.healthy() and a.get("/health").json()["pool"]["busy"] == 0, 90, message="a's slots freed")
    after = jobs(b, ids)
    assert all(after[i]["result"] == b.pid and after[i]["attempts"] == 2 for i in ids), "a overwrote an outcome"
    rejected = a.metric("greenjobs_outcomes_rejected_total")
    stopped = a.log().count("our lease was lost")
    print(f"[{fault}] on a: {rejected:.0f} late outcomes refused, {stopped} runs stopped when it saw its lease lost")
    assert rejected + stopped >= 1
