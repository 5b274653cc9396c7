"""Fenced completions, on both ledgers: a runner whose lease was taken away mid-run can never record
its outcome.  The test plays a second runner by writing the ledger row itself (the lease moves to
"adopter", as adoption after an expired lease does); the original's late result is rejected, logged
and counted in /metrics, and the job's result is the adopter's."""
import json
import sqlite3
import time

import pytest

from tests.e2e.helpers import wait_until

pytestmark = pytest.mark.faults

APP = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.faults.fault_handlers", "greenjobs.workers.cpu": 0,
       "greenjobs.shutdown.grace": 0.5}
#: A server that does not read the ledger while its job runs, as one that is partitioned or paused would not:
#: the fence alone must keep its late outcome out.
BLIND = {**APP, "greenjobs.cluster.poll": 0}
ADOPTER = "another-host:4242:1:adopter"


def run_sql(srv, store_backend, sql: str, params: tuple) -> int:
    """Execute one statement on the server's ledger, as another runner would; returns the rows changed."""
    url = store_backend.get("greenjobs.store.url")
    if url is None:
        with sqlite3.connect(srv.ini.parent / "var" / "greenjobs.sqlite", timeout=10) as conn:
            return conn.execute(sql, params).rowcount
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.replace("?", "%s"), params).rowcount


def rejected(srv) -> float:
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith("greenjobs_outcomes_rejected_total "):
            return float(line.split()[1])
    raise AssertionError("no greenjobs_outcomes_rejected_total in /metrics")


def test_a_runner_that_lost_its_lease_cannot_record_its_outcome(make_server, store_backend):
    srv = make_server(app={**BLIND, **store_backend})
    job = srv.submit("fault.io", kwargs={"seconds": 1.5})
    wait_until(lambda: srv.get(f"/jobs/{job['id']}").json()["state"] == "running", 20, message="running")
    # the lease moves to another runner, which starts its own attempt
    taken = run_sql(srv, store_backend, "UPDATE jobs SET lease_owner = ?, lease_expires = ?, attempts = attempts + 1"
                    " WHERE id = ? AND state = 'running'", (ADOPTER, time.time() + 3600, job["id"]))
    assert taken == 1
    # the original runner finishes its attempt: its result must not be recorded
    wait_until(lambda: rejected(srv) >= 1, 20, message="the late outcome rejected")
    now = srv.get(f"/jobs/{job['id']}").json()
    assert now["state"] == "running" and now["result"] is None, now
    assert "was not recorded: that runner no longer holds the job" in srv.log()
    # the adopter records its own outcome, under its lease
    done = run_sql(srv, store_backend, "UPDATE jobs SET state = 'succeeded', result = ?, finished_at = ?,"
                   " lease_owner = NULL, lease_expires = NULL WHERE id = ? AND lease_owner = ? AND state = 'running'",
                   (json.dumps({"by": "adopter"}), time.time(), job["id"], ADOPTER))
    assert done == 1
    final = srv.get(f"/jobs/{job['id']}").json()
    assert final["state"] == "succeeded" and final["result"] == {"by": "adopter"}, final
    assert rejected(srv) == 1


def test_a_runner_that_sees_its_lease_taken_stops_the_job_and_frees_the_slot(make_server, store_backend):
    srv = make_server(app={**APP, **store_backend})
    job = srv.submit("fault.io", kwargs={"seconds": 30})
    wait_until(lambda: srv.get("/health").json()["pool"]["busy"] == 1, 20, message="running")
    taken = run_sql(srv, store_backend, "UPDATE jobs SET lease_owner = ?, lease_expires = ?, attempts = attempts + 1"
                    " WHERE id = ? AND state = 'running'", (ADOPTER, time.time() + 3600, job["id"]))
    assert taken == 1
    wait_until(lambda: srv.get("/health").json()["pool"]["busy"] == 0, 20, message="the slot freed")
    assert "our lease was lost" in srv.log()
    now = srv.get(f"/jobs/{job['id']}").json()
    assert now["state"] == "running" and now["attempts"] == 2, now       # the adopter's attempt, untouched
