"""Many jobs and many waiting clients at once: the pool bound, long-polls, current_job isolation."""
from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.helpers import (E2E_HANDLERS, QUICK_STOP, decode, list_all, long_poll_many, parse_time,
                               submit_batch, wait_batch, wait_job, wait_until)

pytestmark = pytest.mark.e2e


def max_overlap(jobs: list[dict]) -> int:
    """The most jobs running at one instant, from started_at/finished_at (an end before a start on ties)."""
    events = []
    for job in jobs:
        events.append((parse_time(job["started_at"]), 1))
        events.append((parse_time(job["finished_at"]), 0))
    running = peak = 0
    for _, kind in sorted(events):
        running += 1 if kind else -1
        peak = max(peak, running)
    return peak


def test_2000_concurrent_sleeps_on_a_pool_of_1000(make_server):
    srv = make_server(app={"greenjobs.pool.size": 1000, **QUICK_STOP})
    batch = submit_batch(srv, [{"handler": "sleep", "kwargs": {"seconds": 0.5}}] * 2000)
    health = srv.get("/health").json()["pool"]
    assert health["busy"] <= 1000 and health["busy"] + health["pending"] <= 2000, health

    final = wait_batch(srv, batch["batch"], 120)
    assert final["total"] == 2000
    assert final["counts"]["succeeded"] == 2000, final["counts"]

    jobs = list_all(srv, handler="sleep")
    assert len(jobs) == 2000 and {j["id"] for j in jobs} == set(batch["ids"])
    assert all(j["state"] == "succeeded" and j["result"] == {"slept": 0.5} and j["attempts"] == 1 for j in jobs)
    assert max_overlap(jobs) == 1000, "greenjobs.pool.size=1000 must bound, and be used by, 2000 ready jobs"
    wait_until(lambda: srv.get("/health").json()["pool"]["busy"] == 0, 15, message="pool idle")


def test_2000_sleeps_submitted_by_concurrent_posts(make_server):
    srv = make_server(app={"greenjobs.pool.size": 1000, **QUICK_STOP})

    def post(i):
        response = srv.http.post(srv.url + "/jobs", json={"handler": "sleep", "kwargs": {"seconds": 0.5}},
                                 timeout=60)
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(post, range(2000)))
    assert {code for code, _ in answers} == {202}
    ids = [job_id for _, job_id in answers]
    assert len(set(ids)) == 2000
    wait_until(lambda: not list_all(srv, state="running") and not list_all(srv, state="queued"), 60,
               interval=0.2, message="all sleeps done")
    jobs = list_all(srv, handler="sleep")
    assert {j["id"] for j in jobs} == set(ids)
    assert {j["state"] for j in jobs} == {"succeeded"}
    assert max_overlap(jobs) <= 1000


def test_1000_concurrent_long_polls_each_get_their_own_terminal_job(make_server):
    """1,000 GET /jobs/{id}?wait= held open at once (raw sockets), all answered with their job."""
    srv = make_server(app={"greenjobs.pool.size": 10, **QUICK_STOP})
    blockers = submit_batch(srv, [{"handler": "sleep", "kwargs": {"seconds": 60}}] * 10)["ids"]
    seconds = [round(0.001 * (i % 20), 3) for i in range(1000)]
    targets = submit_batch(srv, [{"handler": "sleep", "kwargs": {"seconds": s}} for s in seconds])["ids"]

    gate = {}

    def release_when_all_parked():
        try:
            gate["parked"] = wait_until(lambda: srv.get("/health", timeout=10).json()["waiters"] >= 1000, 60,
                                        interval=0.1, message="1000 long-polls parked")
        finally:       # free the pool whatever happened, so the long-polls can end
            for job_id in blockers:
                srv.delete(f"/jobs/{job_id}", timeout=30)

    releaser = threading.Thread(target=release_when_all_parked)
    releaser.start()
    answers = long_poll_many(srv.url, [f"/jobs/{job_id}?wait=60" for job_id in targets], timeout=90)
    releaser.join(90)
    assert gate.get("parked"), "the 1000 long-polls were never all parked at once"

    problems = []
    for job_id, s, answer in zip(targets, seconds, answers):
        if isinstance(answer, str):
            problems.append((job_id, answer))
            continue
        status, headers, body = answer
        job = decode(body) if status == 200 else None
        if status != 200 or job["id"] != job_id or job["state"] != "succeeded" or job["result"] != {"slept": s}:
            problems.append((job_id, status, body[:200]))
    assert not problems, f"{len(problems)} long-polls went wrong, e.g. {problems[:3]}"
    wait_until(lambda: srv.get("/health").json()["waiters"] == 0, 10, message="waiters released")


def test_current_job_isolation_under_500_concurrent_jobs(make_server):
    """Each job sees its own current_job and kwargs, across yields to other jobs."""
    srv = make_server(app={"greenjobs.pool.size": 1000, **E2E_HANDLERS, **QUICK_STOP})
    specs = []
    for i in range(600):
        kind = i % 3
        if kind == 0:
            specs.append({"handler": "flaky", "kwargs": {"fail_times": 0}})
        elif kind == 1:
            specs.append({"handler": "echo", "kwargs": {"i": i, "tag": f"echo-{i}"}})
        else:
            specs.append({"handler": "e2e.whoami", "kwargs": {"pause": 0.001 * (i % 50), "i": i}})
    batch = submit_batch(srv, specs)
    # the same again through concurrent single POSTs
    with ThreadPoolExecutor(16) as pool:
        posted = list(pool.map(lambda spec: srv.http.post(srv.url + "/jobs", json=spec, timeout=60).json()["id"],
                               specs[:150]))
    assert wait_batch(srv, batch["batch"], 60)["counts"]["succeeded"] == 600
    for job_id in posted:
        wait_job(srv, job_id, 60)

    jobs = {j["id"]: j for j in list_all(srv)}
    wrong = []
    for job_id, spec in list(zip(batch["ids"], specs)) + list(zip(posted, specs[:150])):
        job = jobs[job_id]
        if job["state"] != "succeeded" or job["kwargs"] != spec["kwargs"]:
            wrong.append((job_id, job["state"], job["kwargs"], spec["kwargs"]))
            continue
        if spec["handler"] == "flaky":
            expected = {"attempt": 1}
        elif spec["handler"] == "echo":
            expected = spec["kwargs"]
        else:
            seen = {"id": job_id, "kwargs": spec["kwargs"], "attempt": 1}
            expected = {"before": seen, "after": seen}
        if job["result"] != expected:
            wrong.append((job_id, job["result"], expected))
    assert not wrong, f"{len(wrong)} jobs saw another job's context, e.g. {wrong[:3]}"


def test_cpu_jobs_in_threads_each_compute_their_own_result(make_server):
    srv = make_server(app=QUICK_STOP)
    specs = [{"handler": "cpu.pbkdf2", "kwargs": {"iterations": 2000, "password": f"pw-{i}", "salt": f"salt-{i % 7}"}}
             for i in range(40)]
    batch = submit_batch(srv, specs)
    assert wait_batch(srv, batch["batch"], 120)["counts"]["succeeded"] == 40
    for job_id, spec in zip(batch["ids"], specs):
        kw = spec["kwargs"]
        job = srv.get(f"/jobs/{job_id}").json()
        assert job["kind"] == "cpu"
        assert job["result"] == hashlib.pbkdf2_hmac("sha256", kw["password"].encode(), kw["salt"].encode(),
                                                    kw["iterations"]).hex()
