"""The hub guard on the real app and runtime (one server, no cpu workers): a job that blocks the event loop
past its timeout ends failed/timeout, never succeeded, with its blocking on the record and in /metrics; the
records the issue found untruthful; a handler whose default timeout no job may have refuses to start."""
import gevent
import pytest
import webtest

from greenjobs.pool.errors import ConfigurationError
from greenjobs.server.wsgi import make_app

HANDLERS = "greenjobs.handlers.builtin tests.hub_handlers"


@pytest.fixture
def app(tmp_path):
    wsgi = make_app({"here": str(tmp_path)}, **{"greenjobs.store.synchronous": "normal", "greenjobs.workers.cpu": "0",
                                                "greenjobs.api.max_wait": "10", "greenjobs.handlers": HANDLERS})
    with gevent.Timeout(60):
        yield webtest.TestApp(wsgi)
    wsgi.registry.greenjobs_runtime.shutdown(0)


def metric(app, name: str, handler: str) -> float:
    for line in app.get("/metrics").text.splitlines():
        if line.startswith(f'{name}{{handler="{handler}"}} '):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("handler, kwargs", [("hub.spin", {"seconds": 1.2}), ("hub.sleep", {"seconds": 1.0}),
                                             ("hub.pbkdf2", {})])
def test_a_job_that_blocks_past_its_timeout_fails_timeout_with_its_blocking_recorded(app, handler, kwargs):
    job = app.post_json("/jobs", {"handler": handler, "kwargs": kwargs}).json
    done = app.get(f"/jobs/{job['id']}?wait=10").json
    assert done["state"] == "failed" and done["error"]["kind"] == "timeout", done
    assert "blocked the event loop" in done["error"]["message"]
    assert done["ran_in"] == "hub" and done["rerouted"] is False
    gevent.sleep(0.3)       # the block is recorded once the hub runs again (fire and forget)
    again = app.get(f"/jobs/{job['id']}").json
    assert again["blocked"]["count"] >= 1 and again["blocked"]["longest_ms"] >= 100, again["blocked"]
    assert metric(app, "greenjobs_hub_blocked_seconds_total", handler) >= 0.1
    assert metric(app, "greenjobs_hub_blocks_total", handler) >= 1
    assert "greenjobs_hub_lag_seconds_bucket" in app.get("/metrics").text
    health = app.get("/health").json
    assert health["pool"]["busy"] == 0, "its slot is free"


def test_a_job_that_does_not_block_has_no_blocking_on_its_record(app):
    done = app.post_json("/jobs?wait=5", {"handler": "hub.ok"}).json
    assert done["state"] == "succeeded" and done["blocked"] is None


def test_internal_handlers_are_not_listed_or_offered(app):
    names = [h["name"] for h in app.get("/handlers").json["handlers"]]
    assert "greenjobs.webhook" not in names and "hub.spin" in names
    problem = app.post_json("/jobs", {"handler": "nope"}, status=422).json
    assert "greenjobs.webhook" not in problem["detail"]
    spin = next(h for h in app.get("/handlers").json["handlers"] if h["name"] == "hub.spin")
    assert (spin["kind"], spin["declared_kind"], spin["rerouted"]) == ("io", "io", None)
    auto = next(h for h in app.get("/handlers").json["handlers"] if h["name"] == "hub.auto")
    assert (auto["kind"], auto["declared_kind"]) == ("io", "auto")


def test_a_handler_whose_default_timeout_no_job_may_have_stops_start_up(tmp_path):
    with pytest.raises(ConfigurationError, match="'hub.auto' has a default timeout of 5.0 s, above greenjobs.job."
                                                 "max_timeout = 4.0 s"):
        make_app({"here": str(tmp_path)}, **{"greenjobs.workers.cpu": "0", "greenjobs.handlers": "tests.hub_handlers",
                                             "greenjobs.job.max_timeout": "4"})
