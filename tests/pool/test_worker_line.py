"""The direct line between a server and a supervised cpu worker (pool/cpu/line.py): its framing, and the
worker's fallback to the broker when the line is gone or the server could not record (unit tests: a real
socket pair, the broker side stubbed; tests/e2e/test_cpu.py runs the real thing)."""
import socket
import threading
import types

import pytest

from greenjobs.pool.cpu import line as line_mod
from greenjobs.pool.cpu.line import Frames, ParentLine, encode
from greenjobs.pool.cpu.worker import Worker
from greenjobs.pool.registry import Registry
from greenjobs.server.settings import load


def test_frames_split_and_join_across_reads():
    frames = Frames()
    data = encode({"a": 1, "s": "line\nbreak"}) + encode({"b": 2})
    assert frames.feed(data[:5]) == []
    assert frames.feed(data[5:]) == [{"a": 1, "s": "line\nbreak"}, {"b": 2}]


def test_a_frame_too_large_or_undecodable_closes_the_line(monkeypatch):
    monkeypatch.setattr(line_mod, "MAX_FRAME", 100)
    with pytest.raises(ConnectionError, match="too large"):
        Frames().feed(b"x" * 101)
    with pytest.raises(ConnectionError, match="undecodable"):
        Frames().feed(b"{not json\n")


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
        reply = answer(got[0])
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
    assert w._claim(a_job(), redelivered=False) is None        # (the caller gives the message back)
    assert w.published == []


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
    w._report({"type": "result", "job": "job-1", "state": "succeeded"})
    assert [body["type"] for body in w.published] == ["result"]
    assert not w.line.broken                                   # the line itself is fine: used again next time


def test_a_recorded_result_is_not_published(worker):
    w, server = worker
    thread = serve_once(server, lambda f: {"corr": f["corr"], "recorded": True})
    w._report({"type": "result", "job": "job-1", "state": "succeeded"})
    thread.join(5)
    assert w.published == []
