"""Event streams cannot be used to exhaust the server: a cap on open streams, a bound on what one stalled
stream holds, and a reader too slow to keep up is dropped within max_lag seconds (issue 12 finding 4)."""
import time

import pytest

from tests.e2e.helpers import QUICK_STOP, submit_batch, wait_until
from tests.e2e.test_events import open_stream, rss_kb

pytestmark = pytest.mark.e2e


def test_stalled_streams_cost_little(make_server, capsys):
    """(A reader too slow to keep up is dropped within max_lag: tests/e2e/test_events.py, the slow subscriber.)"""
    srv = make_server(app={**QUICK_STOP, "greenjobs.store.synchronous": "normal", "greenjobs.workers.cpu": 0})
    jobs = [{"handler": "echo", "kwargs": {"pad": "x" * 200}} for _ in range(500)]
    for _ in range(4):              # warm up first: what 2,000 jobs grow (caches, arenas) is not the streams' cost
        submit_batch(srv, jobs)
    wait_until(lambda: srv.get("/health").json()["pool"]["busy"] == 0, 30, message="warm-up jobs done")
    base = rss_kb(srv.proc.pid)
    stalled = [open_stream(srv.url, rcvbuf=4096)[0] for _ in range(300)]       # they never read
    try:
        for _ in range(4):
            submit_batch(srv, jobs)
        wait_until(lambda: srv.get("/health").json()["pool"]["busy"] == 0, 30, message="jobs done")
        time.sleep(1)
        per_stream = (rss_kb(srv.proc.pid) - base) / len(stalled)
        with capsys.disabled():
            print(f"\n[security] {len(stalled)} stalled event streams + 2,000 jobs: {per_stream:.1f} KB of server RSS "
                  f"per stream")
        assert per_stream < 150, per_stream
    finally:
        for sock in stalled:
            sock.close()
    assert srv.get("/health").status_code == 200


def test_streams_past_the_cap_get_503(make_server):
    srv = make_server(app={**QUICK_STOP, "greenjobs.events.max_streams": 2, "greenjobs.workers.cpu": 0})
    first, second = open_stream(srv.url)[0], open_stream(srv.url)[0]
    try:
        sock, status, headers, _ = open_stream(srv.url)
        sock.close()
        assert status == 503 and headers.get("retry-after") == "5"
    finally:
        first.close()
        second.close()
