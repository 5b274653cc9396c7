"""The direct line between a server and a supervised cpu worker (pool/cpu/line.py): its framing, and the
worker's fallback to the broker when the line is gone or the server could not record (unit tests: a real
socket pair, the broker side stubbed; tests/e2e/test_cpu.py runs the real thing)."""
import socket
import threading
import time
import types

import gevent
import gevent.socket
import pytest

from greenjobs.pool.cpu import line as line_mod
from greenjobs.pool.cpu import worker as worker_mod
from greenjobs.pool.cpu.dispatcher import CpuDispatcher
from greenjobs.pool.cpu.line import Frames, ParentLine, decode, encode
from greenjobs.pool.cpu.worker import Worker
from greenjobs.pool.job import RUNNING, Job
from greenjobs.pool.registry import Registry
from greenjobs.server.settings import load


def test_frames_split_and_join_across_reads():
    frames = Frames()
    data = encode({"a": 1, "s": "line\nbreak"}) + encode({"b": 2})
    assert frames.feed(data[:5]) == []
    assert [decode(raw) for raw in frames.feed(data[5:])] == [{"a": 1, "s": "line\nbreak"}, {"b": 2}]
    assert decode(b"[1]") is None


def test_a_frame_too_large_or_undecodable_closes_the_line():
    frames = Frames(max_frame=100)
    frames.feed(b"x" * 60)
    with pytest.raises(ConnectionError, match="too large"):
        frames.feed(b"x" * 41)
    with pytest.raises(ConnectionError, match="undecodable"):
        decode(b"{not json")


@pytest.fixture
def worker(tmp_path):
    ours, theirs = socket.socketpair()
    w = Worker(load({}, str(tmp_path)), Registry())
    w.line = ParentLine(theirs.detach())
    w.reply_to = types.SimpleNamespace(name="reply-queue")
    w.published = []

    def publish(body, reply=False):         # the broker: a claim is answered "go" at once
        w.published.append(body)
        if body.get("type") == "claim":
            w._replies[body["corr"]] = {"corr": body["corr"], "go": True, "attempts": 1}
    w._publish = publish
    w._drain = lambda timeout: None
    yield w, ours
    ours.close()
    w.line.close()


def serve_once(sock, answer):
    """The server's end: read one frame, answer with ``answer(frame)`` (None: no answer)."""
    def run():
        frames, got = Frames(), []
        while not got:
            got = frames.feed(sock.recv(65536))
        reply = answer(decode(got[0]))
        if reply is not None:
            sock.sendall(encode(reply))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def a_job():
    return types.SimpleNamespace(id="job-1")


def test_a_claim_goes_over_the_line_when_there_is_one(worker):
    w, server = worker
    serve_once(server, lambda f: {"corr": f["corr"], "go": True, "attempts": 3} if f["type"] == "claim" else None)
    assert w._claim(a_job(), redelivered=False)["attempts"] == 3
    assert w.published == []


def test_a_claim_the_server_failed_to_judge_is_no_answer(worker):
    w, server = worker
    serve_once(server, lambda f: {"corr": f["corr"], "error": "the store is failing"})
    started = time.monotonic()
    assert w._claim(a_job(), redelivered=False) is None        # (the caller gives the message back)
    assert time.monotonic() - started < 5, "answered, not timed out"
    assert w.published == [] and not w.line.broken


def test_a_claim_unanswered_over_the_line_breaks_it(worker, monkeypatch):
    w, server = worker
    monkeypatch.setattr(worker_mod, "CLAIM_TIMEOUT", 0.5)
    claims = []
    serve_once(server, claims.append)                       # read, never answered (a stopped server)
    assert w._claim(a_job(), redelivered=False) is None
    assert claims and claims[0]["until"] < time.time() + 0.5, "the server is told when the worker gives up"
    assert w.line.broken
    assert w._claim(a_job(), redelivered=False)["go"] is True  # the next one over the broker
    assert [body["type"] for body in w.published] == ["claim"]


def test_with_the_line_gone_claims_and_results_go_over_the_broker(worker):
    w, server = worker
    server.close()
    assert w._claim(a_job(), redelivered=False) == {"corr": w.published[0]["corr"], "go": True, "attempts": 1}
    w._report({"type": "result", "job": "job-1", "state": "succeeded"})
    assert [body["type"] for body in w.published] == ["claim", "result"]
    assert w.line.broken


def test_a_result_is_published_when_the_server_did_not_record_it(worker):
    w, server = worker
    serve_once(server, lambda f: {"corr": f["corr"], "error": "the store is failing"})
    started = time.monotonic()
    w._report({"type": "result", "job": "job-1", "state": "succeeded"})
    assert time.monotonic() - started < 5, "answered, not timed out"
    assert [body["type"] for body in w.published] == ["result"]
    assert not w.line.broken                                   # the line itself is fine: used again next time


def test_a_recorded_result_is_not_published(worker):
    w, server = worker
    thread = serve_once(server, lambda f: {"corr": f["corr"], "recorded": True})
    w._report({"type": "result", "job": "job-1", "state": "succeeded"})
    thread.join(5)
    assert w.published == []


def test_a_result_unanswered_within_record_timeout_is_published(worker, monkeypatch):
    w, server = worker
    monkeypatch.setattr(worker_mod, "RECORD_TIMEOUT", 0.3)
    serve_once(server, lambda f: None)
    w._report({"type": "result", "job": "job-1", "state": "succeeded"})
    assert [body["type"] for body in w.published] == ["result"]


# -- the server's end ---------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    """A dispatcher serving one line (gevent sockets), its store's claim and its result recording stubbed;
    yields (dispatcher, the worker's end as a blocking socket, the greenlet)."""
    claims = []

    class Store:
        lease_seconds = 30.0

        def claim_for_worker(self, job_id, worker, judge):
            claims.append(job_id)
            if job_id == "failing":
                raise RuntimeError("the store is failing (test)")
            return "go", Job(id=job_id, handler="cpu.x", kind="cpu", state=RUNNING, timeout=0, attempts=1)

    d = CpuDispatcher(load({}, str(tmp_path)), store=Store(), registry=None,
                      sink=types.SimpleNamespace(started=lambda job: None))
    d.claims, d.results = claims, []
    d._on_result = d.results.append
    ours, theirs = gevent.socket.socketpair()
    d._lines.add(ours)
    serving = gevent.spawn(d._serve_line, ours)
    yield d, theirs, serving
    theirs.close()
    serving.kill()


def ask(sock, body, timeout=5.0):
    sock.sendall(encode(body))
    frames, deadline = Frames(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        with gevent.Timeout(max(0.01, deadline - time.monotonic()), False):
            got = frames.feed(sock.recv(65536))
            if got:
                return decode(got[0])
    return None


def test_the_server_answers_claims_and_results_and_counts_them(served):
    d, sock, _ = served
    assert ask(sock, {"type": "claim", "job": "j1", "corr": "c1", "until": time.time() + 10})["go"] is True
    assert ask(sock, {"type": "result", "job": "j1", "corr": "c2", "state": "succeeded"}) == \
        {"corr": "c2", "recorded": True}
    assert ask(sock, {"type": "claim", "job": "failing", "corr": "c3"})["error"].startswith("the store is failing")
    assert d.claims == ["j1", "failing"] and [r["corr"] for r in d.results] == ["c2"]
    assert d.stats()["messages"] == {"line:claim": 2, "line:result": 1}


def test_a_claim_past_its_until_is_refused_without_judging_it(served):
    d, sock, _ = served
    answer = ask(sock, {"type": "claim", "job": "j1", "corr": "c1", "until": time.time() - 1})
    assert "too late" in answer["error"] and d.claims == []


def test_an_undecodable_frame_or_end_of_file_closes_the_line(served):
    d, sock, serving = served
    sock.sendall(b"{not json\n")
    serving.join(5)
    assert serving.dead and d.stats()["lines"] == 0
