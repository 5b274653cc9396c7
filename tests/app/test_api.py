import json

import pytest


def post(app, body, status=202, path="/jobs", **kw):
    return app.post(path, json.dumps(body) if not isinstance(body, (bytes, str)) else body,
                    content_type=kw.pop("content_type", "application/json"), status=status, **kw)


def count(app):
    return len(app.get("/jobs?limit=500").json["jobs"])


def assert_problem(response, status, *words):
    assert response.status_int == status
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == status
    for word in words:
        assert word in response.json["detail"]


def test_submit_and_wait(app):
    res = post(app, {"handler": "echo", "kwargs": {"x": 1}})
    assert res.headers["Location"].endswith(f"/jobs/{res.json['id']}")
    assert res.json["kind"] == "io"
    done = app.get(f"/jobs/{res.json['id']}?wait=2").json
    assert done["state"] == "succeeded" and done["result"] == {"x": 1}
    assert done["finished_at"].endswith("Z")


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, ["not valid JSON"]),
    (b"[" * 3000 + b"]" * 3000, 400, ["nested more than 32 levels"]),
    (b'{"handler": "echo", "kwargs": {"x": NaN}}', 400, ["NaN"]),
    (b"", 400, ["empty"]),
    ({"handler": "fetchurl"}, 422, ["unknown handler 'fetchurl'", "echo"]),
    ({"handler": "echo", "priority": 42}, 422, ["priority"]),
    ({"handler": "sleep", "kwargs": {"seconds": "long"}}, 422, ["kwargs.seconds"]),
    ({"handler": "echo", "kwargs": {"pad": "x" * 9000}}, 413, ["greenjobs.api.max_body"]),
])
def test_bad_submissions_are_rejected_and_store_nothing(app, body, status, words):
    res = post(app, body, status=status)
    assert_problem(res, status, *words)
    assert count(app) == 0


def test_wrong_content_type_is_415(app):
    res = post(app, b"handler=echo", status=415, content_type="application/x-www-form-urlencoded")
    assert_problem(res, 415, "application/json")


def test_unknown_handler_lists_known(app):
    res = post(app, {"handler": "nope"}, status=422)
    assert "sleep" in res.json["known_handlers"]


def test_batch_is_all_or_nothing(app):
    res = post(app, {"jobs": [{"handler": "echo"}, {"handler": "echo", "priority": -1}]}, status=422,
               path="/jobs/batch")
    assert_problem(res, 422, "jobs[1].priority")
    assert count(app) == 0
    res = post(app, {"jobs": [{"handler": "echo"}] * 6}, status=422, path="/jobs/batch")
    assert_problem(res, 422, "max_batch")
    res = post(app, {"jobs": []}, status=422, path="/jobs/batch")
    assert count(app) == 0


def test_batch_and_its_counts(app):
    res = post(app, {"jobs": [{"handler": "echo", "kwargs": {"i": i}} for i in range(5)]}, path="/jobs/batch")
    assert len(res.json["ids"]) == 5
    info = app.get(f"/batches/{res.json['batch']}?wait=2").json
    assert info["done"] is True and info["counts"]["succeeded"] == 5 and info["total"] == 5
    results = [app.get(f"/jobs/{i}").json["result"] for i in res.json["ids"]]
    assert results == [{"i": i} for i in range(5)]


def test_unknown_ids_and_routes_are_404_problems(app):
    assert_problem(app.get("/jobs/doesnotexist", status=404), 404, "doesnotexist")
    assert_problem(app.delete("/jobs/doesnotexist", status=404), 404)
    assert_problem(app.get("/batches/nope?wait=1", status=404), 404)
    assert_problem(app.get("/nowhere", status=404), 404, "/nowhere")


def test_wrong_method_is_405(app):
    res = app.put("/jobs", status=405)
    assert_problem(res, 405, "PUT is not allowed")
    assert res.headers["Allow"] == "GET, HEAD, POST"
    dash = app.post("/", status=405)                 # not an API route: still its real methods
    assert dash.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("query", ["wait=abc", "wait=-1", "wait=nan"])
def test_bad_wait_is_400(app, query):
    job = post(app, {"handler": "echo"}).json
    assert_problem(app.get(f"/jobs/{job['id']}?{query}", status=400), 400, "wait")


def test_wait_is_capped_by_max_wait(app):
    job = post(app, {"handler": "sleep", "kwargs": {"seconds": 10}}).json
    res = app.get(f"/jobs/{job['id']}?wait=3600")      # capped to 2 s by the fixture
    assert res.json["state"] == "running"


def test_cancel_and_409(app):
    job = post(app, {"handler": "sleep", "kwargs": {"seconds": 10}}).json
    assert app.delete(f"/jobs/{job['id']}").json["state"] == "cancelled"
    assert_problem(app.delete(f"/jobs/{job['id']}", status=409), 409, "already ended")


def test_list_filters_and_pages(app):
    ids = [post(app, {"handler": "echo"}).json["id"] for _ in range(5)]
    post(app, {"handler": "fail"})
    page1 = app.get("/jobs?handler=echo&limit=3").json
    page2 = app.get(f"/jobs?handler=echo&limit=3&after={page1['next']}").json
    assert [j["id"] for j in page1["jobs"] + page2["jobs"]] == ids[::-1]
    assert page2["next"] is None
    assert_problem(app.get("/jobs?state=done", status=400), 400, "state")
    assert_problem(app.get("/jobs?limit=0", status=400), 400, "limit")


def test_health_and_handlers(app):
    health = app.get("/health").json
    assert health["status"] == "ok" and health["pool"]["size"] == 1000 and health["store"]["ok"]
    names = [h["name"] for h in app.get("/handlers").json["handlers"]]
    assert "cpu.pbkdf2" in names


def test_openapi_matches_the_real_routes(app):
    from pyramid.interfaces import IRoutesMapper
    doc = app.get("/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    # the dashboard (server/dashboard: its page and its static view's "__dashboard/static/" route) is HTML, not API
    routes = {route.name: route.pattern for route in app.app.registry.getUtility(IRoutesMapper).get_routes()
              if not route.name.startswith(("dashboard", "__dashboard"))}
    assert set(routes.values()) == set(doc["paths"])
    served = set()
    for item in app.app.registry.introspector.get_category("views"):
        view = item["introspectable"]
        if view["route_name"] in routes:
            methods = view["request_methods"]
            methods = (methods,) if isinstance(methods, str) else methods
            served |= {(routes[view["route_name"]], m) for m in methods}
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented


def test_retry_revives_a_failed_job_and_refuses_others(app):
    failed = post(app, {"handler": "fail", "kwargs": {"message": "boom"}}).json
    assert app.get(f"/jobs/{failed['id']}?wait=2").json["state"] == "failed"
    revived = app.post(f"/jobs/{failed['id']}/retry", status=202)
    assert revived.json["id"] == failed["id"] and revived.json["state"] in ("queued", "running", "failed")
    again = app.get(f"/jobs/{failed['id']}?wait=2").json
    assert again["state"] == "failed" and again["attempts"] == 2 and len(again["errors"]) == 2
    ok = post(app, {"handler": "echo"}).json
    app.get(f"/jobs/{ok['id']}?wait=2")
    assert_problem(app.post(f"/jobs/{ok['id']}/retry", status=409), 409, "only a failed job")
    assert_problem(app.post("/jobs/nope/retry", status=404), 404)


def test_idempotency_key_returns_the_original_job(app):
    body = {"handler": "sleep", "kwargs": {"seconds": 0.01}}
    first = post(app, body, headers={"Idempotency-Key": "order-42"})
    again = post(app, body, status=200, headers={"Idempotency-Key": "order-42"})
    assert again.json["id"] == first.json["id"]
    assert count(app) == 1
    other = post(app, {"handler": "sleep", "kwargs": {"seconds": 0.02}}, status=422,
                 headers={"Idempotency-Key": "order-42"})
    assert_problem(other, 422, "different request")
    assert_problem(post(app, body, status=422, headers={"Idempotency-Key": "x" * 300}), 422, "Idempotency-Key")
    assert count(app) == 1


def test_batch_items_with_idempotency_keys_are_repeat_safe(app):
    items = [{"handler": "echo", "kwargs": {"n": n}, "idempotency_key": f"item-{n}"} for n in range(3)]
    first = post(app, {"jobs": items}, path="/jobs/batch").json
    assert first["repeated"] == [] and len(set(first["ids"])) == 3
    # the whole batch again (a lost response): the original batch, 200, nothing new stored
    again = post(app, {"jobs": items}, path="/jobs/batch", status=200)
    assert again.json["ids"] == first["ids"] and again.json["batch"] == first["batch"]
    assert again.json["repeated"] == [0, 1, 2] and again.headers["Location"].endswith(first["batch"])
    assert count(app) == 3
    # a mix: known items map to their jobs, new ones form a new batch of their own
    mixed = post(app, {"jobs": [items[1], {"handler": "echo", "kwargs": {"n": 9}, "idempotency_key": "item-9"},
                                {"handler": "echo"}]}, path="/jobs/batch").json
    assert mixed["ids"][0] == first["ids"][1] and mixed["repeated"] == [0]
    assert mixed["batch"] != first["batch"] and count(app) == 5
    assert app.get(f"/batches/{mixed['batch']}?wait=2").json["total"] == 2
    # the same key and job on a single POST /jobs is the same request too
    single = post(app, {"handler": "echo", "kwargs": {"n": 2}}, status=200, headers={"Idempotency-Key": "item-2"})
    assert single.json["id"] == first["ids"][2]


def test_batch_idempotency_conflicts_store_nothing(app):
    post(app, {"jobs": [{"handler": "echo", "kwargs": {"n": 1}, "idempotency_key": "k1"}]}, path="/jobs/batch")
    # a known key with another job: 422 for the whole batch
    res = post(app, {"jobs": [{"handler": "echo", "idempotency_key": "new"},
                              {"handler": "echo", "kwargs": {"n": 2}, "idempotency_key": "k1"}]},
               path="/jobs/batch", status=422)
    assert_problem(res, 422, "different request")
    # one key on two different items of one batch
    res = post(app, {"jobs": [{"handler": "echo", "kwargs": {"a": 1}, "idempotency_key": "twice"},
                              {"handler": "echo", "kwargs": {"a": 2}, "idempotency_key": "twice"}]},
               path="/jobs/batch", status=422)
    assert_problem(res, 422, "jobs[0]")
    assert res.json["field"] == "jobs[1].idempotency_key"
    res = post(app, {"jobs": [{"handler": "echo", "idempotency_key": 7}]}, path="/jobs/batch", status=422)
    assert res.json["field"] == "jobs[0].idempotency_key"
    assert count(app) == 1
    # one key on two identical items: one job, listed twice
    same = post(app, {"jobs": [{"handler": "echo", "idempotency_key": "dup"}] * 2}, path="/jobs/batch").json
    assert same["ids"][0] == same["ids"][1] and count(app) == 2


def test_submit_with_wait_answers_with_the_finished_job(app):
    res = post(app, {"handler": "echo", "kwargs": {"x": 2}}, path="/jobs?wait=2")
    assert res.status_int == 202 and res.json["state"] == "succeeded" and res.json["result"] == {"x": 2}
    slow = post(app, {"handler": "sleep", "kwargs": {"seconds": 5}}, path="/jobs?wait=0.1")
    assert slow.json["state"] == "running"                    # not finished in time: as it is now
    again = post(app, {"handler": "echo", "kwargs": {"x": 3}}, path="/jobs?wait=2", headers={"Idempotency-Key": "w1"})
    repeat = post(app, {"handler": "echo", "kwargs": {"x": 3}}, path="/jobs?wait=2", status=200,
                  headers={"Idempotency-Key": "w1"})
    assert repeat.json["id"] == again.json["id"] and repeat.json["state"] == "succeeded"
    assert_problem(post(app, {"handler": "echo"}, path="/jobs?wait=x", status=400), 400, "wait")


def test_paging_survives_the_deletion_of_the_page_boundary_job(app):
    ids = [post(app, {"handler": "echo", "kwargs": {"n": n}}).json["id"] for n in range(5)]
    first = app.get("/jobs?limit=2").json
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    store = app.app.registry.greenjobs_runtime.store
    store._db.write(lambda conn: conn.execute("DELETE FROM jobs WHERE id = ?", (first["jobs"][-1]["id"],)))
    second = app.get(f"/jobs?limit=2&after={first['next']}").json
    assert [j["id"] for j in second["jobs"]] == ids[::-1][2:4]
    old_style = app.get(f"/jobs?limit=2&after={ids[4]}").json          # a job id still works as a cursor
    assert [j["id"] for j in old_style["jobs"]] == ids[::-1][2:4]
    assert_problem(app.get("/jobs?after=nope", status=400), 400, "next")
    assert app.get("/jobs?after=" + "9" * 40, status=400)


def test_unknown_batch_fields_are_422_like_job_fields(app):
    res = app.post("/jobs/batch", json.dumps({"jobs": [{"handler": "echo"}], "jbos": []}),
                   content_type="application/json", status=422)
    assert res.json["field"] == "jbos" and count(app) == 0


def test_a_missing_dashboard_asset_is_404(app):
    assert app.get("/dashboard/static/no-such-file.js", status=404).content_type == "application/problem+json"


def test_openapi_states_what_this_server_enforces(app):
    """Access control off: no operation asks for a credential (each still names its permission); the
    handler list, timeout and page limits are this server's; webhooks off leave callback_url out."""
    doc = app.get("/openapi.json").json
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [], (path, method)
    assert doc["paths"]["/jobs"]["post"]["x-permission"] == "submit"
    spec = doc["components"]["schemas"]["JobSpec"]
    handlers = spec["properties"]["handler"]["enum"]
    assert "echo" in handlers and not any(name.startswith("greenjobs.") for name in handlers)
    assert spec["properties"]["timeout"]["maximum"] == app.app.registry.greenjobs_settings.job_max_timeout
    assert "callback_url" not in spec["properties"]
    limit = next(p for p in doc["paths"]["/jobs"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == app.app.registry.greenjobs_settings.api_max_page
