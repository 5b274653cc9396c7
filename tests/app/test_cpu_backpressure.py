"""cpu submissions are refused with 429 + Retry-After once greenjobs.workers.max_pending cpu jobs wait for a
worker (counted in the ledger, every server's), as io submissions are past greenjobs.pool.max_pending."""
import time

import gevent
import pytest
import webtest

from greenjobs.server.wsgi import make_app


@pytest.fixture
def app(tmp_path):
    # no cpu workers: every cpu job submitted stays waiting
    wsgi = make_app({"here": str(tmp_path)}, **{"greenjobs.store.synchronous": "normal", "greenjobs.workers.cpu": "0",
                                                "greenjobs.workers.max_pending": "3"})
    with gevent.Timeout(60):
        yield webtest.TestApp(wsgi)
    wsgi.registry.greenjobs_runtime.shutdown(0)


CPU = {"handler": "cpu.pbkdf2", "kwargs": {"iterations": 10}}


def test_cpu_submissions_past_max_pending_get_429_and_nothing_is_stored(app):
    ids = [app.post_json("/jobs", CPU, status=202).json["id"] for _ in range(3)]
    refused = app.post_json("/jobs", CPU, status=429)
    assert refused.headers["Retry-After"] == "1"
    assert "greenjobs.workers.max_pending=3" in refused.json["detail"]
    app.post_json("/jobs/batch", {"jobs": [CPU, CPU]}, status=429)
    assert len(app.get("/jobs?state=queued").json["jobs"]) == 3, "a refused request stores nothing"
    assert app.post_json("/jobs", {"handler": "echo"}, status=202), "io jobs are not held back by the cpu backlog"

    app.delete(f"/jobs/{ids[0]}")
    time.sleep(0.6)                       # the ledger's count is read again at most every 0.5 s
    app.post_json("/jobs", CPU, status=202)
    app.post_json("/jobs", CPU, status=429)
