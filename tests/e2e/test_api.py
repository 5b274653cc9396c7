"""The HTTP contract: happy paths, and every kind of bad input answered with a problem+json
(400/404/405/413/415/422), never a 500, and nothing stored for a rejected request."""
from __future__ import annotations

import hashlib
import json

import pytest
import requests

from tests.e2e.helpers import (PROBLEM, QUICK_STOP, assert_problem, job_count, media_type, parse_time, raw_request,
                               submit_batch, wait_batch, wait_job)
from tests.support import ServerProcess, write_ini

pytestmark = pytest.mark.e2e

MAX_BODY = 65536
MAX_BATCH = 50
MAX_PAGE = 500


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One server for the read-mostly contract checks of this module (small body and batch limits)."""
    ini = write_ini(tmp_path_factory.mktemp("api"), {
        "greenjobs.api.max_body": MAX_BODY, "greenjobs.api.max_batch": MAX_BATCH,
        "greenjobs.api.max_page": MAX_PAGE, **QUICK_STOP})
    srv = ServerProcess(ini).start()
    yield srv
    srv.http.close()          # an idle keep-alive connection would hold up SIGTERM for stop_timeout
    try:
        srv.stop(timeout=30)
    except Exception:
        srv.kill()


def post_raw(srv, path: str, data: bytes, content_type: str | None = "application/json", **kw):
    headers = {} if content_type is None else {"Content-Type": content_type}
    return requests.post(srv.url + path, data=data, headers=headers, timeout=30, **kw)


# ---------------------------------------------------------------------------------------------
# Happy paths
# ---------------------------------------------------------------------------------------------

def test_submit_echo_returns_202_location_and_the_job(api):
    kwargs = {"a": 1, "nested": {"b": [1, 2, "three"]}, "unicode": "gr\u00fcn"}
    response = api.post("/jobs", {"handler": "echo", "kwargs": kwargs})
    assert response.status_code == 202, response.text
    assert media_type(response) == "application/json"
    job = response.json()
    assert response.headers["Location"].endswith(f"/jobs/{job['id']}")
    assert job["handler"] == "echo" and job["kind"] == "io"
    assert job["state"] in ("queued", "running", "succeeded")
    assert job["kwargs"] == kwargs

    done = wait_job(api, job["id"], 30)
    assert done["id"] == job["id"]
    assert done["state"] == "succeeded", done
    assert done["result"] == kwargs
    assert done["error"] is None
    assert done["attempts"] == 1
    created, started, finished = (parse_time(done[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished

    plain = api.get(f"/jobs/{job['id']}")
    assert plain.status_code == 200 and plain.json() == done


def test_builtin_handlers_give_their_documented_results(api):
    jobs = {
        "sleep": api.submit("sleep", kwargs={"seconds": 0.05}),
        "fail": api.submit("fail", kwargs={"message": "boom 42"}),
        "flaky": api.submit("flaky", kwargs={"fail_times": 0}),
        "pbkdf2": api.submit("cpu.pbkdf2", kwargs={"iterations": 1000, "password": "pw", "salt": "s4lt"}),
        "pbkdf2_defaults": api.submit("cpu.pbkdf2", kwargs={"iterations": 10}),
        "spin": api.submit("cpu.spin", kwargs={"seconds": 0.01}),
    }
    done = {name: wait_job(api, job["id"], 60) for name, job in jobs.items()}

    assert done["sleep"]["state"] == "succeeded" and done["sleep"]["result"] == {"slept": 0.05}
    assert done["fail"]["state"] == "failed"
    assert done["fail"]["result"] is None
    assert done["fail"]["error"]["kind"] == "exception"
    assert "boom 42" in done["fail"]["error"]["message"]
    assert isinstance(done["fail"]["error"]["traceback"], str)
    assert done["flaky"]["state"] == "succeeded" and done["flaky"]["result"] == {"attempt": 1}
    assert done["pbkdf2"]["kind"] == "cpu"
    assert done["pbkdf2"]["result"] == hashlib.pbkdf2_hmac("sha256", b"pw", b"s4lt", 1000).hex()
    assert done["pbkdf2_defaults"]["result"] == hashlib.pbkdf2_hmac("sha256", b"x", b"y", 10).hex()
    assert done["spin"]["state"] == "succeeded" and done["spin"]["result"]["spun"] == 0.01


def test_batch_submit_and_wait(api):
    body = submit_batch(api, [{"handler": "echo", "kwargs": {"i": i}} for i in range(10)]
                        + [{"handler": "fail"}])
    assert len(set(body["ids"])) == 11
    final = wait_batch(api, body["batch"], 60)
    assert final["id"] == body["batch"] and final["total"] == 11 and final["done"] is True
    assert final["counts"]["succeeded"] == 10 and final["counts"]["failed"] == 1
    assert sum(final["counts"].values()) == 11
    for i, job_id in enumerate(body["ids"][:10]):
        job = api.get(f"/jobs/{job_id}").json()
        assert job["result"] == {"i": i} and job["batch"] == body["batch"]


def test_delayed_job_is_scheduled_then_runs_after_its_delay(api):
    job = api.submit("echo", kwargs={"later": True}, delay=1.0)
    assert job["state"] == "scheduled"
    assert api.get(f"/jobs/{job['id']}").json()["state"] == "scheduled"
    done = wait_job(api, job["id"], 30)
    assert done["state"] == "succeeded" and done["result"] == {"later": True}
    waited = (parse_time(done["started_at"]) - parse_time(done["created_at"])).total_seconds()
    assert waited >= 0.9, done       # it must not start before its delay


def test_handlers_health_and_openapi(api):
    names = {h["name"] for h in api.get("/handlers").json()["handlers"]}
    assert {"echo", "sleep", "fail", "flaky", "http.get", "cpu.pbkdf2", "cpu.spin"} <= names

    health = api.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["store"]["ok"] is True
    assert {"size", "busy", "pending"} <= set(body["pool"])

    spec = api.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/jobs", "/jobs/batch", "/jobs/{id}", "/batches/{id}", "/health"} <= set(paths)


def test_max_retries_retries_a_failing_job(api):
    """max_retries is accepted by the API, so a job that fails once must be retried."""
    job = api.submit("flaky", kwargs={"fail_times": 2}, max_retries=3)
    done = wait_job(api, job["id"], 30)
    assert done["max_retries"] == 3
    assert done["state"] == "succeeded", (done["state"], done["attempts"], done["error"])
    assert done["result"] == {"attempt": 3} and done["attempts"] == 3


# ---------------------------------------------------------------------------------------------
# Bad input: every one is a problem+json with a useful detail, and stores nothing.
# ---------------------------------------------------------------------------------------------

DEEP = b"[" * 60_000          # under max_body, far over any nesting limit
BAD_BODIES = [
    # id, path, body, content type, status, words in the detail
    ("malformed", "/jobs", b'{"handler": "echo",', "application/json", 400, ["JSON"]),
    ("trailing-garbage", "/jobs", b'{"handler": "echo"} x', "application/json", 400, ["JSON"]),
    ("deep-arrays", "/jobs", DEEP, "application/json", 400, ["nested"]),
    ("deep-objects", "/jobs", b'{"a":' * 12_000, "application/json", 400, ["JSON"]),
    ("deep-arrays-batch", "/jobs/batch", DEEP, "application/json", 400, ["nested"]),
    ("deep-inside-kwargs", "/jobs", b'{"handler":"echo","kwargs":{"x":' + b"[" * 30_000 + b"]" * 30_000 + b"}}",
     "application/json", 400, ["nested"]),
    ("nan", "/jobs", b'{"handler": "echo", "kwargs": {"x": NaN}}', "application/json", 400, ["NaN"]),
    ("infinity", "/jobs", b'{"handler": "echo", "kwargs": {"x": -Infinity}}', "application/json", 400, ["Infinity"]),
    ("empty", "/jobs", b"", "application/json", 400, ["empty"]),
    ("empty-batch", "/jobs/batch", b"", "application/json", 400, ["empty"]),
    ("bad-utf8", "/jobs", b'{"handler": "ech\xff"}', "application/json", 400, ["JSON"]),
    ("text-plain", "/jobs", b'{"handler": "echo"}', "text/plain", 415, ["application/json"]),
    ("no-content-type", "/jobs", b'{"handler": "echo"}', None, 415, ["application/json"]),
    ("form", "/jobs", b"handler=echo", "application/x-www-form-urlencoded", 415, ["application/json"]),
    ("text-plain-batch", "/jobs/batch", b'{"jobs": [{"handler": "echo"}]}', "text/plain", 415, ["application/json"]),
    ("too-large", "/jobs", b'{"handler": "echo", "kwargs": {"x": "' + b"a" * MAX_BODY + b'"}}',
     "application/json", 413, ["max_body"]),
    ("too-large-batch", "/jobs/batch",
     json.dumps({"jobs": [{"handler": "echo", "kwargs": {"x": "a" * 1000}}] * 70}).encode(),
     "application/json", 413, ["max_body"]),
]


@pytest.mark.parametrize("path,body,ctype,status,words", [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_bad_body_is_rejected_and_nothing_stored(api, path, body, ctype, status, words):
    before = job_count(api)
    response = post_raw(api, path, body, ctype)
    assert_problem(response, status, *words)
    assert job_count(api) == before
    assert api.get("/health").json()["store"]["ok"] is True


def test_chunked_body_over_max_body_is_413_and_nothing_stored(api):
    before = job_count(api)

    def chunks():
        yield b'{"handler": "echo", "kwargs": {"x": "'
        for _ in range(MAX_BODY // 4096 + 2):
            yield b"a" * 4096
        yield b'"}}'
    response = requests.post(api.url + "/jobs", data=chunks(), headers={"Content-Type": "application/json"},
                             timeout=30)
    assert_problem(response, 413, "max_body")
    assert job_count(api) == before


ECHO = {"handler": "echo"}
BAD_JOBS = [
    # id, body, field (None: no field member expected), words in the detail
    ("missing-handler", {}, "handler", ["handler"]),
    ("handler-not-string", {"handler": 5}, "handler", ["handler"]),
    ("body-is-list", [ECHO], "body", ["object"]),
    ("body-is-string", "echo", "body", ["object"]),
    ("body-is-null", None, "body", ["object"]),
    ("unknown-field", {"handler": "echo", "prio": 1}, "prio", ["unknown field"]),
    ("args-not-list", {"handler": "echo", "args": {"a": 1}}, "args", ["array"]),
    ("kwargs-not-object", {"handler": "echo", "kwargs": [1]}, "kwargs", ["object"]),
    ("priority-10", {**ECHO, "priority": 10}, "priority", ["0", "9"]),
    ("priority-negative", {**ECHO, "priority": -1}, "priority", ["0", "9"]),
    ("priority-string", {**ECHO, "priority": "5"}, "priority", ["integer"]),
    ("priority-bool", {**ECHO, "priority": True}, "priority", ["integer"]),
    ("priority-float", {**ECHO, "priority": 2.5}, "priority", ["integer"]),
    ("timeout-zero", {**ECHO, "timeout": 0}, "timeout", ["seconds"]),
    ("timeout-negative", {**ECHO, "timeout": -1}, "timeout", ["seconds"]),
    ("timeout-string", {**ECHO, "timeout": "1"}, "timeout", ["seconds"]),
    ("timeout-too-long", {**ECHO, "timeout": 86_401}, "timeout", ["86400"]),
    ("max-retries-negative", {**ECHO, "max_retries": -1}, "max_retries", ["0", "100"]),
    ("max-retries-too-many", {**ECHO, "max_retries": 101}, "max_retries", ["100"]),
    ("max-retries-float", {**ECHO, "max_retries": 1.5}, "max_retries", ["integer"]),
    ("delay-negative", {**ECHO, "delay": -1}, "delay", ["seconds"]),
    ("delay-string", {**ECHO, "delay": "soon"}, "delay", ["seconds"]),
    ("delay-and-run-at", {**ECHO, "delay": 1, "run_at": "2030-01-01T00:00:00Z"}, "delay", ["run_at"]),
    ("run-at-garbage", {**ECHO, "run_at": "tomorrow"}, "run_at", ["ISO 8601"]),
    ("run-at-number", {**ECHO, "run_at": 1234567890}, "run_at", ["ISO 8601"]),
    ("run-at-far-future", {**ECHO, "run_at": "2999-01-01T00:00:00Z"}, "run_at", ["year"]),
    ("sleep-no-seconds", {"handler": "sleep"}, "kwargs.seconds", ["required"]),
    ("sleep-seconds-string", {"handler": "sleep", "kwargs": {"seconds": "1"}}, "kwargs.seconds", ["number"]),
    ("sleep-seconds-negative", {"handler": "sleep", "kwargs": {"seconds": -1}}, "kwargs.seconds", ["number"]),
    ("sleep-seconds-bool", {"handler": "sleep", "kwargs": {"seconds": True}}, "kwargs.seconds", ["number"]),
    ("pbkdf2-float-iterations", {"handler": "cpu.pbkdf2", "kwargs": {"iterations": 1.5}}, "kwargs.iterations",
     ["integer"]),
    ("pbkdf2-zero-iterations", {"handler": "cpu.pbkdf2", "kwargs": {"iterations": 0}}, "kwargs.iterations",
     ["number"]),
    ("pbkdf2-password-not-string", {"handler": "cpu.pbkdf2", "kwargs": {"iterations": 1, "password": 5}},
     "kwargs.password", ["string"]),
    ("http-get-ftp", {"handler": "http.get", "kwargs": {"url": "ftp://127.0.0.1/x"}}, "kwargs.url", ["http"]),
    ("http-get-no-url", {"handler": "http.get", "kwargs": {}}, "kwargs.url", ["string"]),
    ("fail-message-not-string", {"handler": "fail", "kwargs": {"message": 5}}, "kwargs.message", ["string"]),
    ("flaky-negative", {"handler": "flaky", "kwargs": {"fail_times": -1}}, "kwargs.fail_times", ["number"]),
]


@pytest.mark.parametrize("body,field,words", [b[1:] for b in BAD_JOBS], ids=[b[0] for b in BAD_JOBS])
def test_invalid_job_is_422_with_field_and_nothing_stored(api, body, field, words):
    before = job_count(api)
    response = post_raw(api, "/jobs", json.dumps(body).encode())
    problem = assert_problem(response, 422, *words)
    assert problem.get("field") == field, problem
    assert job_count(api) == before


def test_unknown_handler_is_422_with_known_handlers(api):
    before = job_count(api)
    problem = assert_problem(api.post("/jobs", {"handler": "no.such.handler"}), 422, "no.such.handler")
    assert {"echo", "sleep", "fail", "flaky", "http.get", "cpu.pbkdf2", "cpu.spin"} <= set(problem["known_handlers"])
    problem = assert_problem(api.post("/jobs/batch", {"jobs": [ECHO, {"handler": "nope"}]}), 422, "nope")
    assert "echo" in problem["known_handlers"]
    assert job_count(api) == before


BAD_BATCHES = [
    ("no-jobs-key", {}, ["jobs"]),
    ("empty-list", {"jobs": []}, ["at least one"]),
    ("jobs-not-list", {"jobs": {"handler": "echo"}}, ["jobs"]),
    ("body-is-list", [ECHO], ["jobs"]),
    ("too-many", {"jobs": [ECHO] * (MAX_BATCH + 1)}, ["max_batch", str(MAX_BATCH)]),
]


@pytest.mark.parametrize("body,words", [b[1:] for b in BAD_BATCHES], ids=[b[0] for b in BAD_BATCHES])
def test_invalid_batch_is_422_and_nothing_stored(api, body, words):
    before = job_count(api)
    assert_problem(api.post("/jobs/batch", body), 422, *words)
    assert job_count(api) == before


def test_batch_is_all_or_nothing(api):
    before = job_count(api)
    good = [{"handler": "echo", "kwargs": {"i": i}} for i in range(5)]
    bad = {"handler": "sleep", "kwargs": {"seconds": "x"}}
    problem = assert_problem(api.post("/jobs/batch", {"jobs": good[:2] + [bad] + good[2:]}), 422, "jobs[2]")
    assert problem["field"] == "jobs[2].kwargs.seconds"
    problem = assert_problem(api.post("/jobs/batch", {"jobs": good + [{"handler": "echo", "priority": 99}]}), 422)
    assert problem["field"] == "jobs[5].priority"
    assert job_count(api) == before
    # the largest allowed batch is accepted
    body = submit_batch(api, [ECHO] * MAX_BATCH)
    assert wait_batch(api, body["batch"], 60)["counts"]["succeeded"] == MAX_BATCH
    assert job_count(api) == before + MAX_BATCH


@pytest.fixture(scope="module")
def known_job(api):
    job = api.submit("echo", kwargs={"k": "v"})
    wait_job(api, job["id"], 30)
    return job["id"]


BAD_QUERIES = [
    ("state-bogus", "/jobs?state=bogus", ["state"]),
    ("limit-zero", "/jobs?limit=0", ["limit"]),
    ("limit-text", "/jobs?limit=many", ["limit"]),
    ("limit-float", "/jobs?limit=1.5", ["limit"]),
    ("limit-over-max-page", f"/jobs?limit={MAX_PAGE + 1}", ["limit", str(MAX_PAGE)]),
    ("wait-text", "/jobs/{id}?wait=forever", ["wait"]),
    ("wait-negative", "/jobs/{id}?wait=-1", ["wait"]),
    ("wait-nan", "/jobs/{id}?wait=nan", ["wait"]),
    ("batch-wait-text", "/batches/{id}?wait=x", ["wait"]),
]


@pytest.mark.parametrize("path,words", [b[1:] for b in BAD_QUERIES], ids=[b[0] for b in BAD_QUERIES])
def test_bad_query_parameter_is_400(api, known_job, path, words):
    assert_problem(api.get(path.format(id=known_job), timeout=30), 400, *words)


NOT_FOUND = [
    ("get-unknown-job", "GET", "/jobs/00000000000000000000000000000000", ["00000000000000000000000000000000"]),
    ("wait-unknown-job", "GET", "/jobs/00000000000000000000000000000000?wait=1", ["00000000000000000000000000000000"]),
    ("delete-unknown-job", "DELETE", "/jobs/00000000000000000000000000000000", ["00000000000000000000000000000000"]),
    ("unknown-batch", "GET", "/batches/nope", ["nope"]),
    ("unknown-route", "GET", "/nope", ["/nope"]),
    ("unknown-nested-route", "GET", "/jobs/a/b", ["/jobs/a/b"]),
    ("post-unknown-route", "POST", "/nope", ["/nope"]),
]


@pytest.mark.parametrize("method,path,words", [b[1:] for b in NOT_FOUND], ids=[b[0] for b in NOT_FOUND])
def test_unknown_thing_is_404_problem(api, method, path, words):
    before = job_count(api)
    response = api.http.request(method, api.url + path, json={"handler": "echo"} if method == "POST" else None,
                                timeout=30)
    assert_problem(response, 404, *words)
    assert job_count(api) == before


WRONG_METHOD = [
    ("put-jobs", "PUT", "/jobs"),
    ("delete-jobs", "DELETE", "/jobs"),
    ("patch-job", "PATCH", "/jobs/{id}"),
    ("post-job", "POST", "/jobs/{id}"),
    ("put-job", "PUT", "/jobs/{id}"),
    ("get-batch-endpoint", "GET", "/jobs/batch"),
    ("post-health", "POST", "/health"),
    ("delete-handlers", "DELETE", "/handlers"),
    ("delete-batch", "DELETE", "/batches/{id}"),
    ("post-openapi", "POST", "/openapi.json"),
]


@pytest.mark.parametrize("method,path", [b[1:] for b in WRONG_METHOD], ids=[b[0] for b in WRONG_METHOD])
def test_wrong_method_is_405_problem_with_allow(api, known_job, method, path):
    before = job_count(api)
    response = api.http.request(method, api.url + path.format(id=known_job), json={"handler": "echo"}, timeout=30)
    assert_problem(response, 405, method)
    assert response.headers.get("Allow"), "a 405 must say which methods are allowed (RFC 9110 15.5.6)"
    assert job_count(api) == before
    assert api.get(f"/jobs/{known_job}").json()["state"] == "succeeded"


def test_header_and_body_oddities_never_500(api):
    """A spread of odd requests: all answered with a 4xx problem, none stored."""
    before = job_count(api)
    cases = [
        ("POST", "/jobs", b'{"handler": "echo"}', {"Content-Type": "application/json; charset=latin-1"}, None),
        ("POST", "/jobs", b"\x00\x01\x02", {"Content-Type": "application/json"}, 400),
        ("POST", "/jobs", b'"\\ud800"', {"Content-Type": "application/json"}, 422),
        ("POST", "/jobs", b"1e999999", {"Content-Type": "application/json"}, 400),
        ("POST", "/jobs", b'{"handler": "echo", "handler": 1}', {"Content-Type": "application/json"}, 422),
        ("POST", "/jobs", b'{"jobs": []}', {"Content-Type": "application/problem+json"}, 422),
        ("POST", "/jobs/batch", b'{"jobs": [null]}', {"Content-Type": "application/json"}, 422),
        ("POST", "/jobs/batch", b'{"jobs": [[]]}', {"Content-Type": "application/json"}, 422),
    ]
    for method, path, body, headers, status in cases:
        headers = {**headers, "Content-Length": str(len(body))}
        code, got_headers, raw = raw_request(api.url, method, path, body, headers)
        if status is None:      # charset parameter on JSON: accepted
            assert code == 202, (body, raw[:300])
            wait_job(api, json.loads(raw)["id"], 30)
            before += 1
            continue
        assert code == status, (body, code, raw[:300])
        assert got_headers["content-type"].startswith(PROBLEM), got_headers
        assert json.loads(raw)["status"] == status
    assert job_count(api) == before


@pytest.mark.parametrize("literal", [b"1e999999", b"-1e400"])
def test_number_overflowing_to_infinity_is_400_not_500(api, literal):
    """NaN/Infinity are refused as "not valid JSON", but 1e999999 parses to inf as well."""
    before = job_count(api)
    response = post_raw(api, "/jobs", b'{"handler": "echo", "kwargs": {"x": ' + literal + b"}}")
    assert_problem(response, 400)
    response = post_raw(api, "/jobs/batch", b'{"jobs": [{"handler": "echo", "args": [' + literal + b"]}]}")
    assert_problem(response, 400)
    assert job_count(api) == before


def test_deeply_nested_kwargs_never_500(make_server):
    """Every nesting depth is either refused with 400 or accepted and readable back; never a 500.

    The body reader relies on RecursionError for its nesting limit, so a body just under the
    limit is parsed, and a deeper json.dumps (storing it, or rendering GET /jobs) then fails.
    """
    srv = make_server(app=QUICK_STOP, name="deep")          # default max_body (1 MiB)
    assert_problem(post_raw(srv, "/jobs", b"[" * 100_000), 400, "nested")
    assert_problem(post_raw(srv, "/jobs/batch", b'{"jobs": ' + b"[" * 100_000), 400, "nested")
    rejected = 0
    failures = []
    for depth in range(850, 1001, 2):
        body = b'{"handler":"echo","kwargs":{"x":' + b"[" * depth + b"]" * depth + b"}}"
        response = post_raw(srv, "/jobs", body)
        if response.status_code == 400:
            assert media_type(response) == PROBLEM
            rejected += 1
            continue
        if response.status_code != 202:
            failures.append((depth, "POST /jobs", response.status_code))
            continue
        job_id = response.json()["id"]
        one = srv.get(f"/jobs/{job_id}?wait=10", timeout=30)
        if one.status_code != 200:
            failures.append((depth, "GET /jobs/{id}", one.status_code))
        page = srv.get("/jobs?limit=1", timeout=30)
        if page.status_code != 200:
            failures.append((depth, "GET /jobs?limit=1", page.status_code))
    assert rejected > 0, "expected the deepest bodies to be rejected with 400"
    assert not failures, f"{len(failures)} failures (depth, request, status): {failures[:6]}"
