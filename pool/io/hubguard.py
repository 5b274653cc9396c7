"""The hub guard: notice when the event loop is blocked, say who blocked it, and contain the culprit.

One hub runs every io job, request and long-poll of a server, so a handler that blocks it (a C call without
gevent support, an unpatched ``time.sleep``, a long pure-Python loop) stalls them all.  The guard costs the
per-job path nothing:

- on the hub, a timer ticks every ``max_blocking / 2`` seconds and notes when it last ran (its lateness is
  the hub's lag, a histogram in /metrics);
- in an OS thread of its own (never a greenlet: it must run while the hub cannot), a watcher checks that
  note; once the hub has not ticked for ``max_blocking`` seconds, it reads the main thread's current frame
  (``sys._current_frames``) and walks it up to the io executor's job frame (the job: id, handler) or a
  request's frame (its route), else the server's own code ("runtime"), and keeps the stack.
- when the hub runs again, the tick closes the incident with how long the hub was really blocked and hands
  it to ``on_blocked`` in a greenlet.

The runtime ties each incident to its job (``greenjobs.pool.io.hubguard.Blocked`` below: the job record,
a ``blocked`` event, a log line with the stack once per handler per minute, /metrics) and reroutes an io
handler that keeps blocking to the cpu worker processes.
"""
from __future__ import annotations

import logging
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import gevent
from gevent import monkey

log = logging.getLogger(__name__)

_start_thread = monkey.get_original("_thread", "start_new_thread")
_get_ident = monkey.get_original("_thread", "get_ident")
_sleep = monkey.get_original("time", "sleep")

STACK_LINES = 12        # frames of the blocking stack kept (innermost last)


@dataclass
class Incident:
    """One stretch of the hub not switching: who held it (``culprit``: job, request or runtime) and how long."""

    since: float                    # monotonic time of the last tick before the block
    culprit: str                    # "job", "request" or "runtime"
    job_id: str | None = None
    handler: str | None = None
    route: str | None = None
    stack: list[str] = field(default_factory=list)
    seconds: float = 0.0            # how long the hub did not run (set when it ran again)

    @property
    def label(self) -> str:
        """The handler name, ``request:<route>`` or ``runtime``: the /metrics label of the culprit."""
        if self.culprit == "job":
            return self.handler or "?"
        if self.culprit == "request":
            return f"request:{self.route or '?'}"
        return "runtime"


def culprit_of(frame, job_code) -> tuple[str, dict]:
    """Walk from the innermost ``frame`` outwards: the io executor's job body (``job_code``) names the job; a
    frame with a Pyramid ``request`` local names the route; else the server's own code."""
    request_route = None
    f = frame
    while f is not None:
        if f.f_code is job_code:
            run = f.f_locals.get("run")
            job = getattr(run, "job", None)
            if job is not None:
                return "job", {"job_id": job.id, "handler": job.handler}
        if request_route is None and "request" in f.f_code.co_varnames:
            request = f.f_locals.get("request")
            path = getattr(request, "path_info", None)
            if isinstance(path, str):
                route = getattr(getattr(request, "matched_route", None), "name", None)
                request_route = route or path
        f = f.f_back
    if request_route is not None:
        return "request", {"route": request_route}
    return "runtime", {}


class HubMonitor:
    """Ticks on the hub and watches from a thread; calls ``on_blocked(incident)`` (in a greenlet) for each block
    longer than ``max_blocking`` seconds, and ``on_lag(seconds)`` on every tick (for the lag histogram)."""

    def __init__(self, max_blocking: float, job_code, on_blocked: Callable[[Incident], None],
                 on_lag: Callable[[float], None] | None = None):
        self.max_blocking = max_blocking
        self.interval = max_blocking / 2
        self.job_code = job_code
        self.on_blocked = on_blocked
        self.on_lag = on_lag
        self._last = time.monotonic()
        self._open: Incident | None = None          # written by the watcher thread, closed by the tick
        self._timer = None
        self._running = False
        self._main = _get_ident()
        self.incidents = 0

    def start(self) -> None:
        """Start the tick (on this thread's hub) and the watcher thread."""
        self._main = _get_ident()
        self._last = time.monotonic()
        self._running = True
        self._timer = gevent.get_hub().loop.timer(self.interval, self.interval)
        self._timer.start(self._tick)
        _start_thread(self._watch, ())

    def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    # -- on the hub --------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        lag = max(0.0, now - self._last - self.interval)
        self._last = now
        if self.on_lag is not None:
            self.on_lag(lag)
        incident = self._open
        if incident is not None:
            self._open = None
            incident.seconds = now - incident.since - self.interval / 2     # (the tick's own wait, half on average)
            self.incidents += 1
            gevent.spawn(self.on_blocked, incident)

    # -- in the watcher thread -----------------------------------------------------------
    def _watch(self) -> None:
        while self._running:
            _sleep(self.interval / 2)
            since = self._last
            # the hub was free at ``since`` and its next tick was due ``interval`` later: only past that plus
            # max_blocking is a block of at least max_blocking certain
            if self._open is not None or time.monotonic() - since < self.max_blocking + self.interval:
                continue
            frame = sys._current_frames().get(self._main)
            if frame is None:
                continue
            try:
                kind, who = culprit_of(frame, self.job_code)
                stack = traceback.format_stack(frame)[-STACK_LINES:]
            except Exception:           # the frame changed under us: the next check tries again
                continue
            finally:
                del frame
            if self._last == since:     # still the same block
                self._open = Incident(since=since, culprit=kind, stack=stack, **who)


#: Seconds between two log lines (with the stack) about blocks of one culprit: the count goes on /metrics.
LOG_EVERY = 60.0


class HubGuard:
    """What the runtime does with each incident: count it (per culprit, /metrics), tie it to its job (the job's
    ``blocked`` stats, a ``blocked`` event), log it with its stack (once per culprit per LOG_EVERY), and reroute
    an io handler whose jobs keep blocking to the cpu worker processes."""

    def __init__(self, runtime):
        from greenjobs.pool.io.executor import GreenletExecutor
        from greenjobs.pool.observe.metrics import Histogram
        self.rt = runtime
        settings = runtime.settings
        self.max_blocking = settings.hub_max_blocking
        self.reroute_on = settings.hub_reroute
        self.reroute_after = settings.hub_reroute_after
        self.monitor = HubMonitor(self.max_blocking, GreenletExecutor._body.__code__, self.blocked, self._lag)
        self.lag = Histogram()
        self.seconds: dict[str, float] = {}         # culprit label -> seconds blocked
        self.counts: dict[str, int] = {}
        self.strikes: dict[str, int] = {}           # io handler -> blocks over max_blocking
        self._logged: dict[str, float] = {}
        self._by_job: dict[str, dict] = {}          # job id -> its blocked stats (jobs that blocked, recently)

    def start(self) -> None:
        if self.rt.settings.hub_guard:
            self.monitor.start()

    def stop(self) -> None:
        self.monitor.stop()

    def _lag(self, seconds: float) -> None:
        self.lag.observe(seconds)

    def blocked(self, incident: Incident) -> None:
        """(a greenlet) One block of the hub, now over."""
        label = incident.label
        self.seconds[label] = self.seconds.get(label, 0.0) + incident.seconds
        self.counts[label] = self.counts.get(label, 0) + 1
        self._log(incident)
        if incident.culprit != "job":
            return
        stats = self._by_job.setdefault(incident.job_id, {"count": 0, "longest_ms": 0, "total_ms": 0})
        ms = round(incident.seconds * 1000)
        stats["count"] += 1
        stats["longest_ms"] = max(stats["longest_ms"], ms)
        stats["total_ms"] += ms
        if len(self._by_job) > 10_000:               # (a record of the jobs that blocked, not of every job)
            self._by_job.pop(next(iter(self._by_job)))
        rt = self.rt
        try:
            rt.store.record_blocked(incident.job_id, dict(stats))
        except Exception as exc:                     # the store is failing: the count stays on /metrics
            log.warning("could not record the blocking of job %s (%s)", incident.job_id, exc)
        job = rt.io.running_job(incident.job_id)
        if job is None:
            try:
                job = rt.store.get(incident.job_id)
            except Exception:
                job = None
        if job is not None:
            job.blocked = dict(stats)
            rt.listeners.emit("blocked", job)
        self._strike(incident)

    def _log(self, incident: Incident) -> None:
        now = time.monotonic()
        label = incident.label
        if now - self._logged.get(label, -LOG_EVERY) < LOG_EVERY:
            return
        self._logged[label] = now
        who = {"job": f"job {incident.job_id} ({incident.handler})", "request": f"request {incident.route}",
               "runtime": "the server itself"}[incident.culprit]
        log.warning("%s blocked the event loop for %.0f ms (greenjobs.hub.max_blocking = %.0f ms): every job, request"
                    " and long-poll of this server waited.  Next such blocks of it are only counted for %.0f s"
                    " (greenjobs_hub_blocked_seconds_total).  Where it blocked:\n%s", who, incident.seconds * 1000,
                    self.max_blocking * 1000, LOG_EVERY, "".join(incident.stack).rstrip())

    def _strike(self, incident: Incident) -> None:
        registry = self.rt.registry
        handler = registry.find(incident.handler)
        if handler is None or handler.kind != "io" or handler.rerouted is not None:
            return
        if not (handler.auto or self.reroute_on) or incident.seconds < self.max_blocking:
            return
        strikes = self.strikes[handler.name] = self.strikes.get(handler.name, 0) + 1
        if strikes < (1 if handler.auto else self.reroute_after):
            return
        if not self.rt.cpu.can_run():
            log.warning("io handler %s blocked the event loop %d times, but this server has no cpu workers to send "
                        "it to (greenjobs.workers.cpu = 0 and no broker): it keeps running on the hub", handler.name,
                        strikes)
            return
        reason = (f"its jobs blocked the event loop {strikes} time(s) for more than "
                  f"{self.max_blocking * 1000:.0f} ms (the last {incident.seconds * 1000:.0f} ms)")
        from greenjobs.pool.cpu.broker import queue_names
        registry.reroute(handler.name, reason, queue_names(registry)[0])
        log.warning("io handler %s is rerouted to the cpu worker processes for this server's lifetime: %s.  Its new"
                    " jobs run there, where blocking harms no other job and a timeout is enforced by killing the"
                    " process (set greenjobs.hub.reroute = false to keep it on the hub)", handler.name, reason)

    def stats(self) -> dict:
        """For /metrics: seconds and counts per culprit, the lag histogram."""
        return {"seconds": dict(self.seconds), "counts": dict(self.counts), "lag": self.lag}
