"""Flow control on the real app and runtime (one server, SQLite): rate limits space starts, max_running caps
what runs, unique_key answers the active job, expires ends a job that did not start; each visible on the job,
in GET /handlers and in /metrics; bad options are 422s naming the field."""
import time
from datetime import datetime, timedelta, timezone

import gevent
import pytest
import webtest

from greenjobs.server.wsgi import make_app


@pytest.fixture
def app(tmp_path):
    wsgi = make_app({"here": str(tmp_path)}, **{"greenjobs.store.synchronous": "normal", "greenjobs.workers.cpu": "0",
                                                "greenjobs.api.max_batch": "50", "greenjobs.api.max_wait": "10",
                                                "greenjobs.handlers": "greenjobs.handlers.builtin tests.flow_handlers"})
    with gevent.Timeout(60):
        yield webtest.TestApp(wsgi)
    wsgi.registry.greenjobs_runtime.shutdown(0)


def submit(app, handler, status=202, **fields):
    return app.post_json("/jobs", {"handler": handler, **fields}, status=status).json


def done(app, job_id, wait=10):
    return app.get(f"/jobs/{job_id}?wait={wait}").json


def iso_to_epoch(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("fields, field", [
    ({"handler": "flow.echo", "rate_limit": "5/x"}, "rate_limit"),
    ({"handler": "flow.echo", "rate_limit": "0/s"}, "rate_limit"),
    ({"handler": "flow.echo", "rate_key": "{x}"}, "rate_key"),
    ({"handler": "flow.echo", "rate_limit": "1/s", "rate_key": "{missing}"}, "rate_key"),
    ({"handler": "flow.echo", "rate_limit": "1/s", "rate_key": "{x.__class__}", "kwargs": {"x": 1}}, "rate_key"),
    ({"handler": "flow.per_host", "kwargs": {"url": "not a url"}}, "rate_key"),
    ({"handler": "flow.echo", "expires": -1}, "expires"),
    ({"handler": "flow.echo", "expires": "2001-01-01T00:00:00Z"}, "expires"),
    ({"handler": "flow.echo", "expires": "soon"}, "expires"),
    ({"handler": "flow.echo", "expires": 5, "delay": 10}, "expires"),
    ({"handler": "flow.echo", "unique_key": 7}, "unique_key"),
    ({"handler": "flow.echo", "unique_key": ""}, "unique_key"),
])
def test_bad_flow_options_are_422s_naming_the_field(app, fields, field):
    problem = app.post_json("/jobs", fields, status=422).json
    assert problem["field"] == field, problem
    assert app.get("/jobs").json["jobs"] == [], "nothing stored"


def test_a_workflow_step_cannot_be_unique(app):
    problem = app.post_json("/workflows", {"chain": [{"handler": "flow.echo", "unique_key": "u"}]}, status=422).json
    assert problem["field"] == "chain[0].unique_key"


def test_unique_key_answers_the_active_job_and_a_new_one_once_it_ended(app):
    first = submit(app, "flow.capped", kwargs={"seconds": 0.5}, unique_key="nightly")
    again = submit(app, "flow.capped", status=200, kwargs={"seconds": 0.5}, unique_key="nightly")
    assert again["id"] == first["id"] and again["unique_key"] == "nightly"
    batch = app.post_json("/jobs/batch", {"jobs": [{"handler": "flow.echo", "unique_key": "b"},
                                                   {"handler": "flow.echo", "unique_key": "b"}]}, status=202).json
    assert batch["ids"][0] == batch["ids"][1] and batch["repeated"] == [1]
    assert done(app, first["id"])["state"] == "succeeded"
    fresh = submit(app, "flow.capped", kwargs={"seconds": 0.01}, unique_key="nightly")
    assert fresh["id"] != first["id"]


def test_a_job_that_did_not_start_before_it_expired_never_runs(app):
    busy = [submit(app, "flow.capped", kwargs={"seconds": 1.5})["id"] for _ in range(2)]
    job = submit(app, "flow.capped", kwargs={"seconds": 0.01}, expires=0.5)
    assert job["expires_at"] is not None
    gevent.sleep(0.2)
    assert app.get(f"/jobs/{job['id']}").json["waiting"] == {"reason": "max_running"}
    ended = done(app, job["id"], wait=5)
    assert ended["state"] == "cancelled" and ended["error"]["kind"] == "expired"
    assert ended["started_at"] is None and ended["attempts"] == 0
    assert [done(app, i)["state"] for i in busy] == ["succeeded"] * 2
    gevent.sleep(0.3)           # slots free again: still never run
    assert app.get(f"/jobs/{job['id']}").json["attempts"] == 0
    later = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat()
    assert done(app, submit(app, "flow.echo", expires=later, kwargs={"x": 1})["id"])["result"] == 1


def test_a_rate_limit_spaces_starts_and_the_waiting_jobs_say_why(app):
    ids = [submit(app, "flow.limited", kwargs={"n": i})["id"] for i in range(6)]
    views = [app.get(f"/jobs/{i}").json for i in ids]
    reasons = [v["waiting"]["reason"] for v in views if v["waiting"]]
    assert reasons.count("rate_limit") >= 4, views
    assert views[-1]["rate_limit"] == {"bucket": "flow.limited", "per_second": 5.0}
    handlers = {h["name"]: h for h in app.get("/handlers").json["handlers"]}
    assert handlers["flow.limited"]["rate_limit"] == "5/s"
    assert handlers["flow.limited"]["waiting"].get("rate_limit", 0) >= 3
    assert 'greenjobs_jobs_waiting{handler="flow.limited",reason="rate_limit"}' in app.get("/metrics").text
    ended = [done(app, i) for i in ids]
    assert [e["state"] for e in ended] == ["succeeded"] * 6
    starts = sorted(iso_to_epoch(e["started_at"]) for e in ended)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.2 - 0.03, gaps          # 5/s: one start every 0.2 s, never a burst


def test_the_lower_rate_wins_and_rate_key_makes_one_bucket_per_key(app):
    ids = [submit(app, "flow.echo", rate_limit="2/s", kwargs={"x": i})["id"] for i in range(3)]
    starts = sorted(iso_to_epoch(done(app, i)["started_at"]) for i in ids)
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.5 - 0.03
    hosts = [submit(app, "flow.per_host", kwargs={"url": f"http://{h}.example/x"})["id"] for h in ("a", "b", "c")]
    same = [submit(app, "flow.per_host", kwargs={"url": "http://a.example/y"})["id"]]
    assert app.get(f"/jobs/{same[0]}").json["rate_limit"]["bucket"] == "flow.per_host:a.example"
    first = [iso_to_epoch(done(app, i)["started_at"]) for i in hosts]
    assert max(first) - min(first) < 0.4, "three hosts, three buckets: none waits for another"
    assert iso_to_epoch(done(app, same[0])["started_at"]) - first[0] >= 0.5 - 0.03


def test_max_running_caps_what_runs_at_once_and_the_rest_wait_without_a_slot(app):
    ids = [submit(app, "flow.capped", kwargs={"seconds": 0.3})["id"] for i in range(6)]
    gevent.sleep(0.1)
    views = [app.get(f"/jobs/{i}").json for i in ids]
    assert sum(v["state"] == "running" for v in views) == 2
    assert sum((v["waiting"] or {}).get("reason") == "max_running" for v in views) == 4
    assert app.get("/health").json["pool"]["busy"] == 2, "waiting jobs hold no pool slot"
    handlers = {h["name"]: h for h in app.get("/handlers").json["handlers"]}
    assert handlers["flow.capped"]["max_running"] == 2 and handlers["flow.capped"]["waiting"] == {"max_running": 4}
    ended = [done(app, i) for i in ids]
    assert [e["state"] for e in ended] == ["succeeded"] * 6
    spans = [(iso_to_epoch(e["started_at"]), iso_to_epoch(e["finished_at"])) for e in ended]
    most = max(sum(1 for s, f in spans if s <= t < f) for t, _ in spans)
    assert most == 2, spans


def test_jobs_can_be_searched_by_their_arguments(app):
    wanted = submit(app, "flow.echo", kwargs={"x": "order-5521"})
    submit(app, "flow.echo", kwargs={"x": "order-9"})
    found = app.get("/jobs?q=order-5521").json["jobs"]
    assert [j["id"] for j in found] == [wanted["id"]]
    assert app.get("/jobs?q=" + "x" * 201, status=400).json["detail"].startswith("?q= searches")
