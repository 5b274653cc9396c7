"""POST /workflows and GET/DELETE /workflows/{id} on the real app and runtime: Celery's canvas semantics
(chain passes results, immutable steps, group, chord, nesting), failures and cancels downstream, 422s."""
import gevent
import pytest
import webtest

from greenjobs.server.wsgi import make_app


@pytest.fixture
def app(tmp_path):
    wsgi = make_app({"here": str(tmp_path)}, **{"greenjobs.store.synchronous": "normal", "greenjobs.workers.cpu": "0",
                                                "greenjobs.api.max_batch": "50", "greenjobs.api.max_wait": "10",
                                                "greenjobs.handlers": "greenjobs.handlers.builtin tests.workflow_handlers"})
    with gevent.Timeout(60):
        yield webtest.TestApp(wsgi)
    wsgi.registry.greenjobs_runtime.shutdown(0)


def run(app, body, wait=10):
    made = app.post_json("/workflows", body, status=202)
    assert made.headers["Location"].endswith(f"/workflows/{made.json['id']}")
    return app.get(f"/workflows/{made.json['id']}?wait={wait}").json


def step(handler, *args, kw=None, **fields):
    return {"handler": handler, "args": list(args), **({"kwargs": kw} if kw else {}), **fields}


def test_a_chain_passes_each_result_to_the_next_step_as_its_first_argument(app):
    done = run(app, {"chain": [step("wf.add", 1, 2), step("wf.add", 10), step("wf.add", 100)]})
    assert (done["state"], done["result"], done["kind"]) == ("succeeded", 113, "chain")
    jobs = [app.get(f"/jobs/{j['id']}").json for j in done["jobs"]]
    assert [j["args"] for j in jobs] == [[1, 2], [3, 10], [13, 100]]
    assert all(j["workflow"] == {"id": done["id"], "waiting_for": 0} for j in jobs)
    assert all(j["batch"] == done["id"] for j in jobs)


def test_an_immutable_step_keeps_its_own_arguments(app):
    done = run(app, {"chain": [step("wf.add", 1), step("wf.add", 7, 8, immutable=True)]})
    assert done["result"] == 15


def test_a_group_answers_its_results_in_order(app):
    done = run(app, {"group": [step("wf.nap", i, kw={"seconds": 0.05 * (5 - i)}) for i in range(5)]})
    assert (done["state"], done["result"]) == ("succeeded", [0, 1, 2, 3, 4])


def test_a_chord_body_receives_the_header_results_in_header_order(app):
    header = [{"handler": "wf.nap", "kwargs": {"x": i, "seconds": 0.02 * (4 - i)}} for i in range(4)]
    done = run(app, {"chord": {"header": header, "body": step("wf.total", 1000)}})
    assert done["result"] == 1006
    body = app.get(f"/jobs/{done['jobs'][-1]['id']}").json
    assert body["args"] == [[0, 1, 2, 3], 1000]


def test_a_chain_inside_a_chord_and_a_group_inside_a_chain(app):
    chord = {"chord": {"header": [{"chain": [step("wf.add", 1), step("wf.add", 1)]}, step("wf.add", 10)],
                       "body": step("wf.total")}}
    done = run(app, {"chain": [chord, {"group": [step("wf.add", 1), step("wf.add", 2)]}, step("wf.total")]})
    # chord: [1+1, 10] -> 12; group: [12+1, 12+2]; total: 27
    assert (done["state"], done["result"]) == ("succeeded", 27)
    assert len(done["jobs"]) == 7


def test_a_failed_middle_step_fails_the_workflow_and_cancels_what_follows_at_once(app):
    done = run(app, {"chain": [step("wf.add", 1), step("wf.boom", kw={"message": "middle"}), step("wf.add"), step("wf.add")]})
    assert done["state"] == "failed" and done["result"] is None
    states = [(j["state"], (j["error"] or {}).get("kind")) for j in done["jobs"]]
    assert states == [("succeeded", None), ("failed", "exception"), ("cancelled", "upstream_failed"),
                      ("cancelled", "upstream_failed")]


def test_a_failed_header_job_cancels_the_body_and_the_other_headers_still_run(app):
    header = [step("wf.boom"), {"handler": "wf.nap", "kwargs": {"x": 1, "seconds": 0.3}}]
    done = run(app, {"chord": {"header": header, "body": step("wf.total")}})
    assert done["state"] == "failed"
    assert [j["state"] for j in done["jobs"]] == ["failed", "succeeded", "cancelled"]


def test_cancelling_a_workflow_cancels_what_has_not_ended(app):
    made = app.post_json("/workflows", {"chain": [step("wf.nap", 1, kw={"seconds": 30}), step("wf.add"), step("wf.add")]},
                         status=202).json
    gevent.sleep(0.2)
    cancelled = app.delete(f"/workflows/{made['id']}").json
    assert cancelled["state"] == "cancelled"
    assert [j["state"] for j in cancelled["jobs"]] == ["cancelled"] * 3
    assert cancelled["jobs"][0]["error"]["kind"] == "cancelled"
    assert {j["error"]["kind"] for j in cancelled["jobs"][1:]} == {"upstream_failed"}
    assert app.get("/health").json["pool"]["busy"] == 0


def test_a_wait_answers_when_the_last_step_ends_and_a_step_cannot_be_retried_alone(app):
    made = app.post_json("/workflows", {"chain": [step("wf.nap", 5, kw={"seconds": 0.3}), step("wf.add", 1)]}, status=202).json
    assert made["state"] == "running" and made["jobs"][1]["waiting_for"] == 1
    waiting = app.get(f"/jobs/{made['jobs'][1]['id']}").json
    assert waiting["state"] == "scheduled" and waiting["run_at"] is None
    assert waiting["workflow"] == {"id": made["id"], "waiting_for": 1}
    assert app.get(f"/workflows/{made['id']}?wait=10").json["result"] == 6
    failed = run(app, {"chain": [step("wf.boom"), step("wf.add")]})
    problem = app.post(f"/jobs/{failed['jobs'][0]['id']}/retry", status=409).json
    assert "workflow" in problem["detail"]


@pytest.mark.parametrize("body, field", [
    ({}, "body"),
    ({"chain": [], "group": []}, "body"),
    ({"pipeline": []}, "body"),
    ({"chain": []}, "chain"),
    ({"chain": [{"handler": "wf.add", "args": [1]}, "x"]}, "chain[1]"),
    ({"group": [{"handler": "nope"}]}, "group[0].handler"),
    ({"chain": [step("wf.add", 1), step("wf.add", 1, 2)]}, "chain[1].args"),     # 3 args for add(x, y)
    ({"chain": [step("wf.add", 1), step("wf.add", immutable="yes")]}, "chain[1].immutable"),
    ({"chain": [step("wf.add", 1, delay=5)]}, "chain[0].delay"),
    ({"chord": {"header": [step("wf.add", 1)]}}, "chord"),
    ({"chord": {"header": [step("wf.add", 1)], "body": {"handler": "wf.total", "bogus": 1}}}, "chord.body.bogus"),
])
def test_a_bad_workflow_is_a_422_naming_the_field_and_stores_nothing(app, body, field):
    before = app.get("/jobs").json["jobs"]
    problem = app.post_json("/workflows", body, status=422).json
    assert problem.get("field") == field, problem
    assert app.get("/jobs").json["jobs"] == before


def test_a_workflow_larger_than_max_batch_is_refused(app):
    problem = app.post_json("/workflows", {"group": [step("wf.add", i) for i in range(51)]}, status=422).json
    assert "at most 50" in problem["detail"]


def test_an_unknown_workflow_is_a_404(app):
    app.get("/workflows/nope", status=404)
    app.delete("/workflows/nope", status=404)
