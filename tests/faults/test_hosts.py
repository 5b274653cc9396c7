"""Whole hosts killed, partitioned and paused: servers on hosts of their own (network namespaces with
their own hostnames, tests/faults/netns.py) on a private PostgreSQL on the lab's services address.

Across hosts a dead server is known only by its lease running out (``greenjobs.store.lease_seconds``),
so these tests check what single-host tests cannot: the others adopt a dead host's jobs after the lease
and run them to the end; a server cut off, or frozen, past its lease cannot record an outcome for a job
another server adopted; and every accepted job ends once (at-least-once: an adopted job runs twice,
its result is the adopter's).  Each prints the failover time it measured."""
from __future__ import annotations

import configparser
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.helpers import E2E_HANDLERS, wait_until
from tests.faults import netns
from tests.faults.ledger import Ledger
from tests.faults.pg_cluster import PgCluster
from tests.faults.rabbit_node import RabbitNode, find_script
from tests.support import child_env, free_port, write_ini

LEASE = 4.0
TOKEN = "lab-token-0123456789abcdef"
HANDLERS = {"greenjobs.handlers": E2E_HANDLERS["greenjobs.handlers"] + " tests.faults.fault_handlers"}
APP = {**HANDLERS, "greenjobs.workers.cpu": 0, "greenjobs.store.lease_seconds": LEASE,
       "greenjobs.shutdown.grace": 0.5, "greenjobs.auth.tokens": f"{TOKEN}:admin", "greenjobs.pool.size": 200}

pytestmark = pytest.mark.skipif(not netns.available() or not PgCluster.available(),
                                reason="needs root, iproute2, unshare and PostgreSQL's initdb")


class LabServer:
    """pserve on a lab host, reached at the host's address with the lab's token."""

    def __init__(self, host: netns.Host, folder, store_url: str, app: dict | None = None, env: dict | None = None):
        self.host = host
        self.port = free_port()
        self.url = f"http://{host.address}:{self.port}"
        self.ini = write_ini(folder / host.name, {**APP, "greenjobs.store.url": store_url, **(app or {})},
                             server={"host": host.address, "port": self.port})
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {TOKEN}"
        env = {**child_env(), **(env or {})}
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
        return self.submit([{"handler": "e2e.pid", "kwargs": {"pause": pause}}] * n)["ids"]

    def submit(self, specs: list[dict]) -> dict:
        """POST /jobs/batch: the answer's body (ids, batch id)."""
        response = self.post("/jobs/batch", {"jobs": specs})
        assert response.status_code == 202, response.text
        return response.json()

    def wait_batch(self, batch_id: str, timeout: float) -> dict:
        """GET /batches/{id}?wait= until it is done (or ``timeout``); its last counts."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.get(f"/batches/{batch_id}?wait=20", timeout=40).json()
            if info["done"] or time.monotonic() > deadline:
                return info

    def metric(self, name: str) -> float:
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


class LabWorker:
    """``greenjobs-worker config.ini`` (cpu worker processes under a supervisor) on a lab host.  Its ini has
    the broker's URL and no store: a worker host needs no database credentials, and never opens a store."""

    def __init__(self, host: netns.Host, folder, broker_url: str, processes: int, env: dict | None = None):
        self.host = host
        ini = write_ini(folder / host.name, {**HANDLERS, "greenjobs.broker.url": broker_url})
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str
        parser.read(ini)
        del parser["app:main"]["greenjobs.store.url"]
        with open(ini, "w") as fh:
            parser.write(fh)
        self.folder = ini.parent
        with open(self.folder / "worker.log", "ab") as log:
            self.proc = host.run([sys.executable, "-m", "greenjobs.pool.cli", str(ini), "--processes", str(processes)],
                                 self.folder, log, {**child_env(), **(env or {})})
        wait_until(lambda: self.log().count(" consuming ") >= processes, 60, message=f"the workers on {host.name}")

    def log(self) -> str:
        if self.proc.poll() is not None:
            raise RuntimeError(f"greenjobs-worker on {self.host.name} exited:\n"
                               + (self.folder / "worker.log").read_text(errors="replace"))
        return (self.folder / "worker.log").read_text(errors="replace")

    def opened_a_store(self) -> bool:
        return any(self.folder.rglob("*.sqlite*"))


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


@pytest.fixture
def rabbit_lab(lab, tmp_path):
    """The lab with a private RabbitMQ node on its services address too (``lab.rabbit``)."""
    if find_script("rabbitmq-server") is None:
        pytest.skip("needs rabbitmq-server")
    node = RabbitNode(tmp_path / "rabbit", listen=lab.services)
    try:
        node.start()
        lab.rabbit = node
        yield lab
    finally:
        lab.close()                 # the hosts first: nothing left to reconnect to the node as it stops
        node.close()


def servers(lab, tmp_path, *names, **kw) -> list[LabServer]:
    return [LabServer(lab.host(name), tmp_path, lab.pg.url, **kw) for name in names]


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


def cluster(lab, tmp_path, names, processes=2):
    """Servers on hosts ``names`` and a worker host ``hw`` with ``processes`` cpu workers, on the lab's
    PostgreSQL and RabbitMQ, every run logged to one executions log; returns (servers, worker, ledger)."""
    env = {"GREENJOBS_TEST_EXECUTIONS": str(tmp_path / "executions.log")}
    srvs = servers(lab, tmp_path, *names, app={"greenjobs.broker.url": lab.rabbit.url, "greenjobs.pool.size": 400},
                   env=env)
    worker = LabWorker(lab.host("hw"), tmp_path, lab.rabbit.url, processes, env=env)
    return srvs, worker, Ledger(tmp_path)


def test_30000_jobs_round_robin_on_3_servers_each_complete_once(rabbit_lab, tmp_path):
    srvs, worker, ledger = cluster(rabbit_lab, tmp_path, ["ha", "hb", "hc"])
    specs = [{"handler": "fault.io", "kwargs": {"seconds": 0}}] * 450 + \
            [{"handler": "fault.cpu", "kwargs": {"seconds": 0}}] * 50
    started = time.monotonic()
    batches = []
    for i in range(60):                             # 27,000 io + 3,000 cpu jobs, one batch to each server in turn
        srv = srvs[i % 3]
        answer = srv.submit(specs)
        ledger.accepted.update(answer["ids"])
        batches.append((srv, answer["batch"], answer["ids"]))
    submitted = time.monotonic() - started
    for srv, batch_id, ids in batches:
        info = srv.wait_batch(batch_id, 300)
        assert info["done"] and info["counts"]["succeeded"] == len(ids), info
    elapsed = time.monotonic() - started
    final = {job_id: {"state": "succeeded"} for _, _, ids in batches for job_id in ids}
    report = ledger.report(final)
    done_by = ledger.done_by()
    print(f"\n[30,000 round-robin] submitted in {submitted:.1f} s, all succeeded {elapsed:.1f} s after the first; "
          f"completions per server {[done_by[s.pid] for s in srvs]}, on the worker host "
          f"{sum(done_by.values()) - sum(done_by[s.pid] for s in srvs)}")
    assert len(ledger.accepted) == 30_000
    assert report == {"lost": set(), "stuck": set(), "duplicated": set(), "unexpected": set()}, \
        {k: len(v) for k, v in report.items()}
    assert sum(done_by.values()) == 30_000          # no fault: every job ran to its end exactly once
    assert all(done_by[s.pid] >= 1000 for s in srvs), done_by        # each server ran a share of the io jobs
    assert sum(done_by[s.pid] for s in srvs) == 27_000               # and the cpu jobs ran on the worker host
    assert not worker.opened_a_store()


def test_a_killed_host_s_jobs_are_finished_by_the_others_after_the_lease(rabbit_lab, tmp_path):
    (a, b, c), worker, ledger = cluster(rabbit_lab, tmp_path, ["ha", "hb", "hc"])
    cpu = a.submit([{"handler": "fault.cpu", "kwargs": {"seconds": 0.1}}] * 100)["ids"]
    ledger.accepted.update(cpu)
    ids = []
    for srv in (a, b, c) * 3 + (a,):                # 1,000 io jobs round-robin: each server runs its share
        ids += srv.batch(100, pause=3.0)
    wait_until(lambda: a.get("/health").json()["pool"]["busy"] >= 300, 30, message="a running its share")
    cpu_left = sum(1 for j in jobs(b, cpu).values() if j["state"] != "succeeded")
    killed_at = time.monotonic()
    a.host.signal_all(signal.SIGKILL)                # the whole host: every process, no cleanup
    done = wait_all_succeeded(b, ids, LEASE + 60)
    failover = time.monotonic() - killed_at
    cpu_done = wait_all_succeeded(c, cpu, 60)
    cpu_failover = time.monotonic() - killed_at
    ran_by = [j["result"] for j in done.values()]
    adopted = [j for j in done.values() if j["attempts"] == 2]
    print(f"\n[host killed] {len(ids)} io jobs, {len(adopted)} adopted from the dead host; all done "
          f"{failover:.1f} s after the kill (lease {LEASE} s, jobs of 3 s); {cpu_left} of 100 cpu jobs "
          f"(0.1 s each, 2 worker processes) were left at the kill, all done {cpu_failover:.1f} s after it")
    assert set(ran_by) <= {b.pid, c.pid} | {a.pid}
    assert ran_by.count(b.pid) > 0 and ran_by.count(c.pid) > 0
    assert len(adopted) >= 300 and all(j["result"] in (b.pid, c.pid) for j in adopted)
    assert all(j["attempts"] in (1, 2) for j in done.values())
    assert failover < LEASE + 3.0 + 30, failover     # lease + one job + a generous margin for a loaded machine
    assert cpu_left >= 20                            # the kill caught cpu jobs in flight
    assert all(j["attempts"] in (1, 2) for j in cpu_done.values())
    report = ledger.report({job_id: {"state": "succeeded"} for job_id in cpu})
    assert not report["lost"] and not report["stuck"], report


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

    def told() -> tuple[float, int]:
        # a slot is freed before its outcome is stored: an outcome a could not store while cut off is retried
        # by its maintenance loop once the ledger answers again, and only then refused
        return a.metric("greenjobs_outcomes_rejected_total"), a.log().count("our lease was lost")

    wait_until(lambda: sum(told()) >= len(ids), 90, message="a refusing every late outcome or stopping its run")
    after = jobs(b, ids)
    assert all(after[i]["result"] == b.pid and after[i]["attempts"] == 2 for i in ids), "a overwrote an outcome"
    rejected, stopped = told()
    print(f"[{fault}] on a: {rejected:.0f} late outcomes refused, {stopped} runs stopped when it saw its lease lost")
