"""Several processes of one ini on one host, as ``gunicorn -k gevent -w 2 --paste config.ini`` makes them:
each serves requests with its own runtime on the shared SQLite ledger, a long-poll answers whichever
process ran the job, and the host runs one set of cpu workers (``greenjobs.workers.cpu``), not one per
process, taken over by another process when the one that supervised them dies."""
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.e2e.helpers import E2E_HANDLERS, QUICK_STOP, wait_until
from tests.support import child_env, free_port, write_ini

pytest.importorskip("gunicorn")


class Gunicorn:
    def __init__(self, ini, workers: int = 2):
        self.ini = ini
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = ini.parent / "gunicorn.log"
        env = child_env()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(workers),
                                          "--paste", str(ini), "-b", f"127.0.0.1:{self.port}",
                                          "--graceful-timeout", "5", "--no-control-socket"],
                                         cwd=ini.parent, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_until(self.healthy, 60, message="gunicorn serving")

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return requests.get(self.url + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kw):
        return requests.get(self.url + path, timeout=kw.pop("timeout", 90), **kw)   # a new connection each time

    def submit(self, handler: str, **fields) -> dict:
        response = requests.post(self.url + "/jobs", json={"handler": handler, **fields}, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def gunicorn(tmp_path):
    started = []

    def make(app):
        g = Gunicorn(write_ini(tmp_path / "gunicorn", app))
        started.append(g)
        return g

    yield make
    for g in started:
        g.stop()
    # the cpu workers of a process killed by a test die with it (PDEATHSIG); none may outlive the test
    wait_until(lambda: not cpu_workers(tmp_path / "gunicorn" / "config.ini"), 30, message="no cpu workers left")


def cpu_workers(ini) -> list[int]:
    """Live cpu worker processes started for ``ini``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{pid}/stat") as fh:
                zombie = fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if b"greenjobs.pool.cpu.worker" in cmdline and str(ini).encode() in cmdline and not zombie:
            found.append(int(pid))
    return found


def servers(g) -> list[dict]:
    return g.get("/servers").json()["servers"]


APP = {**E2E_HANDLERS, **QUICK_STOP, "greenjobs.workers.cpu": 2, "greenjobs.store.lease_seconds": 3}


def test_two_gunicorn_workers_share_one_ledger_and_one_set_of_cpu_workers(gunicorn):
    g = gunicorn(APP)
    wait_until(lambda: len([s for s in servers(g) if s["alive"]]) == 2, 30, message="both processes heartbeating")
    # supervised by one process (each view is its process's last read of the table: wait for a settled one)
    wait_until(lambda: sorted(s["cpu_workers"] for s in servers(g)) == [0, 2], 30, message="one supervisor of two")
    assert len(cpu_workers(g.ini)) == 2
    # a long-poll answers whichever process ran the job (new connections land on either process)
    jobs = [g.submit("e2e.pid", kwargs={"pause": 1.0}) for _ in range(6)]
    ran_by = set()
    for job in jobs:
        asked = time.monotonic()
        seen = g.get(f"/jobs/{job['id']}?wait=60").json()
        assert seen["state"] == "succeeded", seen
        assert time.monotonic() - asked < 45, "a cross-process long-poll answered only at its timeout"
        ran_by.add(seen["result"])
    assert ran_by <= {s["pid"] for s in servers(g)}
    done = g.get(f"/jobs/{g.submit('cpu.pbkdf2', kwargs={'iterations': 1000})['id']}?wait=60").json()
    assert done["state"] == "succeeded", done


def test_another_process_takes_over_the_cpu_workers_when_their_supervisor_dies(gunicorn):
    g = gunicorn(APP)

    def supervisor_pid():
        return next((s["pid"] for s in servers(g) if s["alive"] and s["cpu_workers"] == 2), None)
    holder = wait_until(supervisor_pid, 30, message="a process supervising two cpu workers")
    before = set(cpu_workers(g.ini))
    os.kill(holder, signal.SIGKILL)        # gunicorn boots a new process; its cpu workers die with it
    wait_until(lambda: not (before & set(cpu_workers(g.ini))), 30, message="the dead supervisor's workers gone")
    wait_until(lambda: len(cpu_workers(g.ini)) == 2, 30, message="two cpu workers again")
    time.sleep(2.5)                        # a few maintenance ticks: no second set may start
    assert len(cpu_workers(g.ini)) == 2
    job = g.submit("cpu.pbkdf2", kwargs={"iterations": 1000})
    assert g.get(f"/jobs/{job['id']}?wait=60").json()["state"] == "succeeded"
    assert "takes over if that one stops" in g.log()


def test_sigterm_under_gunicorn_hands_running_jobs_back(gunicorn, tmp_path):
    """gunicorn never tells the app it stops: greenjobs shuts down as its worker process exits, so a running
    job is handed back to the ledger at once (not left running until a lease expires)."""
    g = gunicorn({**E2E_HANDLERS, **QUICK_STOP, "greenjobs.workers.cpu": 0})
    job = g.submit("e2e.pid", kwargs={"pause": 60})
    wait_until(lambda: g.get(f"/jobs/{job['id']}").json()["state"] == "running", 30, message="running")
    g.stop()
    assert g.proc.returncode == 0, g.log()[-3000:]
    import sqlite3
    with sqlite3.connect(tmp_path / "gunicorn" / "var" / "greenjobs.sqlite") as conn:
        state, owner, attempts = conn.execute("SELECT state, lease_owner, attempts FROM jobs WHERE id = ?",
                                              (job["id"],)).fetchone()
    assert (state, owner, attempts) == ("queued", None, 1), (state, owner, attempts, g.log()[-3000:])
    assert "shutting the job runtime down" in g.log()
