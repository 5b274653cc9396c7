"""Schedules through the real app and runtime (SQLite, no socket): the HTTP API, firing, the ini shape."""
import json
import time

import gevent
import pytest
import webtest

from greenjobs.pool.errors import ConfigurationError
from greenjobs.server.wsgi import make_app


def post(app, path, body=None, status=None):
    return app.post(path, json.dumps(body) if body is not None else "", content_type="application/json",
                    status=status)


def jobs_of(app, name):
    return app.get(f"/jobs?schedule={name}&limit=500").json["jobs"]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.05)


def test_create_read_change_and_delete(app):
    made = post(app, "/schedules", {"name": "report", "handler": "echo", "kwargs": {"n": 1}, "cron": "0 3 * * *",
                                    "timezone": "Europe/Berlin"}, status=201)
    assert made.headers["Location"] == "/schedules/report"
    body = made.json
    assert (body["cron"], body["timezone"], body["source"], body["paused"], body["last_job"]) == \
        ("0 3 * * *", "Europe/Berlin", "api", False, None)
    assert body["next_fire_at"].endswith(":00.000Z")         # 03:00 Berlin is 01:00 or 02:00 UTC
    assert [s["name"] for s in app.get("/schedules").json["schedules"]] == ["report"]
    post(app, "/schedules", {"name": "report", "handler": "echo", "every": 5}, status=409)
    changed = app.patch("/schedules/report", json.dumps({"every": 3600}), content_type="application/json").json
    assert (changed["every"], changed["cron"], changed["kwargs"]) == (3600.0, None, {"n": 1})
    assert app.delete("/schedules/report").json == {"name": "report", "deleted": True}
    app.get("/schedules/report", status=404)
    app.delete("/schedules/report", status=404)


@pytest.mark.parametrize("body,field", [
    ({"name": "x", "handler": "echo", "cron": "61 * * * *"}, "cron"),
    ({"name": "x", "handler": "echo", "cron": "* * * *"}, "cron"),
    ({"name": "x", "handler": "echo", "cron": "0 0 31 2 *"}, "cron"),
    ({"name": "x", "handler": "echo"}, "cron"),
    ({"name": "x", "handler": "echo", "cron": "* * * * *", "every": 5}, "cron"),
    ({"name": "x", "handler": "echo", "every": 0.5}, "every"),
    ({"name": "x", "handler": "echo", "every": 5, "timezone": "Mars/Olympus"}, "timezone"),
    ({"name": "x", "handler": "echo", "every": 5, "missed": "sometimes"}, "missed"),
    ({"name": "x", "handler": "echo", "every": 5, "overlap": "no"}, "overlap"),
    ({"name": "x", "handler": "echo", "every": 5, "start_at": "yesterday"}, "start_at"),
    ({"name": "x", "handler": "echo", "every": 5, "start_at": "2027-01-02T00:00:00Z",
      "end_at": "2027-01-01T00:00:00Z"}, "end_at"),
    ({"name": "x", "handler": "echo", "every": 5, "priority": 42}, "priority"),
    ({"name": "x", "handler": "echo", "every": 5, "colour": "red"}, "colour"),
    ({"name": "bad name!", "handler": "echo", "every": 5}, "name"),
])
def test_a_bad_schedule_is_a_422_naming_the_field(app, body, field):
    problem = post(app, "/schedules", body, status=422).json
    assert problem["field"] == field, problem
    assert app.get("/schedules").json["schedules"] == []


def test_an_unknown_handler_is_a_422(app):
    problem = post(app, "/schedules", {"name": "x", "handler": "nope", "every": 5}, status=422).json
    assert "nope" in problem["detail"] and "echo" in problem["known_handlers"]


def test_an_every_second_schedule_fires_each_slot_once_and_jobs_say_which(app):
    post(app, "/schedules", {"name": "tick", "handler": "echo", "kwargs": {"n": 7}, "every": 1}, status=201)
    wait_for(lambda: len(jobs_of(app, "tick")) >= 3)
    jobs = jobs_of(app, "tick")
    slots = sorted(j["schedule"]["fire_at"] for j in jobs)
    assert len(set(slots)) == len(slots)
    assert all(s.endswith(".000Z") for s in slots)           # whole seconds: every 1 anchored at the epoch
    listed = app.get("/schedules/tick").json
    assert listed["last_job"]["id"] in {j["id"] for j in jobs} and listed["last_fire_at"] == max(slots)
    wait_for(lambda: all(j["state"] == "succeeded" for j in jobs_of(app, "tick")))
    assert {j["result"]["n"] for j in jobs_of(app, "tick")} == {7}


def test_pause_resume_and_run_now(app):
    post(app, "/schedules", {"name": "t", "handler": "echo", "every": 1, "paused": True}, status=201)
    paused = app.get("/schedules/t").json
    assert paused["paused"] and paused["next_fire_at"] is None
    gevent.sleep(1.5)
    assert jobs_of(app, "t") == []
    extra = post(app, "/schedules/t/run", status=202).json
    assert extra["schedule"] == {"name": "t", "fire_at": None}
    assert app.get("/schedules/t").json["last_fire_at"] is None     # run now is not a slot
    assert post(app, "/schedules/t/resume").json["paused"] is False
    wait_for(lambda: len(jobs_of(app, "t")) >= 2)
    assert post(app, "/schedules/t/pause").json["paused"] is True
    gevent.sleep(0.3)
    count = len(jobs_of(app, "t"))
    gevent.sleep(1.5)
    assert len(jobs_of(app, "t")) == count
    post(app, "/schedules/nope/run", status=404)


def test_overlap_skip_fires_nothing_while_the_last_job_runs(app):
    post(app, "/schedules", {"name": "slow", "handler": "sleep", "kwargs": {"seconds": 2.5}, "every": 1,
                             "overlap": "skip"}, status=201)
    wait_for(lambda: len(jobs_of(app, "slow")) >= 1)
    gevent.sleep(4.2)
    jobs = sorted(jobs_of(app, "slow"), key=lambda j: j["schedule"]["fire_at"])
    # one at a time: a job of 2.5 s every 1 s leaves 2 slots skipped after each, so ~2 jobs in 4.2 s, never 5
    assert 1 <= len(jobs) <= 3, [j["schedule"]["fire_at"] for j in jobs]
    for earlier, later in zip(jobs, jobs[1:]):
        assert later["created_at"] >= earlier["finished_at"]        # never two active at once
    metrics = app.get("/metrics").text
    assert "greenjobs_schedule_slots_skipped_total" in metrics


def make(tmp_path, **settings):
    return make_app({"here": str(tmp_path)}, **{"greenjobs.store.synchronous": "normal", "greenjobs.workers.cpu": "0",
                                                **settings})


def test_ini_declared_schedules_are_stored_marked_and_updated(tmp_path):
    ini = {"greenjobs.schedules": "nightly tick",
           "greenjobs.schedule.nightly.handler": "echo", "greenjobs.schedule.nightly.cron": "30 2 * * *",
           "greenjobs.schedule.nightly.timezone": "America/New_York",
           "greenjobs.schedule.nightly.kwargs": '{"report": "sales"}',
           "greenjobs.schedule.tick.handler": "echo", "greenjobs.schedule.tick.every": "3600",
           "greenjobs.schedule.tick.missed": "once"}
    wsgi = make(tmp_path, **ini)
    app = webtest.TestApp(wsgi)
    try:
        listed = {s["name"]: s for s in app.get("/schedules").json["schedules"]}
        assert listed["nightly"]["source"] == "ini" and listed["nightly"]["kwargs"] == {"report": "sales"}
        assert listed["tick"]["missed"] == "once" and listed["tick"]["every"] == 3600.0
        post(app, "/schedules/tick/pause")
    finally:
        wsgi.registry.greenjobs_runtime.shutdown(0)
    wsgi = make(tmp_path, **{**ini, "greenjobs.schedule.tick.every": "60"})
    app = webtest.TestApp(wsgi)
    try:
        tick = app.get("/schedules/tick").json
        assert tick["every"] == 60.0 and tick["paused"] is True     # the ini's change applied, the pause kept
    finally:
        wsgi.registry.greenjobs_runtime.shutdown(0)


@pytest.mark.parametrize("settings,words", [
    ({"greenjobs.schedules": "a", "greenjobs.schedule.b.handler": "echo"}, "not declared"),
    ({"greenjobs.schedules": "a", "greenjobs.schedule.a.handler": "echo", "greenjobs.schedule.a.colour": "x"},
     "unknown schedule field"),
    ({"greenjobs.schedules": "a", "greenjobs.schedule.a.kwargs": "{not json"}, "greenjobs.schedule.a.kwargs"),
    ({"greenjobs.schedules": "a", "greenjobs.schedule.a.handler": "echo", "greenjobs.schedule.a.cron": "0 25 * * *"},
     "greenjobs.schedule.a.cron"),
    ({"greenjobs.schedules": "a", "greenjobs.schedule.a.handler": "nope", "greenjobs.schedule.a.every": "5"},
     "greenjobs.schedule.a.handler"),
])
def test_bad_ini_schedule_keys_stop_start_up(tmp_path, settings, words):
    with pytest.raises(ConfigurationError, match=words):
        make(tmp_path, **settings)
