"""Coalescing: single ``submit`` calls from many threads sent together, one ``POST /jobs/batch`` for many.

An app that submits from 64 request threads pays one HTTP round trip per job, and the server one request
(parsing, routing, a group-commit wait) per job.  With ``Client(coalesce=True)`` a call queues its job and
waits; a few sender threads take whatever has queued while their last request was out and send it as one
batch.  A lone caller's job goes at once, alone (no waiting for company: the batching is what piles up
while a request is in flight), so coalescing costs latency nothing and multiplies throughput under load.

Each call keeps what it would have had alone: its own job id, its own idempotency key (every item carries
one, so a batch is sent again after a broken connection and still makes each job once), and its own error:
a batch the server refuses (all or nothing: one bad job, a key reused for another job, a cpu backlog
near its limit) is sent again one job per request, so every call gets exactly the answer its job gets
alone; an unavailable or unreachable server fails every call of the batch with that error.  What differs: the jobs of one request share a batch
id, and the handle carries no job representation until it is first read.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from greenjobs_client.errors import ConnectionFailed, RequestFailed, ServerError

if TYPE_CHECKING:
    from greenjobs_client.client import Client

#: Jobs per coalesced request (the server's greenjobs.api.max_batch is 1,000 by default).
MAX_BATCH = 500
#: Refusals that are the same for every job of a batch as for each alone: not worth sending each again.
#: (Not 429: a cpu backlog near its limit refuses a batch of 300 that would take most of its jobs one by one.)
SHARED = (401, 403)
#: Sender threads: requests in flight at once.  Two keep the server busy while one answer travels back.
SENDERS = 2

#: Guards starting a coalescer's senders; made anew in a forked child (a fork may copy it held).
_starting = threading.Lock()


def _after_fork() -> None:
    global _starting
    _starting = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class _Call:
    __slots__ = ("spec", "key", "done", "job_id", "job", "error")

    def __init__(self, spec: dict[str, Any], key: str):
        self.spec, self.key = spec, key
        self.done = threading.Event()
        self.job_id: str | None = None
        self.job: dict[str, Any] | None = None      # the job as POST /jobs answered it (a call sent alone)
        self.error: BaseException | None = None


class Coalescer:
    """Queues submissions and sends them in batches from ``senders`` daemon threads.  The threads, their queue
    and its lock are made on first use in each process (a forked child gets its own: threads do not survive a
    fork, and a lock copied held would never open), and after gevent's monkey-patching if it comes later."""

    def __init__(self, client: Client, max_batch: int = MAX_BATCH, senders: int = SENDERS):
        self.client = client
        self.max_batch = max_batch
        self.senders = senders
        self._queue: deque[_Call] = deque()
        self._ready: threading.Condition | None = None
        self._pid: int | None = None
        #: requests sent and jobs they carried (for tests and the curious)
        self.requests = 0
        self.jobs = 0

    def submit(self, spec: dict[str, Any], key: str) -> tuple[str, dict[str, Any] | None]:
        """Queue one job (``spec`` as ``job_spec`` makes it, ``key`` its Idempotency-Key) and wait for its
        answer: (job id, the job when it was sent alone, else None).  Raises what a lone submit would (a TypeError for a job that is not JSON)."""
        call = _Call(spec, key)
        if self._pid != os.getpid():
            self._start()
        with self._ready:
            self._queue.append(call)
            self._ready.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.job_id, call.job

    def _start(self) -> None:
        pid = os.getpid()
        with _starting:
            if self._pid == pid:
                return
            self._queue = deque()
            self._ready = threading.Condition(threading.Lock())
            threads = [threading.Thread(target=self._send_loop, name=f"greenjobs-coalesce-{n}", daemon=True)
                       for n in range(self.senders)]
            self._pid = pid
        try:                        # started outside the lock: under gevent a start switches greenlets
            for thread in threads:
                thread.start()
        except BaseException as exc:
            with _starting:
                self._pid = None
            with self._ready:       # nobody would send what queued meanwhile
                waiting, self._queue = list(self._queue), deque()
            self._fail(waiting, exc)
            raise

    def _send_loop(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                calls = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            try:
                self._send(calls)
            except BaseException as exc:        # never leave a caller waiting
                self._fail([call for call in calls if not call.done.is_set()], exc)

    def _send(self, calls: list[_Call]) -> None:
        self.requests += 1
        self.jobs += len(calls)
        if len(calls) == 1 or not self.client.batch_keys():
            for call in calls:
                self._alone(call)
            return
        items = [dict(call.spec, idempotency_key=call.key) for call in calls]
        try:
            _, answer, _ = self.client._transport.request("POST", "/jobs/batch", {"jobs": items}, resend=True)
        except TypeError:               # some job is not JSON (refused before any I/O): it fails alone
            for call in calls:
                self._alone(call)
            return
        except RequestFailed as exc:
            if 400 <= exc.status < 500 and exc.status not in SHARED:
                # all or nothing: some job (or key) of the batch was refused; each alone gets its own answer
                for call in calls:
                    self._alone(call)
                return
            self._fail(calls, exc)
            return
        except ConnectionFailed as exc:
            self._fail(calls, exc)
            return
        ids = answer.get("ids") if isinstance(answer, dict) else None
        if not isinstance(ids, list) or len(ids) != len(calls):
            self._fail(calls, ServerError(200, "Unexpected answer", f"POST /jobs/batch of {len(calls)} jobs "
                                          f"answered {len(ids) if isinstance(ids, list) else 'no'} ids"))
            return
        for call, job_id in zip(calls, ids):
            call.job_id = job_id
            call.done.set()

    @staticmethod
    def _fail(calls: list[_Call], exc: BaseException) -> None:
        """An answer that is every call's alike (overloaded, unavailable, unreachable, not allowed)."""
        for call in calls:
            call.error = exc
            call.done.set()

    def _alone(self, call: _Call) -> None:
        try:
            job = self.client._post_job(call.spec, call.key)
            call.job_id, call.job = job["id"], job
        except BaseException as exc:
            call.error = exc
        call.done.set()
