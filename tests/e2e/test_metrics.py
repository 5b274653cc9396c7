"""GET /metrics end to end: run known jobs on a real pserve, scrape, parse with prometheus_client's
own parser, and check the numbers against what was run."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import QUICK_STOP, submit_batch, wait_batch, wait_job, wait_until
from tests.e2e.test_events import SSE

pytestmark = pytest.mark.e2e


def scrape(srv) -> dict:
    response = srv.get("/metrics", timeout=30)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers["Content-Type"]
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def value(families: dict, family: str, sample: str | None = None, **labels) -> float | None:
    """The value of the one sample of ``family`` named ``sample`` (default: the family name) with ``labels``."""
    if family not in families:
        return None
    sample = sample or family
    found = [s.value for s in families[family].samples
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (family, sample, labels, found)
    return found[0] if found else None


def check_histogram(families: dict, family: str, handler: str, count: int) -> None:
    buckets = [(s.labels["le"], s.value) for s in families[family].samples
               if s.name == f"{family}_bucket" and s.labels.get("handler") == handler]
    assert buckets, (family, handler)
    values = [v for _, v in buckets]
    assert values == sorted(values), buckets
    assert buckets[-1] == ("+Inf", count), (family, handler, buckets[-1], count)
    assert value(families, family, f"{family}_count", handler=handler) == count
    total = value(families, family, f"{family}_sum", handler=handler)
    assert total is not None and total >= 0


def test_metrics_match_the_jobs_run(make_server):
    srv = make_server(app={**QUICK_STOP, "greenjobs.workers.cpu": 1, "greenjobs.retry.base": 0.05,
                           "greenjobs.retry.max": 0.1, "greenjobs.pool.size": 50})
    wait_until(lambda: srv.get("/health", timeout=10).json()["cpu"]["broker_connected"], 30,
               message="broker connected")
    n, m, k = 12, 3, 2
    ok = submit_batch(srv, [{"handler": "echo", "kwargs": {"i": i}} for i in range(n)])
    bad = submit_batch(srv, [{"handler": "fail", "kwargs": {"message": "no"}} for _ in range(m)])
    flaky = srv.submit("flaky", kwargs={"fail_times": 1}, max_retries=1)
    sleepers = [srv.submit("sleep", kwargs={"seconds": 60}) for _ in range(k)]
    cpu = srv.submit("cpu.pbkdf2", kwargs={"iterations": 1000})
    wait_until(lambda: all(srv.get(f"/jobs/{j['id']}", timeout=10).json()["state"] == "running" for j in sleepers),
               20, message="sleepers running")
    for j in sleepers:
        assert srv.delete(f"/jobs/{j['id']}").status_code == 200
    wait_batch(srv, ok["batch"])
    wait_batch(srv, bad["batch"])
    assert wait_job(srv, flaky["id"])["state"] == "succeeded"
    assert wait_job(srv, cpu["id"], 60)["state"] == "succeeded"

    f = wait_until(lambda: (lambda fam: fam if value(fam, "greenjobs_jobs_finished", "greenjobs_jobs_finished_total",
                                                     handler="cpu.pbkdf2", state="succeeded") == 1 else None)(
        scrape(srv)), 20, message="cpu job counted")
    submitted = "greenjobs_jobs_submitted_total"
    assert value(f, "greenjobs_jobs_submitted", submitted, handler="echo") == n
    assert value(f, "greenjobs_jobs_submitted", submitted, handler="fail") == m
    assert value(f, "greenjobs_jobs_submitted", submitted, handler="sleep") == k
    assert value(f, "greenjobs_jobs_submitted", submitted, handler="flaky") == 1
    assert value(f, "greenjobs_jobs_submitted", submitted, handler="cpu.pbkdf2") == 1
    started = "greenjobs_jobs_started_total"
    assert value(f, "greenjobs_jobs_started", started, handler="echo") == n
    assert value(f, "greenjobs_jobs_started", started, handler="fail") == m
    assert value(f, "greenjobs_jobs_started", started, handler="sleep") == k
    assert value(f, "greenjobs_jobs_started", started, handler="flaky") == 2
    assert value(f, "greenjobs_jobs_started", started, handler="cpu.pbkdf2") == 1
    assert value(f, "greenjobs_jobs_retried", "greenjobs_jobs_retried_total", handler="flaky") == 1
    finished = "greenjobs_jobs_finished_total"
    assert value(f, "greenjobs_jobs_finished", finished, handler="echo", state="succeeded") == n
    assert value(f, "greenjobs_jobs_finished", finished, handler="fail", state="failed") == m
    assert value(f, "greenjobs_jobs_finished", finished, handler="sleep", state="cancelled") == k
    assert value(f, "greenjobs_jobs_finished", finished, handler="flaky", state="succeeded") == 1
    assert value(f, "greenjobs_jobs_finished", finished, handler="echo", state="failed") is None

    check_histogram(f, "greenjobs_job_duration_seconds", "echo", n)
    check_histogram(f, "greenjobs_job_duration_seconds", "fail", m)
    check_histogram(f, "greenjobs_job_duration_seconds", "cpu.pbkdf2", 1)
    check_histogram(f, "greenjobs_job_queue_wait_seconds", "echo", n)
    check_histogram(f, "greenjobs_job_queue_wait_seconds", "fail", m)
    check_histogram(f, "greenjobs_job_queue_wait_seconds", "sleep", k)
    check_histogram(f, "greenjobs_job_queue_wait_seconds", "flaky", 2)        # one per attempt
    check_histogram(f, "greenjobs_job_queue_wait_seconds", "cpu.pbkdf2", 1)

    assert value(f, "greenjobs_pool_size") == 50
    assert value(f, "greenjobs_pool_busy") == 0
    assert value(f, "greenjobs_pool_pending") == 0
    for gauge in ("greenjobs_cpu_running", "greenjobs_cpu_to_publish", "greenjobs_waiters", "greenjobs_store_ok"):
        assert value(f, gauge) is not None, gauge
    assert value(f, "greenjobs_store_ok") == 1
    assert value(f, "greenjobs_workers_alive") == 1
    assert value(f, "greenjobs_broker_connected") == 1
    assert value(f, "greenjobs_event_subscribers") == 0
    assert value(f, "greenjobs_event_subscribers_dropped", "greenjobs_event_subscribers_dropped_total") == 0
    # nothing is active any more
    assert not [s for s in f["greenjobs_jobs"].samples if s.value]


def test_workers_alive_matches_the_configured_workers(make_server):
    srv = make_server(app={**QUICK_STOP, "greenjobs.workers.cpu": 2})
    wait_until(lambda: value(scrape(srv), "greenjobs_workers_alive") == 2, 30, message="2 workers alive")
    # the publisher connects on its own greenlet (and retries if the embedded broker's file was busy at
    # start): it need not be connected by the time the workers are up, only soon after
    wait_until(lambda: value(scrape(srv), "greenjobs_broker_connected") == 1, 30, message="broker connected")


def test_event_subscribers_gauge_counts_open_streams(make_server):
    srv = make_server(app={**QUICK_STOP, "greenjobs.events.heartbeat": 0.5})
    streams = [SSE(srv.url) for _ in range(3)]
    try:
        wait_until(lambda: value(scrape(srv), "greenjobs_event_subscribers") == 3, 20, message="3 subscribers")
        streams[0].close()
        # the server notices a closed client at its next write at the latest (a heartbeat)
        wait_until(lambda: value(scrape(srv), "greenjobs_event_subscribers") == 2, 20, message="2 subscribers")
    finally:
        for s in streams:
            s.close()
    wait_until(lambda: value(scrape(srv), "greenjobs_event_subscribers") == 0, 20, message="no subscriber")


def test_jobs_gauge_reflects_a_backlog(make_server):
    srv = make_server(app={**QUICK_STOP, "greenjobs.pool.size": 1})
    jobs = [srv.submit("sleep", kwargs={"seconds": 60}) for _ in range(5)]

    def counts():
        f = scrape(srv)
        return (value(f, "greenjobs_jobs", handler="sleep", state="running"),
                value(f, "greenjobs_jobs", handler="sleep", state="queued"),
                value(f, "greenjobs_pool_busy"), value(f, "greenjobs_pool_pending"))

    wait_until(lambda: counts() == (1, 4, 1, 4), 20, message="1 running, 4 queued")
    for j in jobs:
        srv.delete(f"/jobs/{j['id']}")
    wait_until(lambda: counts()[:2] == (None, None), 20, message="backlog gone")


def test_scraping_does_no_per_job_work(make_server):
    """The scrape's size does not grow with the number of finished jobs (only with handlers)."""
    srv = make_server(app={**QUICK_STOP, "greenjobs.store.synchronous": "normal"})
    body = submit_batch(srv, [{"handler": "echo"} for _ in range(10)])
    wait_batch(srv, body["batch"])
    before = srv.get("/metrics", timeout=30).text
    body = submit_batch(srv, [{"handler": "echo"} for _ in range(2000)])
    wait_batch(srv, body["batch"])
    text = srv.get("/metrics", timeout=30).text

    def series(exposition: str) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in exposition.splitlines() if line and not line.startswith("#")}
    # the same series (names and labels) after 2,000 more jobs: none per job; only the values grew, a digit or
    # a few each (a series can appear once, e.g. a latency bucket first reached, so the size gets some slack)
    grown = series(text) - series(before)
    assert len(grown) <= 3 and not any(job_id in line for line in grown for job_id in body["ids"][:50]), grown
    assert len(text) - len(before) < 1000, (len(before), len(text))
    f = {fam.name: fam for fam in text_string_to_metric_families(text)}
    assert value(f, "greenjobs_jobs_finished", "greenjobs_jobs_finished_total", handler="echo",
                 state="succeeded") == 2010
