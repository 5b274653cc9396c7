"""A job's life over HTTP: cancel (running, queued, scheduled, finished), timeout, backlog
overflow (429), priority order, and listing with pagination and filters."""
from __future__ import annotations

import random
import threading

import pytest
import requests

from tests.e2e.helpers import (ANY_LOCAL_PORT, QUICK_STOP, assert_problem, job_count, list_all, parse_time,
                               submit_batch, wait_batch, wait_job, wait_until)

pytestmark = pytest.mark.e2e



def busy(srv) -> int:
    return srv.get("/health", timeout=10).json()["pool"]["busy"]


def pending(srv) -> int:
    return srv.get("/health", timeout=10).json()["pool"]["pending"]


# ---------------------------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------------------------

def test_cancel_running_job(make_server):
    srv = make_server(app=QUICK_STOP)
    job = srv.submit("sleep", kwargs={"seconds": 30})
    wait_until(lambda: srv.get(f"/jobs/{job['id']}").json()["state"] == "running", 10, message="job running")

    # a long-poll parked on the job is answered by the cancel
    polled = {}
    poller = threading.Thread(target=lambda: polled.update(wait_job(srv, job["id"], 40)))
    poller.start()
    wait_until(lambda: srv.get("/health").json()["waiters"] >= 1, 10, message="long-poll parked")

    response = srv.delete(f"/jobs/{job['id']}")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["id"] == job["id"]
    assert cancelled["state"] == "cancelled"
    assert cancelled["error"]["kind"] == "cancelled"
    assert cancelled["result"] is None
    parse_time(cancelled["finished_at"])

    poller.join(45)
    assert not poller.is_alive()
    assert polled["id"] == job["id"] and polled["state"] == "cancelled", polled

    wait_until(lambda: busy(srv) == 0, 15, message="slot given back")
    # stays cancelled while the server keeps working (the 30 s handler must never report success)
    other = srv.submit("sleep", kwargs={"seconds": 0.5})
    assert wait_job(srv, other["id"], 30)["state"] == "succeeded"
    again = srv.get(f"/jobs/{job['id']}").json()
    assert again["state"] == "cancelled" and again["result"] is None and again["finished_at"] == cancelled["finished_at"]
    assert_problem(srv.delete(f"/jobs/{job['id']}"), 409, job["id"])
    assert srv.get("/jobs?state=succeeded&handler=sleep").json()["jobs"][0]["id"] == other["id"]


def test_cancel_queued_job_never_runs(make_server, local_http):
    srv = make_server(app={"greenjobs.pool.size": 1, **QUICK_STOP, **ANY_LOCAL_PORT})
    blocker = srv.submit("sleep", kwargs={"seconds": 30})
    queued = srv.submit("http.get", kwargs={"url": local_http.url("/queued")})
    assert queued["state"] == "queued", queued
    assert pending(srv) == 1

    response = srv.delete(f"/jobs/{queued['id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "cancelled" and body["attempts"] == 0 and body["started_at"] is None
    assert pending(srv) == 0

    assert srv.delete(f"/jobs/{blocker['id']}").json()["state"] == "cancelled"
    # the single slot is free again, and the next job runs; the cancelled one was skipped
    after = srv.submit("http.get", kwargs={"url": local_http.url("/after")})
    done = wait_job(srv, after["id"], 30)
    assert done["state"] == "succeeded" and done["result"]["status"] == 200, done
    final = srv.get(f"/jobs/{queued['id']}").json()
    assert final["state"] == "cancelled" and final["attempts"] == 0 and final["started_at"] is None
    assert "/after" in local_http.hits
    assert "/queued" not in local_http.hits


def test_job_cancelled_while_queued_never_runs_even_when_its_slot_frees_at_once(make_server, local_http):
    """DELETE of a queued job races the slot it waits for: the job must still never run.

    Each round: one slot, a blocker, and a queued http.get job X; DELETE X and DELETE the
    blocker at the same moment.  Whenever X ends cancelled *while queued* (attempts 0, never
    started), its handler must not have run, i.e. the local HTTP server never saw its request.
    """
    srv = make_server(app={"greenjobs.pool.size": 1, **QUICK_STOP, **ANY_LOCAL_PORT})
    rounds = []
    for k in range(15):
        blocker = srv.submit("sleep", kwargs={"seconds": 30})
        queued = srv.submit("http.get", kwargs={"url": local_http.url(f"/round/{k}")})
        assert queued["state"] == "queued"
        barrier = threading.Barrier(2)
        codes = {}

        def delete(name, job_id):
            barrier.wait(10)
            codes[name] = requests.delete(f"{srv.url}/jobs/{job_id}", timeout=30).status_code

        threads = [threading.Thread(target=delete, args=("queued", queued["id"])),
                   threading.Thread(target=delete, args=("blocker", blocker["id"]))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(40)
        # X may legitimately win the race: dequeued by the freed slot, run and finished before its
        # DELETE arrives, which then answers 409.  What may never happen is checked below.
        assert codes["blocker"] == 200 and codes["queued"] in (200, 409), codes
        wait_until(lambda: busy(srv) == 0, 15, message="slot free after the round")
        job = srv.get(f"/jobs/{queued['id']}").json()
        assert (codes["queued"] == 200) == (job["state"] == "cancelled"), (codes, job["state"])
        rounds.append((k, job))

    # (a handler that did start has already had its answer from the local server: the slot
    # it held is only given back once the handler returns)
    cancelled_while_queued = [k for k, job in rounds if job["state"] == "cancelled" and job["attempts"] == 0]
    assert all(job["state"] in ("cancelled", "succeeded") for _, job in rounds), [job["state"] for _, job in rounds]
    ran_anyway = [k for k in cancelled_while_queued if f"/round/{k}" in local_http.hits]
    assert not ran_anyway, (f"{len(ran_anyway)} of {len(cancelled_while_queued)} jobs cancelled while queued "
                            f"(attempts 0, started_at null) still ran their handler: rounds {ran_anyway}")


def test_cancel_scheduled_job_never_runs(make_server, local_http):
    srv = make_server(app={**QUICK_STOP, **ANY_LOCAL_PORT})
    job = srv.submit("http.get", kwargs={"url": local_http.url("/scheduled")}, delay=1.0)
    assert job["state"] == "scheduled"
    response = srv.delete(f"/jobs/{job['id']}")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    # a control job with the same delay does run, so the scheduler did pass over the cancelled one
    control = srv.submit("http.get", kwargs={"url": local_http.url("/control")}, delay=1.0)
    assert wait_job(srv, control["id"], 30)["state"] == "succeeded"
    final = srv.get(f"/jobs/{job['id']}").json()
    assert final["state"] == "cancelled" and final["attempts"] == 0
    assert local_http.hits == ["/control"]


def test_delete_of_finished_job_is_409(make_server):
    srv = make_server(app=QUICK_STOP)
    ok = srv.submit("echo", kwargs={"a": 1})
    bad = srv.submit("fail", kwargs={"message": "x"})
    assert wait_job(srv, ok["id"])["state"] == "succeeded"
    assert wait_job(srv, bad["id"])["state"] == "failed"
    for job_id, state in ((ok["id"], "succeeded"), (bad["id"], "failed")):
        assert_problem(srv.delete(f"/jobs/{job_id}"), 409, job_id, state)
        assert srv.get(f"/jobs/{job_id}").json()["state"] == state
    assert_problem(srv.delete("/jobs/" + "f" * 32), 404)


# ---------------------------------------------------------------------------------------------
# Timeout
# ---------------------------------------------------------------------------------------------

def test_timeout_fails_the_job_and_returns_the_slot(make_server):
    srv = make_server(app={"greenjobs.pool.size": 1, **QUICK_STOP, **ANY_LOCAL_PORT})
    slow = srv.submit("sleep", kwargs={"seconds": 60}, timeout=0.3)
    assert slow["timeout"] == 0.3
    behind = srv.submit("echo", kwargs={"behind": True})      # waits for the single slot
    assert behind["state"] == "queued"

    done = wait_job(srv, slow["id"], 30)
    assert done["state"] == "failed", done
    assert done["error"]["kind"] == "timeout", done["error"]
    assert "0.3" in done["error"]["message"]
    assert done["result"] is None

    # the slot comes back long before the 60 s handler would have ended
    assert wait_job(srv, behind["id"], 20)["state"] == "succeeded"
    wait_until(lambda: busy(srv) == 0, 15, message="health busy back to 0")
    assert srv.get(f"/jobs/{slow['id']}").json()["state"] == "failed"


def test_many_timeouts_return_every_slot(make_server):
    srv = make_server(app={"greenjobs.pool.size": 20, **QUICK_STOP})
    batch = submit_batch(srv, [{"handler": "sleep", "kwargs": {"seconds": 60}, "timeout": 0.2}] * 50)
    final = wait_batch(srv, batch["batch"], 60)
    assert final["counts"]["failed"] == 50, final
    jobs = [srv.get(f"/jobs/{i}").json() for i in batch["ids"]]
    assert {j["error"]["kind"] for j in jobs} == {"timeout"}
    wait_until(lambda: busy(srv) == 0, 15, message="health busy back to 0")
    assert wait_job(srv, srv.submit("echo")["id"], 20)["state"] == "succeeded"


# ---------------------------------------------------------------------------------------------
# Backlog overflow
# ---------------------------------------------------------------------------------------------

def test_backlog_overflow_is_429_with_retry_after(make_server):
    srv = make_server(app={"greenjobs.pool.size": 1, "greenjobs.pool.max_pending": 5, **QUICK_STOP})
    blocker = srv.submit("sleep", kwargs={"seconds": 30})
    accepted, overflow = [], None
    for i in range(30):
        response = srv.post("/jobs", {"handler": "echo", "kwargs": {"i": i}})
        if response.status_code == 429:
            overflow = response
            break
        assert response.status_code == 202, response.text
        accepted.append(response.json()["id"])
    assert overflow is not None, "no 429 after 30 submissions"
    assert len(accepted) == 5, "one running plus max_pending=5 queued, then 429"
    assert_problem(overflow, 429, "max_pending")
    retry_after = overflow.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, overflow.headers
    assert job_count(srv) == 6
    assert pending(srv) == 5

    # a batch that does not fit is refused whole
    assert_problem(srv.post("/jobs/batch", {"jobs": [{"handler": "echo"}] * 2}), 429)
    assert_problem(srv.post("/jobs", {"handler": "echo"}), 429)
    assert job_count(srv) == 6

    # cancelling a queued job makes room for exactly one more
    assert srv.delete(f"/jobs/{accepted[0]}").status_code == 200
    extra = srv.post("/jobs", {"handler": "echo", "kwargs": {"i": "extra"}})
    assert extra.status_code == 202, extra.text
    assert_problem(srv.post("/jobs", {"handler": "echo"}), 429)
    assert job_count(srv) == 7

    # once the blocker is gone the backlog drains and every accepted job runs
    srv.delete(f"/jobs/{blocker['id']}")
    for job_id in accepted[1:] + [extra.json()["id"]]:
        assert wait_job(srv, job_id, 30)["state"] == "succeeded"
    assert srv.post("/jobs", {"handler": "echo"}).status_code == 202


# ---------------------------------------------------------------------------------------------
# Priority
# ---------------------------------------------------------------------------------------------

PRIORITIES = [3, 9, 0, 5, 9, 1, 7, 3, 0, 8, 2, 6, 4, 5, 9, 0, 7, 1]


def _start_order(srv, ids):
    jobs = [wait_job(srv, job_id, 60) for job_id in ids]
    assert all(j["state"] == "succeeded" for j in jobs), [j["state"] for j in jobs]
    starts = [parse_time(j["started_at"]) for j in jobs]
    assert len(set(starts)) == len(starts), "two jobs started at the same millisecond on a one-slot pool"
    return [job_id for _, job_id in sorted(zip(starts, ids))]


def test_priority_orders_the_backlog_then_age(make_server):
    srv = make_server(app={"greenjobs.pool.size": 1, **QUICK_STOP, **ANY_LOCAL_PORT})
    blocker = srv.submit("sleep", kwargs={"seconds": 30})
    ids = []
    for n, priority in enumerate(PRIORITIES):
        job = srv.submit("sleep", kwargs={"seconds": 0.02}, priority=priority)
        assert job["state"] == "queued" and job["priority"] == priority
        ids.append(job["id"])
    srv.delete(f"/jobs/{blocker['id']}")
    expected = [ids[n] for n in sorted(range(len(ids)), key=lambda n: (-PRIORITIES[n], n))]
    got = _start_order(srv, ids)
    assert got == expected, [PRIORITIES[ids.index(i)] for i in got]


def test_priority_within_a_batch(make_server):
    srv = make_server(app={"greenjobs.pool.size": 1, **QUICK_STOP, **ANY_LOCAL_PORT})
    blocker = srv.submit("sleep", kwargs={"seconds": 30})
    shuffled = PRIORITIES[:]
    random.Random(7).shuffle(shuffled)
    batch = submit_batch(srv, [{"handler": "sleep", "kwargs": {"seconds": 0.02}, "priority": p} for p in shuffled])
    srv.delete(f"/jobs/{blocker['id']}")
    expected = [batch["ids"][n] for n in sorted(range(len(shuffled)), key=lambda n: (-shuffled[n], n))]
    assert _start_order(srv, batch["ids"]) == expected


# ---------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------

def test_list_pagination_and_filters(make_server):
    srv = make_server(app=QUICK_STOP)
    submitted = []          # (id, handler), oldest first
    for i in range(24):
        handler = ("fail", "sleep")[(i // 6) % 2] if i % 6 == 5 else "echo"
        kwargs = {"seconds": 30} if handler == "sleep" else {"message": f"job {i}"} if handler == "fail" else {"i": i}
        submitted.append((srv.submit(handler, kwargs=kwargs)["id"], handler))
    for job_id, handler in submitted:
        if handler != "sleep":
            wait_job(srv, job_id, 30)
    newest_first = [job_id for job_id, _ in reversed(submitted)]

    # pages of 5: disjoint, newest first, `next` is an opaque cursor past the last job of a full page
    seen, after, pages = [], None, 0
    for _ in range(20):
        params = {"limit": 5, **({"after": after} if after else {})}
        body = srv.http.get(srv.url + "/jobs", params=params, timeout=30).json()
        page = [j["id"] for j in body["jobs"]]
        assert len(page) <= 5
        assert not set(page) & set(seen), "pages overlap"
        seen += page
        pages += 1
        if body["next"] is None:
            break
        assert isinstance(body["next"], str) and body["next"]
        after = body["next"]
    assert seen == newest_first
    assert pages == 5

    def ids(**filters):
        return [j["id"] for j in list_all(srv, page=3, **filters)]

    by_handler = {h: [i for i in newest_first if dict(submitted)[i] == h] for h in ("echo", "fail", "sleep")}
    assert len(by_handler["fail"]) == 2 and len(by_handler["sleep"]) == 2 and len(by_handler["echo"]) == 20
    assert ids(handler="echo") == by_handler["echo"]
    assert ids(state="failed") == by_handler["fail"]
    assert ids(state="running") == by_handler["sleep"]
    assert ids(state="running", handler="sleep") == by_handler["sleep"]
    assert ids(state="succeeded") == by_handler["echo"]
    assert ids(state="succeeded", handler="fail") == []
    assert ids(handler="no.such.handler") == []
    for job in list_all(srv, state="failed"):
        assert job["state"] == "failed" and job["handler"] == "fail"

    # after the oldest job there is nothing
    body = srv.get(f"/jobs?after={newest_first[-1]}").json()
    assert body == {"jobs": [], "next": None}
    for job_id in by_handler["sleep"]:
        srv.delete(f"/jobs/{job_id}")
