"""Process death and restart on the same ini: SIGKILL (at-least-once: every accepted job ends
terminal), SIGTERM (running jobs get the grace, the rest are left for the next start)."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from tests.e2e.helpers import (PROBLEM, QUICK_STOP, list_all, media_type, submit_batch, wait_batch, wait_job,
                               wait_until)
from tests.support import ServerProcess, stop_all

pytestmark = pytest.mark.e2e


@pytest.fixture
def restart():
    """``restart(srv)``: a new pserve on the very same ini file (same port, same store); stopped at teardown."""
    started = []

    def start_again(srv: ServerProcess) -> ServerProcess:
        again = ServerProcess(srv.ini)
        started.append(again)
        return again.start()

    yield start_again
    stop_all(started)


def store_rows(srv: ServerProcess) -> dict[str, tuple]:
    """id -> (state, attempts, lease_owner, finished_at), read from the SQLite file of a stopped server."""
    db = sqlite3.connect(Path(srv.ini).parent / "var" / "greenjobs.sqlite")
    try:
        return {row[0]: row[1:] for row in db.execute(
            "SELECT id, state, attempts, lease_owner, finished_at FROM jobs")}
    finally:
        db.close()


def batch_counts(srv, batch_id):
    return srv.get(f"/batches/{batch_id}", timeout=10).json()["counts"]


def test_sigkill_with_jobs_in_flight_then_restart_finishes_every_job(make_server, restart):
    srv = make_server(app={"greenjobs.pool.size": 100, "greenjobs.store.lease_seconds": 2, **QUICK_STOP})
    batch = submit_batch(srv, [{"handler": "sleep", "kwargs": {"seconds": 1}}] * 300)
    # kill once some jobs have finished and others are running or queued
    wait_until(lambda: (lambda c: c["succeeded"] >= 1 and c["running"] + c["queued"] >= 100)(
        batch_counts(srv, batch["batch"])), 60, interval=0.02, message="first jobs finished")
    srv.kill()
    assert srv.proc.returncode == -signal.SIGKILL
    before = store_rows(srv)
    interrupted = {i for i in batch["ids"] if before[i][0] in ("running", "queued")}
    assert interrupted, "the kill should leave running or queued jobs behind"

    again = restart(srv)
    final = wait_batch(again, batch["batch"], 120)
    assert final["total"] == 300
    assert final["counts"]["succeeded"] == 300, final["counts"]
    assert list_all(again, state="running") == [] and list_all(again, state="queued") == []
    jobs = {j["id"]: j for j in list_all(again)}
    assert set(jobs) == set(batch["ids"])
    assert all(jobs[i]["result"] == {"slept": 1} for i in batch["ids"])
    # the jobs that were running when the process died ran again (at-least-once)
    rerun = [i for i in interrupted if before[i][0] == "running"]
    assert all(jobs[i]["attempts"] >= 2 for i in rerun), [jobs[i]["attempts"] for i in rerun]
    # jobs finished before the kill were not run again
    finished = [i for i in batch["ids"] if before[i][0] == "succeeded"]
    assert all(jobs[i]["attempts"] == 1 for i in finished)
    assert "adopted" in again.log()


def test_sigkill_while_clients_submit_every_accepted_job_ends_terminal(make_server, restart):
    srv = make_server(app={"greenjobs.pool.size": 50, "greenjobs.store.lease_seconds": 2, **QUICK_STOP})
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def submitter(n):
        session = requests.Session()
        for i in range(400):
            if stop.is_set():
                break
            try:
                response = session.post(srv.url + "/jobs", json={"handler": "sleep", "kwargs": {"seconds": 0.3}},
                                        timeout=10)
            except requests.RequestException:
                break               # the server is gone
            if response.status_code == 202:
                with lock:
                    accepted.append(response.json()["id"])
        session.close()

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(accepted) >= 150, 60, interval=0.01, message="150 jobs accepted")
        srv.kill()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    with lock:
        ids = list(accepted)

    again = restart(srv)
    wait_until(lambda: not list_all(again, state="running") and not list_all(again, state="queued"), 90,
               interval=0.2, message="no job left running or queued")
    jobs = {j["id"]: j for j in list_all(again)}
    missing = [i for i in ids if i not in jobs]
    assert not missing, f"{len(missing)} jobs answered 202 are not in the store"
    states = {jobs[i]["state"] for i in ids}
    assert states == {"succeeded"}, states


def sigterm_with_jobs_in_flight(make_server):
    """A pool of 10 with 3 short jobs (end within the 1.5 s grace) and 10 long ones (7 running, 3
    queued), then SIGTERM; returns (server, short ids, long ids) once the process has exited 0."""
    srv = make_server(app={"greenjobs.pool.size": 10, "greenjobs.shutdown.grace": 1.5})
    short = [srv.submit("sleep", kwargs={"seconds": 0.5})["id"] for _ in range(3)]
    long = [srv.submit("sleep", kwargs={"seconds": 4})["id"] for _ in range(10)]
    srv.http.close()
    srv.signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(60)
    except subprocess.TimeoutExpired:
        srv.kill()
        pytest.fail("pserve did not exit within 60 s of SIGTERM")
    assert code == 0, srv.log()[-2000:]
    return srv, short, long


def test_sigterm_gives_running_jobs_the_grace_then_requeues_the_rest(make_server):
    srv, short, long = sigterm_with_jobs_in_flight(make_server)
    rows = store_rows(srv)
    log = srv.log()
    # jobs that can end within the grace do end
    assert [rows[i][0] for i in short] == ["succeeded"] * 3, ([rows[i] for i in short], log)
    # the others are not waited for: they are handed back, unleased; an interrupted start stays counted (the
    # README: attempts counts every start), the 3 that never started have none
    assert [rows[i][0] for i in long] == ["queued"] * 10, ([rows[i] for i in long], log)
    assert all(rows[i][2] is None for i in long), "no lease may be left to the stopped process"
    attempts = sorted(rows[i][1] for i in long)
    assert set(attempts) <= {0, 1} and attempts.count(1) >= 7, [rows[i] for i in long]


def test_after_sigterm_the_next_start_finishes_every_job(make_server, restart):
    srv, short, long = sigterm_with_jobs_in_flight(make_server)
    again = restart(srv)
    for job_id in short + long:
        job = wait_job(again, job_id, 60)
        assert job["state"] == "succeeded", job
    jobs = {j["id"]: j for j in list_all(again)}
    assert {jobs[i]["state"] for i in short + long} == {"succeeded"}
    assert all(jobs[i]["result"] == {"slept": 4} for i in long)
    assert all(jobs[i]["result"] == {"slept": 0.5} for i in short)
    assert list_all(again, state="running") == [] and list_all(again, state="queued") == []


def test_sigterm_answers_open_long_polls(make_server):
    """Long-polls parked on unfinished jobs are answered on SIGTERM, and do not hold up the exit."""
    srv = make_server(app={"greenjobs.shutdown.grace": 0.5}, server={"stop_timeout": 120})
    job = srv.submit("sleep", kwargs={"seconds": 60})
    batch = submit_batch(srv, [{"handler": "sleep", "kwargs": {"seconds": 60}}])
    answers = {}

    def poll(name, path):
        try:
            answers[name] = requests.get(srv.url + path, timeout=100)
        except requests.RequestException as exc:
            answers[name] = exc

    threads = [threading.Thread(target=poll, args=("job", f"/jobs/{job['id']}?wait=60")),
               threading.Thread(target=poll, args=("batch", f"/batches/{batch['batch']}?wait=60"))]
    for thread in threads:
        thread.start()
    wait_until(lambda: srv.get("/health").json()["waiters"] >= 2, 10, message="long-polls parked")
    srv.http.close()
    srv.signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(60)          # far less than stop_timeout=120: the long-polls must not hold it
    except subprocess.TimeoutExpired:
        srv.kill()
        pytest.fail("pserve still running 60 s after SIGTERM: open long-polls held it (stop_timeout=120)")
    for thread in threads:
        thread.join(30)
    assert code == 0

    for name, answer in answers.items():
        assert isinstance(answer, requests.Response), (name, answer)
        assert answer.status_code in (200, 503), (name, answer.status_code, answer.text[:300])
        if answer.status_code == 503:
            assert media_type(answer) == PROBLEM
    if answers["job"].status_code == 200:
        assert answers["job"].json()["id"] == job["id"]
        assert answers["job"].json()["state"] in ("queued", "running")
    if answers["batch"].status_code == 200:
        assert answers["batch"].json()["done"] is False


def test_sigterm_with_an_idle_keepalive_connection_exits(make_server):
    """An idle keep-alive connection is not an in-flight request: it must not delay the exit."""
    srv = make_server(app=QUICK_STOP, server={"stop_timeout": 120})
    session = requests.Session()
    assert session.get(srv.url + "/health", timeout=10).status_code == 200   # connection kept alive
    srv.signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(60)
    except subprocess.TimeoutExpired:
        srv.kill()
        pytest.fail("pserve still running 60 s after SIGTERM with one idle keep-alive connection "
                    "(stop_timeout=120)")
    finally:
        session.close()
    assert code == 0
