"""A server on the PostgreSQL ledger (greenjobs.store.url = postgresql://…), driven over HTTP."""
import statistics
import time

import pytest
import requests

from tests.e2e.helpers import QUICK_STOP, wait_job

pytestmark = pytest.mark.e2e

HANDLERS = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.e2e.pg_handlers"}


@pytest.fixture
def pg_server(make_server, postgres):
    url = postgres.database_url("hub")
    srv = make_server(app={**QUICK_STOP, **HANDLERS, "greenjobs.store.url": url, "greenjobs.workers.cpu": 1})
    srv.pg_url = url
    return srv


def test_a_slow_query_holds_only_its_greenlet_never_the_hub(pg_server):
    """psycopg waits through gevent: while one job sits in pg_sleep(2), /health answers at once."""
    job = pg_server.submit("pg.sleep", kwargs={"url": pg_server.pg_url, "seconds": 2.0})
    deadline = time.monotonic() + 10
    while pg_server.get(f"/jobs/{job['id']}").json()["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    latencies = []
    for _ in range(10):                         # ~1 s of probes, all inside the 2 s query
        start = time.monotonic()
        assert requests.get(pg_server.url + "/health", timeout=10).status_code == 200
        latencies.append(time.monotonic() - start)
        time.sleep(0.1)
    done = wait_job(pg_server, job["id"], 30)
    assert done["state"] == "succeeded", done
    # a blocked hub would hold each probe until the query ends (up to 2 s); a free one answers in ms
    assert statistics.median(latencies) < 0.25 and max(latencies) < 1.0, latencies


def test_jobs_of_every_kind_run_on_postgres(pg_server):
    io = pg_server.submit("echo", kwargs={"x": 1})
    cpu = pg_server.submit("cpu.pbkdf2", kwargs={"iterations": 10})
    batch = pg_server.post("/jobs/batch", {"jobs": [{"handler": "echo", "kwargs": {"n": n}} for n in range(50)]}).json()
    assert wait_job(pg_server, io["id"])["result"] == {"x": 1}
    assert wait_job(pg_server, cpu["id"])["state"] == "succeeded"
    counts = pg_server.get(f"/batches/{batch['batch']}?wait=20").json()
    assert counts["done"] and counts["counts"]["succeeded"] == 50, counts
    health = pg_server.get("/health").json()
    assert health["store"]["ok"] is True, health
