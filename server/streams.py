"""``GET /events``: the job lifecycle as Server-Sent Events.

Each subscriber is one greenlet reading the shared event ring (pool/events.py) with its own
cursor: it sleeps until something is appended, sends the events its filters match in one write
(5 ms after the first event, and at most one write per 50 ms: a write costs the same for one event
as for a hundred, so a busy server with a thousand streams pays per write, not per event), and sends a heartbeat comment when
idle so proxies keep the connection open.  A subscriber that
reads too slowly (a write took over a second) and so falls more than ``greenjobs.events.max_lag``
seconds behind (its next event that old), or behind the ring, gets a final ``dropped`` event and is closed; one write
holds at most MAX_WRITE bytes, and at most ``greenjobs.events.max_streams`` streams are open; one overrun while it kept up (a burst larger than the ring, e.g. a huge batch) gets a
``reset`` event and goes on.  A client reconnecting with Last-Event-ID gets what it missed, or a
``reset`` first if some of that is gone.  ``?recent=N`` first replays the newest N events already
in the ring (a page's history on load), then sends a ``replayed`` event.
"""
from __future__ import annotations

import json
import time

import gevent
from pyramid.response import Response
from pyramid.view import view_config

from greenjobs.pool.observe.events import NAMES
from greenjobs.pool.job import STATES
from greenjobs.server.problems import Problem

MAX_CHUNK = 1000          # events per write, so one busy stream cannot hog the hub
MAX_WRITE = 64 * 1024     # bytes per write: what one stalled stream holds unsent, beside the kernel's buffer
SLOW_WRITE = 1.0          # s: a client that takes longer to accept a write is a slow one
STALLED = 60.0            # s: a write that makes no progress this long drops the stream
COALESCE = 0.05           # s: at most ~20 writes a second per stream; events in between go in one write
GATHER = 0.005            # s: after a quiet spell, wait this long so a burst (one job's life) is one write
RECENT_MAX = 1000         # events ``?recent=`` may ask for: a page's history on load, not an export


def _words(request, name: str, allowed=None) -> frozenset[str]:
    values = frozenset(w for v in request.GET.getall(name) for w in v.split(",") if w)
    if allowed is not None and values - set(allowed):
        raise Problem(400, "Invalid filter", f"{name} must be among {', '.join(allowed)}; "
                                             f"got {', '.join(sorted(values - set(allowed)))}")
    if len(values) > 100:
        raise Problem(400, "Invalid filter", f"at most 100 values for {name}")
    return values


def _recent(request) -> int | None:
    text = request.GET.get("recent")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 4 or int(text) > RECENT_MAX:
        raise Problem(400, "Invalid recent", f"recent must be a whole number of events from 0 to {RECENT_MAX}")
    return int(text)


def _last_event_id(request) -> int | None:
    text = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise Problem(400, "Invalid Last-Event-ID", "Last-Event-ID must be the decimal id of an event")
    return int(text)


@view_config(route_name="events", request_method="GET", permission="read")
def events(request):
    """GET /events: a Server-Sent Events stream of lifecycle events (filters, Last-Event-ID resume, heartbeats)."""
    handlers = _words(request, "handler")
    states = _words(request, "state", STATES)
    names = _words(request, "event", NAMES)
    jobs = _words(request, "job")
    last = _last_event_id(request)
    recent = _recent(request)
    runtime = request.registry.greenjobs_runtime
    settings = request.registry.greenjobs_settings
    log, heartbeat, max_lag = runtime.events, settings.events_heartbeat, settings.events_max_lag
    if log.subscribers >= settings.events_max_streams:
        raise Problem(503, "Too many event streams", f"{log.subscribers} event streams are open, the limit of "
                      f"greenjobs.events.max_streams; retry shortly", {"Retry-After": "5"})

    def wanted(event) -> bool:
        return ((not handlers or event.handler in handlers) and (not states or event.state in states)
                and (not names or event.name in names) and (not jobs or event.job_id in jobs))

    sock = request.environ.get("greenjobs.socket")

    def stream():
        writing = False
        if sock is not None:
            sock.settimeout(STALLED)            # a client that takes nothing for this long is dropped
        log.subscribe()                         # with a shared log: every server writes its events from here on
        try:
            cursor = log.last_id                # "from now" is before the client sees the first byte
            yield b"retry: 2000\n\n"
            if last is not None and last <= log.last_id:
                new, gap = log.since(last)
                if gap:
                    yield _control("reset", "some events after Last-Event-ID are gone from the replay window; "
                                            "re-read the jobs you follow")
                cursor = last if not gap else (new[0].id - 1 if new else log.last_id)
            elif last is not None:              # an id this server never issued: start from now
                yield _control("reset", "Last-Event-ID is not one of this server's events; streaming from now")
            if recent is not None:
                # history on load (a resuming client has it already): the newest matching events before now,
                # oldest first, then a ``replayed`` event, so a client can tell history from live events
                replayed = _newest(log, cursor, wanted, recent) if last is None else []
                yield b"".join(event.sse() for event in replayed) + (
                    f"event: replayed\ndata: {json.dumps({'events': len(replayed)})}\n\n".encode())
            sent_at = time.monotonic()
            opened_at = time.time()             # a replay's events count as late from here, not from their time
            gathered = False                    # did we already wait for this write's events to gather?
            behind = False                      # did the last write leave events for the next one?
            slow = False                        # did the client take long to accept the last write?
            while not log.closed:
                wake = log.watch()               # before reading, so no append slips between
                new, gap = log.since(cursor)
                if new and slow and time.time() - max(new[0].at, opened_at) > max_lag:
                    # behind by more than max_lag because the client is slow to take our writes (a busy hub
                    # that is late to serve a quick reader is not the reader's fault): it gets stale events only
                    log.dropped += 1
                    yield _control("dropped", f"this stream fell more than {max_lag} s behind; reconnect")
                    return
                if gap:
                    if slow:
                        log.dropped += 1
                        yield _control("dropped", "this stream fell behind the replay window; reconnect")
                        return
                    # overrun while keeping up (a burst larger than the window): say so, go on
                    yield _control("reset", "a burst of events larger than the replay window went by; "
                                            "re-read the jobs you follow")
                    cursor = new[0].id - 1
                    continue
                if new:
                    # wrote just now: gather a little more first, unless events come so fast that
                    # waiting could let the ring run past this stream
                    elapsed = time.monotonic() - sent_at
                    if not gathered and not behind and len(new) * (1 + COALESCE / max(elapsed, 0.001)) < log.size / 2:
                        gathered = True
                        gevent.sleep(max(COALESCE - elapsed, GATHER))
                        continue
                    gathered = False
                    parts, size = [], 0
                    behind = len(new) > MAX_CHUNK      # more is waiting: write again at once, no gathering
                    for event in new[:MAX_CHUNK]:
                        cursor = event.id
                        if wanted(event):
                            parts.append(event.sse())
                            size += len(parts[-1])
                            if size >= MAX_WRITE:
                                behind = event is not new[-1]
                                break
                    chunk = b"".join(parts)
                    if chunk:
                        started = time.monotonic()
                        writing = True
                        yield chunk
                        writing = False
                        sent_at = time.monotonic()
                        slow = sent_at - started > SLOW_WRITE
                    if time.monotonic() - sent_at < heartbeat:
                        continue
                elif wake.wait(max(0.0, heartbeat - (time.monotonic() - sent_at))):
                    continue
                if time.monotonic() - sent_at >= heartbeat:   # idle, or nothing that matches the filters
                    yield b": heartbeat\n\n"
                    sent_at = time.monotonic()
        except GeneratorExit:
            if writing:                         # the write failed or timed out: a stalled client
                log.dropped += 1
            raise
        finally:
            log.unsubscribe()

    response = Response(app_iter=stream(), content_type="text/event-stream", charset="utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"      # tell nginx not to buffer the stream
    return response


def _newest(log, upto: int, wanted, limit: int) -> list:
    """The newest ``limit`` events of the ring with ids up to ``upto`` that ``wanted`` accepts, oldest first."""
    out = []
    if limit:
        for n, event in enumerate(reversed(log.since(0)[0])):
            if event.id <= upto and wanted(event):
                out.append(event)
                if len(out) == limit:
                    break
            if n % 5000 == 4999:
                gevent.sleep(0)         # a big ring and a rare filter: let other greenlets run meanwhile
    out.reverse()
    return out


def _control(name: str, message: str) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'message': message})}\n\n".encode()
