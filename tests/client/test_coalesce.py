"""Client(coalesce=True) against a real server: many threads' submits go as batches, each call keeping its own
id, idempotency key and error."""
from __future__ import annotations

import threading
import uuid

import pytest

from greenjobs_client import Client, ConnectionFailed, IdempotencyConflict, UnknownHandler, job_spec
from greenjobs_client.coalesce import Coalescer, _Call
from tests.client.helpers import jobs_with

pytestmark = pytest.mark.e2e


def run_threads(n: int, target) -> list:
    """Run ``target(i)`` in n threads started together; returns their results (or exceptions) by i."""
    out: list = [None] * n
    start = threading.Barrier(n)

    def one(i):
        start.wait()
        try:
            out[i] = target(i)
        except Exception as exc:        # noqa: BLE001 - returned for the test to look at
            out[i] = exc
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_many_threads_submits_go_as_fewer_requests_and_each_call_gets_its_own_job(server, marker):
    with Client(server.url, coalesce=True) as client:
        handles = run_threads(64, lambda i: [client.submit("echo", marker=marker, thread=i, n=n) for n in range(20)])
        assert not [h for h in handles if isinstance(h, Exception)], handles
        calls = [(i, n, handle) for i, hs in enumerate(handles) for n, handle in enumerate(hs)]
        assert len({handle.id for _, _, handle in calls}) == 64 * 20            # one job per call
        stored = {job["id"]: job for job in jobs_with(client, "echo", marker)}
        assert len(stored) == 64 * 20
        for i, n, handle in calls:                                               # and it is that call's job
            assert stored[handle.id]["kwargs"] == {"marker": marker, "thread": i, "n": n}
        coalescer = client.coalescer
        print(f"\n[coalesce] {coalescer.jobs} submits from 64 threads in {coalescer.requests} requests")
        assert coalescer.jobs == 64 * 20 and coalescer.requests < coalescer.jobs / 4
        assert handles[0][0].result(30) == {"marker": marker, "thread": 0, "n": 0}


def test_a_lone_call_goes_alone_and_gets_the_job_as_post_jobs_answers(server, marker):
    with Client(server.url, coalesce=True) as client:
        handle = client.submit("echo", marker=marker)
        assert handle.last is not None and handle.last["id"] == handle.id and handle.last["batch"] is None
        assert client.coalescer.requests == 1


def test_a_refused_job_fails_only_its_own_call(server, marker):
    with Client(server.url, coalesce=True) as client:
        coalescer = Coalescer(client)
        calls = [_Call(job_spec("echo", kwargs={"marker": marker, "n": 0}), uuid.uuid4().hex),
                 _Call(job_spec("no.such.handler", kwargs={"marker": marker}), uuid.uuid4().hex),
                 _Call(job_spec("echo", kwargs={"marker": marker, "n": 2}), uuid.uuid4().hex)]
        coalescer._send(calls)            # one batch: refused whole by the server, so each is sent alone
        assert all(call.done.is_set() for call in calls)
        assert isinstance(calls[1].error, UnknownHandler) and "no.such.handler" in str(calls[1].error)
        assert calls[0].error is None and calls[2].error is None
        assert {job["kwargs"]["n"] for job in jobs_with(client, "echo", marker)} == {0, 2}


def test_each_call_keeps_its_idempotency_key(server, marker):
    key = uuid.uuid4().hex
    with Client(server.url, coalesce=True) as client:
        coalescer = Coalescer(client)
        same = [_Call(job_spec("echo", kwargs={"marker": marker}), key) for _ in range(3)]
        other = _Call(job_spec("echo", kwargs={"marker": marker, "n": 9}), uuid.uuid4().hex)
        coalescer._send(same + [other])   # one batch: three items with one key and body are one job
        assert len({call.job_id for call in same}) == 1 and other.job_id not in {call.job_id for call in same}
        again = client.submit("echo", marker=marker)                  # a separate call without the key: new
        assert again.id not in {call.job_id for call in same + [other]}
        repeat = [_Call(job_spec("echo", kwargs={"marker": marker}), key),
                  _Call(job_spec("echo", kwargs={"marker": marker, "n": 1}), uuid.uuid4().hex)]
        coalescer._send(repeat)           # the key again, later, in another batch: the original job
        assert repeat[0].job_id == same[0].job_id and repeat[1].error is None
        conflict = [_Call(job_spec("echo", kwargs={"marker": marker, "changed": True}), key),
                    _Call(job_spec("echo", kwargs={"marker": marker, "n": 2}), uuid.uuid4().hex)]
        coalescer._send(conflict)         # the key for another job: that call's error, not its neighbour's
        assert isinstance(conflict[0].error, IdempotencyConflict) and conflict[1].error is None
        assert len(jobs_with(client, "echo", marker)) == 5


def test_an_unreachable_server_fails_every_waiting_call():
    with Client("http://127.0.0.1:9", coalesce=True, retries=0, timeout=2) as client:
        errors = run_threads(8, lambda i: client.submit("echo", n=i))
        assert all(isinstance(e, ConnectionFailed) for e in errors), errors


def test_a_job_that_is_not_json_fails_only_its_own_call(server, marker):
    with Client(server.url, coalesce=True) as client:
        def one(i):
            if i == 3:
                return client.submit("echo", marker=marker, when=object())
            return client.submit("echo", marker=marker, i=i)
        answers = run_threads(16, one)
        assert isinstance(answers[3], TypeError)
        assert all(not isinstance(a, Exception) for i, a in enumerate(answers) if i != 3), answers
        assert len(jobs_with(client, "echo", marker)) == 15


def test_a_forked_child_coalesces_with_its_own_senders(server, marker):
    import os
    with Client(server.url, coalesce=True) as client:
        client.submit("echo", marker=marker, who="parent")            # the parent's senders run
        pid = os.fork()
        if pid == 0:                                                  # the child: two calls, then leave
            code = 1
            try:
                handles = run_threads(4, lambda i: client.submit("echo", marker=marker, who="child", i=i))
                code = 0 if all(not isinstance(h, Exception) for h in handles) else 1
            finally:
                os._exit(code)
        waited = 0
        deadline = __import__("time").monotonic() + 30
        while __import__("time").monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                waited = status
                break
            __import__("time").sleep(0.05)
        else:
            os.kill(pid, 9)
            pytest.fail("the forked child's submits hung")
        assert os.waitstatus_to_exitcode(waited) == 0
        assert len([j for j in jobs_with(client, "echo", marker) if j["kwargs"].get("who") == "child"]) == 4
        client.submit("echo", marker=marker, who="parent again")     # and the parent's still work
