"""Scenario 14: 500 slowloris connections and 5,000 concurrent ``?wait`` long-polls at once: other
clients are still served, the slow connections are closed by the header timeout, and every
long-poll gets its job's final state."""
import resource
import selectors
import socket
import time

import pytest
import requests

from tests.e2e.helpers import wait_until

pytestmark = pytest.mark.faults

SLOW, POLLS = 500, 5000


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setblocking(False)
    return s


def test_slowloris_and_5000_long_polls_leave_the_server_serving(make_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SLOW + POLLS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    srv = make_server(app={"greenjobs.workers.cpu": 0, "greenjobs.shutdown.grace": 0.5, "greenjobs.api.max_wait": 300},
                      server={"header_timeout": 3, "max_connections": 10000}, name="slow")
    port = srv.port
    # jobs that run until the test cancels them, so the long-polls stay parked however slowly a loaded
    # machine opens 5,000 connections (jobs of a fixed 8 s ended before the last polls parked under -n 4)
    jobs = [srv.submit("sleep", kwargs={"seconds": 600})["id"] for _ in range(50)]

    # 500 slowloris clients: a request line, then a header byte now and then, never the blank line
    slow = [_connect(port) for _ in range(SLOW)]
    for s in slow:
        s.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    # 5,000 long-polls, each on its own connection, spread over the 50 running jobs
    polls = []
    for i in range(POLLS):
        s = _connect(port)
        s.send(f"GET /jobs/{jobs[i % len(jobs)]}?wait=300 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        polls.append(s)
    t_opened = time.monotonic()
    wait_until(lambda: srv.get("/health", timeout=10).json()["waiters"] >= POLLS, 120, interval=0.2,
               message=f"{POLLS} long-polls parked")

    # other clients are still served while all of that is held open
    fresh = requests.Session()
    for _ in range(20):
        assert fresh.get(srv.url + "/health", timeout=5).status_code == 200
        r = fresh.post(srv.url + "/jobs", json={"handler": "echo", "kwargs": {"n": 1}}, timeout=5)
        assert r.status_code == 202
        assert fresh.get(srv.url + f"/jobs/{r.json()['id']}?wait=5", timeout=10).json()["state"] == "succeeded"
        for s in slow[:50]:                      # the slowloris clients keep trickling
            try:
                s.send(b"a")
            except OSError:
                pass

    # the slow connections are closed by the header timeout (3 s), however they trickle
    def all_slow_closed():
        closed = 0
        for s in slow:
            try:
                data = s.recv(4096)
                closed += data == b"" or b"408" in data or b"400" in data
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        return closed == SLOW
    closed_in = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all_slow_closed():
            closed_in = time.monotonic() - t_opened
            break
        time.sleep(0.5)
    assert closed_in is not None, "slowloris connections still open 30 s after the header timeout"

    # every long-poll answers with its job's final state when the job ends (cancelled here)
    for job_id in jobs:
        assert fresh.delete(srv.url + f"/jobs/{job_id}", timeout=10).json()["state"] == "cancelled"
    sel = selectors.DefaultSelector()
    buffers = {}
    for s in polls:
        sel.register(s, selectors.EVENT_READ)
        buffers[s] = b""
    done = 0
    deadline = time.monotonic() + 60
    while done < POLLS and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            chunk = s.recv(65536)
            buffers[s] += chunk
            head, _, body = buffers[s].partition(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if not chunk or (length and len(body) >= length[0]):
                sel.unregister(s)
                done += 1
    answers = list(buffers.values())
    ok = sum(a.startswith(b"HTTP/1.1 200") and b'"cancelled"' in a for a in answers)
    print(f"slowloris closed within {closed_in:.1f} s of opening; long-polls answered: {done}, cancelled: {ok}")
    assert ok == POLLS, [a[:200] for a in answers if not (a.startswith(b"HTTP/1.1 200") and b'"cancelled"' in a)][:3]
    for s in slow + polls:
        s.close()
    assert srv.get("/health").status_code == 200
