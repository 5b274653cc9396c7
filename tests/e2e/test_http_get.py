"""The http.get handler against a real HTTP server in a thread of the test process."""
from __future__ import annotations

import socket

import pytest

from tests.e2e.helpers import ANY_LOCAL_PORT, QUICK_STOP, assert_problem, wait_job

pytestmark = pytest.mark.e2e



def test_http_get_to_an_allowed_host(make_server, local_http):
    srv = make_server(app={**QUICK_STOP, **ANY_LOCAL_PORT})
    jobs = {
        "ok": srv.submit("http.get", kwargs={"url": local_http.url("/bytes/12345")}),
        "404": srv.submit("http.get", kwargs={"url": local_http.url("/status/404")}),
        "503": srv.submit("http.get", kwargs={"url": local_http.url("/status/503")}),
        "redirect": srv.submit("http.get", kwargs={"url": local_http.url("/redirect")}),
        "localhost": srv.submit("http.get", kwargs={"url": local_http.url("/by-name", host="localhost")}),
    }
    done = {name: wait_job(srv, job["id"], 60) for name, job in jobs.items()}
    for name, job in done.items():
        assert job["state"] == "succeeded", (name, job["error"])

    ok = done["ok"]["result"]
    assert ok["status"] == 200 and ok["bytes"] == 12345
    assert isinstance(ok["elapsed"], (int, float)) and ok["elapsed"] >= 0
    assert done["404"]["result"]["status"] == 404
    assert done["503"]["result"]["status"] == 503
    assert done["redirect"]["result"]["status"] == 302          # redirects are not followed ...
    assert "/redirected" not in local_http.hits                  # ... so the target is never asked
    assert done["localhost"]["result"]["status"] == 200
    assert sorted(local_http.hits) == sorted(["/bytes/12345", "/status/404", "/status/503", "/redirect", "/by-name"])


def test_http_get_to_a_host_not_allowed_is_refused_at_submit(make_server, local_http):
    srv = make_server(app={"greenjobs.http.allowed_hosts": "localhost:*", **QUICK_STOP})
    refused = srv.post("/jobs", {"handler": "http.get", "kwargs": {"url": local_http.url("/forbidden")}})
    body = assert_problem(refused, 422, "allowed_hosts", "127.0.0.1")
    assert body["field"] == "kwargs.url"
    assert "/forbidden" not in local_http.hits and srv.get("/jobs").json()["jobs"] == []

    allowed = srv.submit("http.get", kwargs={"url": local_http.url("/allowed", host="localhost")})
    assert wait_job(srv, allowed["id"], 30)["result"]["status"] == 200
    assert local_http.hits == ["/allowed"]


def test_http_get_to_a_closed_port_fails_cleanly(make_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # bound, never listening: connection refused
        srv = make_server(app={**QUICK_STOP, **ANY_LOCAL_PORT})
        job = srv.submit("http.get", kwargs={"url": f"http://127.0.0.1:{port}/"})
        done = wait_job(srv, job["id"], 60)
    assert done["state"] == "failed"
    assert done["error"]["kind"] == "exception" and done["error"]["message"]
    assert srv.get("/health").json()["pool"]["busy"] == 0
