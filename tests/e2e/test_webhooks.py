"""Webhooks end to end: a local receiver checks the HMAC signature; 500s are retried with backoff;
every attempt is visible on the job; a finished job whose delivery was never stored gets one."""
import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest

from greenjobs.pool.job import SUCCEEDED, Job, new_id
from greenjobs.pool.store.sqlite import SqliteStore as Store
from tests.e2e.helpers import assert_problem, wait_job, wait_until

pytestmark = pytest.mark.e2e

SECRET = "test-secret-123"
APP = {"greenjobs.webhooks.secret": SECRET, "greenjobs.retry.base": 0.05, "greenjobs.retry.max": 0.2,
       "greenjobs.workers.cpu": 0, "greenjobs.shutdown.grace": 0.5,
       "greenjobs.http.allowed_hosts": "127.0.0.1:* localhost:*"}


class Receiver:
    """Answers POSTs with the next status of ``statuses`` (then 200) and keeps what it received."""

    def __init__(self, statuses=()):
        received, plan, lock = [], list(statuses), threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    received.append((dict(self.headers), body))
                    status = plan.pop(0) if plan else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.received = received
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=()):
        made.append(Receiver(statuses))
        return made[-1]
    yield make
    for r in made:
        r.close()


def verified(headers: dict, body: bytes) -> bool:
    """What a receiver does: recompute the signature over "<timestamp>.<body>" and compare."""
    stamp = headers["X-Greenjobs-Timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Greenjobs-Signature"]) and abs(time.time() - int(stamp)) < 300


def callback_of(srv, job_id, state="delivered", timeout=30):
    return wait_until(lambda: (lambda cb: cb if cb and cb["state"] == state else None)(
        srv.get(f"/jobs/{job_id}").json()["callback"]), timeout, message=f"callback {state}")


def test_a_finished_job_is_posted_signed_to_its_callback_url(make_server, receiver):
    hook = receiver()
    srv = make_server(app=APP)
    job = srv.submit("echo", kwargs={"n": 1}, callback_url=hook.url)
    assert job["callback_url"] == hook.url
    assert wait_job(srv, job["id"])["state"] == "succeeded"
    callback = callback_of(srv, job["id"])
    assert [a["status"] for a in callback["attempts"]] == [200]
    assert len(hook.received) == 1
    headers, body = hook.received[0]
    assert verified(headers, body)
    assert not verified({**headers, "X-Greenjobs-Signature": "sha256=" + "0" * 64}, body)
    sent = json.loads(body)
    assert sent["id"] == job["id"] and sent["state"] == "succeeded" and sent["result"] == {"n": 1}
    assert headers["X-Greenjobs-Job"] == job["id"]
    # the delivery is a job of its own, visible like any other
    delivery = wait_job(srv, callback["delivery"])     # its attempt is recorded just before the job ends
    assert delivery["handler"] == "greenjobs.webhook" and delivery["state"] == "succeeded"


def test_failed_and_cancelled_jobs_are_posted_too(make_server, receiver):
    hook = receiver()
    srv = make_server(app=APP)
    failed = srv.submit("fail", callback_url=hook.url)
    slow = srv.submit("sleep", kwargs={"seconds": 30}, callback_url=hook.url)
    wait_job(srv, failed["id"])
    assert srv.delete(f"/jobs/{slow['id']}").status_code == 200
    callback_of(srv, failed["id"])
    callback_of(srv, slow["id"])
    states = sorted(json.loads(body)["state"] for _, body in hook.received)
    assert states == ["cancelled", "failed"]


def test_a_receiver_answering_500_is_retried_with_backoff_and_every_attempt_is_on_the_job(make_server, receiver):
    hook = receiver([500, 503])
    srv = make_server(app=APP)
    job = srv.submit("echo", callback_url=hook.url)
    callback = callback_of(srv, job["id"])
    assert [a["status"] for a in callback["attempts"]] == [500, 503, 200]
    assert [a["attempt"] for a in callback["attempts"]] == [1, 2, 3]
    assert "answered 500" in callback["attempts"][0]["error"]
    assert len(hook.received) == 3 and all(verified(h, b) for h, b in hook.received)


def test_a_receiver_that_never_accepts_is_given_up_after_max_attempts(make_server, receiver):
    hook = receiver([500] * 10)
    srv = make_server(app={**APP, "greenjobs.webhooks.max_attempts": 3})
    job = srv.submit("echo", callback_url=hook.url)
    callback = callback_of(srv, job["id"], state="failed")
    assert [a["status"] for a in callback["attempts"]] == [500, 500, 500]
    assert srv.get(f"/jobs/{callback['delivery']}").json()["state"] == "failed"
    assert len(hook.received) == 3


def test_callback_urls_are_checked_at_submit(make_server, receiver):
    srv = make_server(app=APP)
    assert_problem(srv.post("/jobs", {"handler": "echo", "callback_url": "http://example.com/hook"}), 422,
                   "allowed_hosts")
    assert_problem(srv.post("/jobs", {"handler": "echo", "callback_url": "ftp://127.0.0.1/x"}), 422, "http")
    assert_problem(srv.post("/jobs", {"handler": "echo", "callback_url": "http://a@127.0.0.1/x"}), 422, "user info")
    assert_problem(srv.post("/jobs", {"handler": "greenjobs.webhook", "kwargs": {"job": "x"}}), 422, "internal")
    off = make_server(app={"greenjobs.workers.cpu": 0, "greenjobs.http.allowed_hosts": "127.0.0.1:*"}, name="nosecret")
    assert_problem(off.post("/jobs", {"handler": "echo", "callback_url": receiver().url}), 422,
                   "greenjobs.webhooks.secret")
    assert srv.get("/jobs").json()["jobs"] == [] and off.get("/jobs").json()["jobs"] == []


def test_a_finished_job_without_its_delivery_gets_one_at_the_next_start(make_server, receiver):
    """A crash between a job's end and the storing of its delivery: the maintenance loop repairs it."""
    hook = receiver()
    srv = make_server(app=APP, start=False)
    import gevent
    store = Store(str(srv.ini.parent / "var" / "greenjobs.sqlite")).open()
    job = Job(id=new_id(), handler="echo", kind="io", state=SUCCEEDED, callback_url=hook.url)
    try:
        store.insert([job], "a-server-that-crashed:1:x")
    finally:
        store.close()
        gevent.sleep(0)
    srv.start()
    callback_of(srv, job.id)
    assert len(hook.received) == 1 and json.loads(hook.received[0][1])["id"] == job.id


def test_a_receiver_that_never_answers_is_on_the_record(make_server):
    """Every attempt that ends by timeout is recorded; the delivery ends failed, not pending forever."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)                      # accepts connections (kernel backlog), never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        srv = make_server(app={**APP, "greenjobs.webhooks.timeout": 0.5, "greenjobs.webhooks.max_attempts": 2})
        job = srv.submit("echo", callback_url=url)
        callback = callback_of(srv, job["id"], state="failed", timeout=60)
        assert [a["attempt"] for a in callback["attempts"]] == [1, 2], callback
        assert all("error" in a and "status" not in a for a in callback["attempts"]), callback
    finally:
        silent.close()
