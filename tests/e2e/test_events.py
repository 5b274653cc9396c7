"""GET /events end to end: Server-Sent Events from a real pserve, read by raw-socket clients.

A client here is a raw HTTP/1.1 socket (chunked decoding and SSE parsing done by hand, so nothing
client-side buffers or rewrites what the server sent), read by a thread of the test process.
Every wait is bounded, every socket has a timeout.
"""
from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.e2e.helpers import QUICK_STOP, submit_batch, wait_batch, wait_job, wait_until

pytestmark = pytest.mark.e2e

EVENT_HANDLERS = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.e2e.event_handlers"}
FAST_RETRY = {"greenjobs.retry.base": 0.05, "greenjobs.retry.max": 0.1}


# ---------------------------------------------------------------------------------------------
# A raw SSE client
# ---------------------------------------------------------------------------------------------

class ChunkedSSE:
    """Incremental decoder: HTTP/1.1 chunked transfer coding, then SSE frames."""

    def __init__(self):
        self.raw = b""          # undecoded transfer bytes
        self.text = b""         # decoded body bytes not yet split into frames
        self.frames: list[dict] = []
        self.ended = False      # the terminating zero-size chunk arrived

    def feed(self, data: bytes) -> None:
        self.raw += data
        while not self.ended:
            line, sep, rest = self.raw.partition(b"\r\n")
            if not sep:
                break
            size = int(line.split(b";")[0], 16)
            if size == 0:
                self.ended = True
                break
            if len(rest) < size + 2:
                break
            self.text += rest[:size]
            self.raw = rest[size + 2:]
        while b"\n\n" in self.text:
            block, _, self.text = self.text.partition(b"\n\n")
            self.frames.append(parse_frame(block.decode()))


def parse_frame(block: str) -> dict:
    frame: dict = {"id": None, "event": None, "data": None, "comments": [], "retry": None}
    data_lines = []
    for line in block.split("\n"):
        if line.startswith(":"):
            frame["comments"].append(line[1:].strip())
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            frame["id"] = int(value)
        elif field == "event":
            frame["event"] = value
        elif field == "data":
            data_lines.append(value)
        elif field == "retry":
            frame["retry"] = int(value)
    if data_lines:
        frame["data"] = json.loads("\n".join(data_lines))
    return frame


def open_stream(url: str, query: str = "", headers: dict | None = None, rcvbuf: int | None = None,
                timeout: float = 30.0) -> tuple[socket.socket, int, dict, bytes]:
    """Connect, send GET /events, read the response head; returns (sock, status, headers, body bytes so far)."""
    host, port = url.split("//", 1)[1].split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, int(port)))
    lines = [f"GET /events{('?' + query) if query else ''} HTTP/1.1", f"Host: {host}:{port}",
             "Accept: text/event-stream"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    hdrs = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        hdrs[key.strip().lower()] = value.strip()
    return sock, status, hdrs, rest


class SSE:
    """One GET /events stream, read by a background thread into ``frames``."""

    def __init__(self, url: str, query: str = "", headers: dict | None = None, read: bool = True):
        self.sock, self.status, self.headers, rest = open_stream(url, query, headers)
        assert self.status == 200, (self.status, self.headers, rest[:500])
        self.decoder = ChunkedSSE()
        self.lock = threading.Lock()
        self.eof = False
        self.stop_flag = False
        self.decoder.feed(rest)
        self.sock.settimeout(0.5)        # (here: a test may close the socket before the thread first runs)
        self.thread = threading.Thread(target=self._run, daemon=True)
        if read:
            self.thread.start()

    def _run(self) -> None:
        while not self.stop_flag:
            if self.decoder.ended:
                self.eof = True
                return
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                self.eof = True
                return
            with self.lock:
                self.decoder.feed(data)
            if self.decoder.ended:
                self.eof = True
                return

    @property
    def frames(self) -> list[dict]:
        with self.lock:
            return list(self.decoder.frames)

    def events(self, name: str | None = None, job: str | None = None) -> list[dict]:
        """Frames that carry a lifecycle event (an id), optionally of one name / one job."""
        return [f for f in self.frames if f["id"] is not None and (name is None or f["event"] == name)
                and (job is None or f["data"]["job"] == job)]

    def wait(self, predicate, timeout: float = 30.0, message: str = "events"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate(self)
            if value:
                return value
            if self.eof and not predicate(self):
                break
            time.sleep(0.02)
        raise AssertionError(f"{message}: not seen within {timeout} s (eof={self.eof}); frames: "
                             f"{[(f['id'], f['event'], f['comments']) for f in self.frames][-40:]}")

    def wait_job(self, job_id: str, final: str, timeout: float = 30.0) -> list[dict]:
        return self.wait(lambda s: (lambda evs: evs if any(e["event"] == final for e in evs) else None)(
            s.events(job=job_id)), timeout, f"{final} of job {job_id}")

    def close(self) -> None:
        self.stop_flag = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.thread.is_alive():
            self.thread.join(5)


@pytest.fixture
def streams():
    """``streams(url, query='', headers=None)``: SSE clients closed at teardown."""
    opened: list[SSE] = []

    def make(url, query="", headers=None, read=True):
        s = SSE(url, query, headers, read)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def metrics_value(srv, name: str, **labels) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families
    response = srv.get("/metrics", timeout=30)
    assert response.status_code == 200, response.text[:300]
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def names(events: list[dict]) -> list[str]:
    return [e["event"] for e in events]


def assert_increasing(events: list[dict]) -> None:
    ids = [e["id"] for e in events]
    assert all(b > a for a, b in zip(ids, ids[1:])), ids
    assert all(e["data"]["id"] == e["id"] for e in events)


# ---------------------------------------------------------------------------------------------
# (a) a job's whole life, in order
# ---------------------------------------------------------------------------------------------

def test_stream_headers_and_retry_hint(make_server, streams):
    srv = make_server(app=QUICK_STOP)
    s = streams(srv.url)
    assert s.headers["content-type"].startswith("text/event-stream")
    assert s.headers.get("cache-control") == "no-cache"
    s.wait(lambda s: any(f["retry"] for f in s.frames), 10, "retry: field")


def test_io_job_life_in_order(make_server, streams):
    srv = make_server(app=QUICK_STOP)
    s = streams(srv.url)
    job = srv.submit("echo", kwargs={"hello": "sse"})
    events = s.wait_job(job["id"], "succeeded")
    assert names(events) == ["submitted", "started", "succeeded"], names(events)
    assert_increasing(events)
    for e in events:
        assert e["data"]["job"] == job["id"] and e["data"]["handler"] == "echo" and e["data"]["kind"] == "io"
    assert events[-1]["data"]["state"] == "succeeded" and events[-1]["data"]["attempts"] == 1
    assert events[1]["data"]["state"] == "running"


@pytest.mark.parametrize("handler", ["cpu.pbkdf2", "evt.cpu_progress"])
def test_cpu_job_life_in_order_on_each_broker(make_server, streams, broker_settings, handler):
    app = {**QUICK_STOP, **EVENT_HANDLERS, "greenjobs.workers.cpu": 1, **broker_settings}
    srv = make_server(app=app)
    wait_until(lambda: srv.get("/health", timeout=10).json()["cpu"]["broker_connected"], 30,
               message="broker connected")
    s = streams(srv.url)
    kwargs = {"iterations": 1000} if handler == "cpu.pbkdf2" else {"steps": 3, "pause": 0.3}
    job = srv.submit(handler, kwargs=kwargs)
    events = s.wait_job(job["id"], "succeeded", timeout=60)
    assert_increasing(events)
    seen = [n for n in names(events) if n != "progress"]
    assert seen == ["submitted", "started", "succeeded"], names(events)
    assert all(e["data"]["kind"] == "cpu" for e in events)
    if handler == "evt.cpu_progress":
        progress = [e for e in events if e["event"] == "progress"]
        assert progress, names(events)
        i_started, i_done = names(events).index("started"), names(events).index("succeeded")
        assert all(i_started < events.index(p) < i_done for p in progress)
        fractions = [p["data"]["progress"]["fraction"] for p in progress]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0, fractions


def test_failing_job_shows_retrying_then_failed(make_server, streams):
    srv = make_server(app={**QUICK_STOP, **FAST_RETRY})
    s = streams(srv.url)
    job = srv.submit("fail", kwargs={"message": "boom"}, max_retries=1)
    events = s.wait_job(job["id"], "failed")
    assert names(events) == ["submitted", "started", "retrying", "started", "failed"], names(events)
    assert_increasing(events)
    retrying, failed = events[2]["data"], events[4]["data"]
    assert retrying["error"]["kind"] == "exception" and "boom" in retrying["error"]["message"]
    assert retrying["run_at"] and retrying["state"] == "scheduled" and retrying["attempts"] == 1
    assert failed["error"]["kind"] == "exception" and "boom" in failed["error"]["message"]
    assert failed["state"] == "failed" and failed["attempts"] == 2
    assert "traceback" not in failed["error"]


def test_timeout_shows_failed_with_kind_timeout(make_server, streams):
    srv = make_server(app=QUICK_STOP)
    s = streams(srv.url)
    job = srv.submit("sleep", kwargs={"seconds": 30}, timeout=0.2)
    events = s.wait_job(job["id"], "failed")
    assert names(events) == ["submitted", "started", "failed"]
    assert events[-1]["data"]["error"]["kind"] == "timeout"


def test_progress_events(make_server, streams):
    srv = make_server(app={**QUICK_STOP, **EVENT_HANDLERS})
    s = streams(srv.url)
    job = srv.submit("evt.progress", kwargs={"steps": 4, "pause": 0.15})
    events = s.wait_job(job["id"], "succeeded")
    assert_increasing(events)
    assert names(events)[:2] == ["submitted", "started"] and names(events)[-1] == "succeeded"
    progress = [e["data"]["progress"] for e in events if e["event"] == "progress"]
    assert [p["fraction"] for p in progress] == [0.25, 0.5, 0.75, 1.0], progress
    assert progress[0]["message"] == "step 1"


def test_cancelled_running_and_queued_jobs(make_server, streams):
    srv = make_server(app={**QUICK_STOP, "greenjobs.pool.size": 1})
    s = streams(srv.url)
    running = srv.submit("sleep", kwargs={"seconds": 60})
    queued = srv.submit("sleep", kwargs={"seconds": 60})
    s.wait(lambda s: s.events("started", running["id"]), 20, "started")
    assert srv.delete(f"/jobs/{queued['id']}").status_code == 200
    assert srv.delete(f"/jobs/{running['id']}").status_code == 200
    ev_running = s.wait_job(running["id"], "cancelled")
    ev_queued = s.wait_job(queued["id"], "cancelled")
    assert names(ev_running) == ["submitted", "started", "cancelled"]
    assert names(ev_queued) == ["submitted", "cancelled"]
    assert ev_running[-1]["data"]["error"]["kind"] == "cancelled"
    assert ev_queued[-1]["data"]["state"] == "cancelled"


def test_manual_retry_of_a_failed_job(make_server, streams):
    srv = make_server(app=QUICK_STOP)
    s = streams(srv.url)
    job = srv.submit("fail", kwargs={"message": "once"})
    s.wait_job(job["id"], "failed")
    assert srv.post(f"/jobs/{job['id']}/retry", {}).status_code in (200, 202)
    s.wait(lambda s: len(s.events("failed", job["id"])) == 2, 30, "second failure")
    assert names(s.events(job=job["id"])) == ["submitted", "started", "failed", "retrying", "started", "failed"]


# ---------------------------------------------------------------------------------------------
# (b) resume with Last-Event-ID
# ---------------------------------------------------------------------------------------------

def test_resume_with_last_event_id_gets_exactly_the_missed_events(make_server, streams):
    srv = make_server(app=QUICK_STOP)
    first = streams(srv.url)
    batch = submit_batch(srv, [{"handler": "echo", "kwargs": {"i": i}} for i in range(5)])
    wait_batch(srv, batch["batch"])
    first.wait(lambda s: len(s.events("succeeded")) >= 5, 30, "first five")
    seen = first.events()
    last = seen[-1]["id"]
    first.close()

    batch = submit_batch(srv, [{"handler": "echo", "kwargs": {"j": j}} for j in range(7)])
    wait_batch(srv, batch["batch"])
    resumed = streams(srv.url, headers={"Last-Event-ID": str(last)})
    resumed.wait(lambda s: len(s.events("succeeded")) >= 7, 30, "missed events")
    time.sleep(0.5)                               # nothing else should follow
    missed = resumed.events()
    assert len(missed) == 21, names(missed)
    assert missed[0]["id"] == last + 1 and all(b["id"] == a["id"] + 1 for a, b in zip(missed, missed[1:]))
    assert not {e["id"] for e in missed} & {e["id"] for e in seen}
    assert {e["data"]["job"] for e in missed} == set(batch["ids"])
    assert not [f for f in resumed.frames if f["event"] in ("reset", "dropped")]
    # the query-string form works the same
    again = streams(srv.url, query=f"last_event_id={last}")
    again.wait(lambda s: len(s.events()) >= 21, 30, "missed events (query)")
    assert [e["id"] for e in again.events()] == [e["id"] for e in missed]


@pytest.mark.parametrize("shared", [True, False])
def test_resume_beyond_the_replay_window_starts_with_reset_then_streams_on(make_server, streams, shared):
    srv = make_server(app={**QUICK_STOP, "greenjobs.events.replay": 100,
                           "greenjobs.events.shared": str(shared).lower()})
    first = streams(srv.url)
    job = srv.submit("echo")
    first.wait_job(job["id"], "succeeded")
    last = first.events()[-1]["id"]
    first.close()
    batch = submit_batch(srv, [{"handler": "echo"} for _ in range(60)])      # 180 events > 100 kept
    wait_batch(srv, batch["batch"])
    if shared:          # the ledger keeps every event of the last 10 s: let the window pass, and a prune run
        time.sleep(11.5)

    resumed = streams(srv.url, headers={"Last-Event-ID": str(last)})
    resumed.wait(lambda s: any(f["event"] == "reset" for f in s.frames), 20, "reset")
    first_frame = [f for f in resumed.frames if f["event"] is not None][0]
    assert first_frame["event"] == "reset" and first_frame["id"] is None, resumed.frames[:3]
    # a reset tells the client to re-read its jobs; the stream must go on afterwards (not end or drop)
    later = srv.submit("echo", kwargs={"after": "reset"})
    resumed.wait(lambda s: s.events("succeeded", later["id"]) or s.eof, 20, "events after the reset")
    assert not [f for f in resumed.frames if f["event"] == "dropped"], \
        [(f["id"], f["event"]) for f in resumed.frames[:5]]
    assert not resumed.eof
    assert names(resumed.events(job=later["id"])) == ["submitted", "started", "succeeded"]
    ids = [e["id"] for e in resumed.events()]
    assert ids == sorted(ids) and len(ids) == len(set(ids))


@pytest.mark.parametrize("shared", [True, False])
def test_resume_across_a_server_restart(make_server, streams, shared):
    """Ids keep increasing across a restart.  With the shared log (the default) the events are in the
    ledger, so a client resuming from an id of the previous run gets exactly what followed it; with each
    server's own ring, it missed whatever happened in between, so it is told with a `reset` first."""
    srv = make_server(app={**QUICK_STOP, "greenjobs.events.shared": str(shared).lower()})
    before = streams(srv.url)
    job = srv.submit("echo")
    before.wait_job(job["id"], "succeeded")
    last = before.events()[-1]["id"]
    before.close()
    assert srv.stop() == 0
    srv.start()
    resumed = streams(srv.url, headers={"Last-Event-ID": str(last)})
    later = srv.submit("echo", kwargs={"after": "restart"})
    resumed.wait(lambda s: s.events("succeeded", later["id"]) or s.eof, 20, "events after the restart")
    controls = [f["event"] for f in resumed.frames if f["id"] is None and f["event"]]
    assert "dropped" not in controls and not resumed.eof, controls
    events = resumed.events()
    assert names(events) == ["submitted", "started", "succeeded"] and events[0]["id"] > last
    assert controls == ([] if shared else ["reset"]), controls


def test_resume_from_an_id_this_server_never_issued(make_server, streams):
    """A Last-Event-ID above every id this server issued (another server behind the same balancer,
    whose ids started from a later clock): the client must not be left silent until this server's
    ids catch up; it is told to re-read (reset) and gets the new events."""
    srv = make_server(app=QUICK_STOP)
    probe = streams(srv.url)
    job = srv.submit("echo")
    current = probe.wait_job(job["id"], "succeeded")[-1]["id"]
    ahead = current + 3_600 * 1_000_000            # a server started an hour later
    resumed = streams(srv.url, headers={"Last-Event-ID": str(ahead)})
    later = srv.submit("echo", kwargs={"after": "ahead"})
    probe.wait_job(later["id"], "succeeded")
    resumed.wait(lambda s: s.events("succeeded", later["id"]), 10, "new events despite a Last-Event-ID ahead")


def test_recent_replays_the_newest_matching_events_then_says_so_then_streams_live(make_server, streams):
    srv = make_server(app=QUICK_STOP)
    watcher = streams(srv.url)
    batch = submit_batch(srv, [{"handler": "echo", "kwargs": {"i": i}} for i in range(5)])
    wait_batch(srv, batch["batch"])
    watcher.wait(lambda s: len(s.events("succeeded")) >= 5, 30, "the first five")
    held = watcher.events()                                  # 15 events: submitted, started, succeeded each

    page = streams(srv.url, query="recent=4")
    page.wait(lambda s: any(f["event"] == "replayed" for f in s.frames), 30, "the replayed marker")
    marker = next(i for i, f in enumerate(page.frames) if f["event"] == "replayed")
    history = [f for f in page.frames[:marker] if f["id"] is not None]
    assert [e["id"] for e in history] == [e["id"] for e in held[-4:]]       # the newest four, oldest first
    assert page.frames[marker]["data"] == {"events": 4}
    later = srv.post("/jobs", {"handler": "echo", "kwargs": {}}).json()["id"]
    page.wait_job(later, "succeeded")
    assert all(e["id"] > held[-1]["id"] for e in page.events()[4:])        # then live, nothing replayed twice

    only = streams(srv.url, query="recent=100&event=succeeded")           # the filters apply to the history
    only.wait(lambda s: any(f["event"] == "replayed" for f in s.frames), 30, "the replayed marker")
    assert {e["data"]["job"] for e in only.events()[:5]} == set(batch["ids"])
    assert {e["event"] for e in only.events()} == {"succeeded"}
    resumed = streams(srv.url, query="recent=100", headers={"Last-Event-ID": str(held[-2]["id"])})
    resumed.wait(lambda s: any(f["event"] == "replayed" for f in s.frames), 30, "the replayed marker")
    assert next(f for f in resumed.frames if f["event"] == "replayed")["data"] == {"events": 0}
    resumed.wait(lambda s: len(s.events()) >= 4, 30, "what the resuming client missed")
    assert resumed.events()[0]["id"] == held[-1]["id"]                     # a resume is not history again
    for bad in ("-1", "x", "1001", "2.5"):
        response = srv.get("/events", params={"recent": bad}, timeout=10, stream=True)
        assert response.status_code == 400 and "recent" in response.json()["detail"], (bad, response.status_code)
        response.close()


def test_bad_last_event_id_is_400(make_server):
    srv = make_server(app=QUICK_STOP)
    for bad in ("abc", "-1", "1.5", "9" * 25):
        response = srv.get("/events", headers={"Last-Event-ID": bad}, timeout=10, stream=True)
        assert response.status_code == 400, (bad, response.status_code)
        response.close()


# ---------------------------------------------------------------------------------------------
# (c) filters
# ---------------------------------------------------------------------------------------------

def test_filters_by_handler_state_job_and_event(make_server, streams):
    srv = make_server(app={**QUICK_STOP, **FAST_RETRY})
    by_handler = streams(srv.url, "handler=fail")
    by_state = streams(srv.url, "state=failed,cancelled")
    by_event = streams(srv.url, "event=started&event=succeeded")
    everything = streams(srv.url)
    echo = srv.submit("echo")
    bad = srv.submit("fail", kwargs={"message": "x"})
    by_job = streams(srv.url, f"job={echo['id']}")
    everything.wait_job(bad["id"], "failed")
    everything.wait_job(echo["id"], "succeeded")
    echo2 = srv.submit("echo", kwargs={"n": 2})        # after by_job subscribed: must not show there
    everything.wait_job(echo2["id"], "succeeded")
    sentinel = srv.submit("fail", kwargs={"message": "sentinel"})
    everything.wait_job(sentinel["id"], "failed")
    by_handler.wait(lambda s: s.events("failed", sentinel["id"]), 20, "sentinel on handler filter")
    by_state.wait(lambda s: s.events("failed", sentinel["id"]), 20, "sentinel on state filter")
    by_event.wait(lambda s: s.events("started", sentinel["id"]), 20, "sentinel on event filter")
    time.sleep(0.3)

    assert {e["data"]["handler"] for e in by_handler.events()} == {"fail"}
    assert names(by_handler.events(job=bad["id"])) == ["submitted", "started", "failed"]
    assert {e["data"]["state"] for e in by_state.events()} <= {"failed", "cancelled"}
    assert [e["data"]["job"] for e in by_state.events()] == [bad["id"], sentinel["id"]]
    assert set(names(by_event.events())) == {"started", "succeeded"}
    assert names(by_event.events(job=echo2["id"])) == ["started", "succeeded"]
    assert {e["data"]["job"] for e in by_job.events()} <= {echo["id"]}
    assert not by_job.events(job=echo2["id"])


def test_bad_filters_are_400(make_server):
    srv = make_server(app=QUICK_STOP)
    for query in ("state=finished", "state=running,nope", "event=exploded"):
        response = srv.get(f"/events?{query}", timeout=10, stream=True)
        assert response.status_code == 400, (query, response.status_code)
        assert response.headers["Content-Type"].startswith("application/problem+json")
        body = response.json()
        assert "running" in body["detail"] or "submitted" in body["detail"], body
        response.close()


# ---------------------------------------------------------------------------------------------
# (d) heartbeats
# ---------------------------------------------------------------------------------------------

def test_heartbeat_on_an_idle_stream(make_server, streams):
    srv = make_server(app={**QUICK_STOP, "greenjobs.events.heartbeat": 0.5})
    s = streams(srv.url)
    s.wait(lambda s: sum(1 for f in s.frames if f["comments"]) >= 2, 20, "two heartbeats")
    assert not s.events()


def test_heartbeat_on_a_filtered_stream_of_a_busy_server(make_server, streams):
    """A stream whose filter matches nothing is idle for the client and its proxies even while the
    server is busy: it must still get heartbeats."""
    srv = make_server(app={**QUICK_STOP, "greenjobs.events.heartbeat": 0.5})
    s = streams(srv.url, "job=00000000000000000000000000000000")
    stop = threading.Event()

    def busy():
        deadline = time.monotonic() + 15
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                srv.http.post(srv.url + "/jobs", json={"handler": "echo"}, timeout=10)
            except Exception:
                pass
            time.sleep(0.02)

    t = threading.Thread(target=busy, daemon=True)
    t.start()
    try:
        s.wait(lambda s: sum(1 for f in s.frames if f["comments"]) >= 2, 10, "heartbeats on a filtered stream")
    finally:
        stop.set()
        t.join(20)


# ---------------------------------------------------------------------------------------------
# (e) a slow subscriber is dropped
# ---------------------------------------------------------------------------------------------

def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_slow_subscriber_is_dropped_and_others_are_unaffected(make_server, streams):
    srv = make_server(app={**QUICK_STOP, "greenjobs.events.replay": 1000, "greenjobs.store.synchronous": "normal",
                           "greenjobs.events.max_lag": 5})
    slow, status, _, rest = open_stream(srv.url, rcvbuf=4096)
    assert status == 200
    normal = streams(srv.url, "event=succeeded")
    rss_before = rss_kb(srv.proc.pid)
    ids = []
    try:
        # 20,000 jobs in batches of 500: each burst of events fits the replay window, so a reader
        # that keeps up is never behind by more than the ring holds (see the test below for bigger ones)
        for _ in range(40):
            body = submit_batch(srv, [{"handler": "echo", "kwargs": {"i": i}} for i in range(500)])
            ids += body["ids"]
        last = ids[-1]
        normal.wait(lambda s: s.events("succeeded", last), 180, "the normal subscriber got the last job")
        # normal requests are unaffected while the slow one sits on its full socket
        assert srv.get("/health", timeout=10).status_code == 200
        assert srv.wait(srv.submit("echo")["id"], 30)["state"] == "succeeded"
        rss_flood = rss_kb(srv.proc.pid)
        dropped_before_read = metrics_value(srv, "greenjobs_event_subscribers_dropped_total")
        print(f"\n[slow subscriber] server RSS before {rss_before} kB, after 20,000 jobs / 60,000 events "
              f"{rss_flood} kB; dropped counter before the slow client read anything: {dropped_before_read}")

        # now the slow client reads, later than max_lag: what the kernel buffered, then a final `dropped`
        # event (its next events are stale), then the end
        time.sleep(6)
        decoder = ChunkedSSE()
        decoder.feed(rest)
        slow.settimeout(30)
        deadline = time.monotonic() + 120
        while not decoder.ended and time.monotonic() < deadline:
            data = slow.recv(1 << 20)
            if not data:
                break
            decoder.feed(data)
        frames = decoder.frames
        assert frames and frames[-1]["event"] == "dropped", [(f["id"], f["event"]) for f in frames[-5:]]
        received = [f for f in frames if f["id"] is not None]
        assert len(received) < 3 * len(ids), len(received)       # it did miss events
        assert all(b["id"] > a["id"] for a, b in zip(received, received[1:]))
        print(f"[slow subscriber] it read {len(received)} events before `dropped` (of {3 * len(ids)})")
    finally:
        slow.close()
    assert len(normal.events("succeeded")) == len(ids) + 1
    assert not [f for f in normal.frames if f["event"] in ("dropped", "reset")]
    assert wait_until(lambda: (metrics_value(srv, "greenjobs_event_subscribers_dropped_total") or 0) >= 1, 20,
                      message="dropped counter")


def test_a_full_batch_with_the_default_window_reaches_a_reading_subscriber_whole(make_server, streams):
    """One POST /jobs/batch of 10,000 jobs (greenjobs.api.max_batch) on the default replay window:
    a client that reads as fast as it can gets every event, and is not dropped."""
    srv = make_server(app={**QUICK_STOP, "greenjobs.store.synchronous": "normal"})
    reader = streams(srv.url, "event=succeeded")
    body = submit_batch(srv, [{"handler": "echo", "kwargs": {"i": i}} for i in range(10_000)])
    wait_batch(srv, body["batch"])
    reader.wait(lambda s: len(s.events("succeeded")) >= 10_000 or s.eof, 120, "10,000 succeeded events")
    assert not [f for f in reader.frames if f["event"] in ("dropped", "reset")]
    assert {e["data"]["job"] for e in reader.events("succeeded")} == set(body["ids"])


def test_a_burst_bigger_than_a_tiny_window_resets_a_reading_subscriber_but_does_not_drop_it(make_server, streams):
    """With greenjobs.events.replay = 1000, a pool of 1,000 finishing at once overruns the window: a
    reading subscriber is told (reset) and goes on, where a slow one would be dropped."""
    srv = make_server(app={**QUICK_STOP, "greenjobs.events.replay": 1000, "greenjobs.store.synchronous": "normal"})
    reader = streams(srv.url, "event=succeeded")
    body = submit_batch(srv, [{"handler": "echo", "kwargs": {"i": i}} for i in range(5000)])
    wait_batch(srv, body["batch"])
    later = srv.submit("echo", kwargs={"after": "the burst"})
    reader.wait(lambda s: any(e["data"]["job"] == later["id"] for e in s.events("succeeded")) or s.eof, 60,
                "the job after the burst")
    assert not reader.eof and not [f for f in reader.frames if f["event"] == "dropped"]
    seen = {e["data"]["job"] for e in reader.events("succeeded")}
    if seen < set(body["ids"]):                  # some were missed: the stream must have said so
        assert [f for f in reader.frames if f["event"] == "reset"]


# ---------------------------------------------------------------------------------------------
# (f) 1,000 subscribers: correctness and cost
# ---------------------------------------------------------------------------------------------

class ManyStreams:
    """``count`` raw SSE sockets read by one selector loop in this thread."""

    def __init__(self, url: str, count: int, query: str = ""):
        self.socks, self.decoders = [], []
        self.selector = selectors.DefaultSelector()
        for i in range(count):
            sock, status, _, rest = open_stream(url, query, timeout=30)
            assert status == 200, (i, status)
            sock.setblocking(False)
            decoder = ChunkedSSE()
            decoder.feed(rest)
            self.socks.append(sock)
            self.decoders.append(decoder)
            self.selector.register(sock, selectors.EVENT_READ, i)

    def pump(self, until, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until():
                return True
            for key, _ in self.selector.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    self.selector.unregister(key.fileobj)
                    continue
                self.decoders[key.data].feed(data)
        return until()

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.selector.close()


def test_thousand_subscribers_each_get_every_event_and_what_it_costs(make_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    srv = make_server(app={**QUICK_STOP, "greenjobs.workers.cpu": 0, "greenjobs.store.synchronous": "normal"})
    pid = srv.proc.pid

    def run_batch(n=100) -> list[str]:
        body = submit_batch(srv, [{"handler": "echo", "kwargs": {"i": i}} for i in range(n)])
        wait_batch(srv, body["batch"])
        return body["ids"]

    run_batch()                                           # warm up
    cpu0 = cpu_seconds(pid)
    run_batch()
    cpu_batch_alone = cpu_seconds(pid) - cpu0             # baseline: the jobs' own cost, no subscriber

    idle_seconds = 5.0
    cpu_i = cpu_seconds(pid)
    time.sleep(idle_seconds)
    cpu_idle_alone = cpu_seconds(pid) - cpu_i            # baseline: an idle server, no subscriber

    rss0, cpu0, t0 = rss_kb(pid), cpu_seconds(pid), time.monotonic()
    many = ManyStreams(srv.url, 1000)
    try:
        wait_until(lambda: metrics_value(srv, "greenjobs_event_subscribers") == 1000, 60,
                   message="1000 subscribers counted")
        cpu_connect, rss1, t_connect = cpu_seconds(pid) - cpu0, rss_kb(pid), time.monotonic() - t0
        cpu_i = cpu_seconds(pid)
        time.sleep(idle_seconds)
        cpu_idle = cpu_seconds(pid) - cpu_i

        cpu_b, rss_b, t_b = cpu_seconds(pid), rss_kb(pid), time.monotonic()
        body = submit_batch(srv, [{"handler": "echo", "kwargs": {"i": i}} for i in range(100)])
        ids = set(body["ids"])

        def all_done():
            return all(sum(1 for f in d.frames if f["event"] == "succeeded" and f["data"]["job"] in ids) == 100
                       for d in many.decoders)

        assert many.pump(all_done, 180), "not every subscriber saw the 100 jobs succeed"
        cpu_delivery, t_delivery, rss2 = cpu_seconds(pid) - cpu_b, time.monotonic() - t_b, rss_kb(pid)

        # sparse events: one job at a time, each of its events woken and written to 1,000 streams alone
        singles, cpu_s = [], cpu_seconds(pid)
        for i in range(10):
            single = srv.submit("echo", kwargs={"single": i})["id"]
            singles.append(single)
            assert many.pump(lambda: all(any(f["event"] == "succeeded" and f["data"]["job"] == single
                                             for f in d.frames[-5:]) for d in many.decoders), 60), i
        cpu_sparse = cpu_seconds(pid) - cpu_s
        for d in many.decoders:
            mine = [f for f in d.frames if f["id"] is not None and f["data"]["job"] in ids]
            assert len(mine) == 300
            assert all(b["id"] > a["id"] for a, b in zip(mine, mine[1:]))
            for job_id in list(ids)[:3]:
                assert [f["event"] for f in mine if f["data"]["job"] == job_id] == ["submitted", "started", "succeeded"]
    finally:
        many.close()
    deliveries = 300 * 1000
    extra = max(0.0, cpu_delivery - cpu_batch_alone)
    print("\n================ cost of the event stream, 1,000 subscribers ================")
    print(f"connect 1,000 streams: {cpu_connect:.3f} s server CPU, {t_connect:.1f} s wall, "
          f"RSS {rss0} -> {rss1} kB (+{rss1 - rss0} kB, {(rss1 - rss0) / 1000:.1f} kB per subscriber)")
    print(f"1,000 idle subscribers for {idle_seconds:.0f} s: {cpu_idle:.3f} s server CPU "
          f"({cpu_idle / idle_seconds * 100:.1f}% of a core; the idle server alone: {cpu_idle_alone:.3f} s)")
    print(f"batch of 100 echo jobs, no subscriber: {cpu_batch_alone:.3f} s server CPU")
    print(f"same batch with 1,000 subscribers (300 events x 1,000 = {deliveries} deliveries): "
          f"{cpu_delivery:.3f} s server CPU, {t_delivery:.2f} s wall, RSS now {rss2} kB (+{rss2 - rss1} kB)")
    print(f"event-stream cost: {extra:.3f} s CPU -> {extra / deliveries * 1e6:.1f} us per event per subscriber, "
          f"{extra / 300 * 1e3:.2f} ms per event for 1,000 subscribers")
    print(f"sparse: 10 single jobs (30 events, each written to 1,000 streams on its own): {cpu_sparse:.3f} s CPU "
          f"-> {cpu_sparse / 30 * 1e3:.2f} ms per event for 1,000 subscribers "
          f"({cpu_sparse / 30 / 1000 * 1e6:.1f} us per event per subscriber)")
    print("=============================================================================")


# ---------------------------------------------------------------------------------------------
# (g) SIGTERM with open streams
# ---------------------------------------------------------------------------------------------

def test_sigterm_with_open_streams_exits_zero_and_ends_them(make_server, streams):
    srv = make_server(app={**QUICK_STOP, "greenjobs.events.heartbeat": 3600})
    opened = [streams(srv.url) for _ in range(5)] + [streams(srv.url, "handler=echo")]
    job = srv.submit("echo")
    for s in opened[:1]:
        s.wait_job(job["id"], "succeeded")
    wait_until(lambda: metrics_value(srv, "greenjobs_event_subscribers") == 6, 20, message="6 subscribers")
    srv.proc.send_signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(30)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        raise AssertionError("pserve did not exit within 30 s of SIGTERM with open event streams")
    assert code == 0, srv.log()[-3000:]
    for s in opened:
        s.wait(lambda s: s.eof, 10, "stream end")
