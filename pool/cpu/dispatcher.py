"""The server's side of cpu jobs: publish them to the broker, arbitrate claims, record results.

Each broker connection belongs to one dedicated thread (a ThreadPool of one), so neither the
embedded broker's sqlite calls nor a stalled AMQP socket can block the hub.  The store stays the
ledger: a job is committed first and published after (``outbox``), and a worker runs a job only
after the server granted its claim, so duplicates (republished or redelivered messages) are skipped
and a job that was cancelled or timed out never runs again.  The workers this server supervises
send claims and results over a direct line instead (``line.py``): the same handling, fewer hops.
"""
from __future__ import annotations

import collections
import copy
import functools
import logging
import socket
import time
from typing import Callable

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.threadpool import ThreadPool
from kombu import Consumer, Producer

from greenjobs.pool.cpu import broker
from greenjobs.pool.cpu.line import MAX_FRAME, Frames, decode, encode
from greenjobs.pool.errors import Overloaded, QueueUnavailable
from greenjobs.pool import outcomes
from greenjobs.pool.job import Job
from greenjobs.pool.lifecycle import judge_worker_claim
from greenjobs.pool.outcomes import Outcome
from greenjobs.pool.owners import owner_is_dead, owner_pid

log = logging.getLogger(__name__)

#: Longest pause between reconnection attempts: cpu submissions answer 503 while the broker is
#: away, so coming back within two seconds of its return matters more than saving a few refused connects.
RECONNECT_MAX = 2.0
#: Seconds between reads of the ledger's cpu backlog for admission (greenjobs.workers.max_pending).
BACKLOG_EVERY = 0.5


class _Link:
    """A kombu connection confined to one thread; every call on it goes through :meth:`call`."""

    def __init__(self, settings, name: str, durable: bool = False):
        self.settings = settings
        self.name = name
        self.durable = durable
        self.thread = ThreadPool(1)
        self.conn = None

    def call(self, fn: Callable, *args):
        return self.thread.apply(fn, args)

    def open(self) -> None:
        def connect():
            conn = broker.connect(self.settings, durable=self.durable)
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=5)
            return conn
        self.conn = self.call(connect)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                self.call(conn.release)
            except Exception:
                pass

    def kill(self) -> None:
        self.close()
        self.thread.kill()


class CpuDispatcher:
    """Publishes cpu jobs, answers worker claims, and turns worker results into store updates."""

    def __init__(self, settings, store, registry, sink, supervisor=None):
        self.settings = settings
        self.store = store
        self.registry = registry
        self.sink = sink                      # greenjobs.pool.listeners.Sink: starts, progress, outcomes
        self.supervisor = supervisor
        self._backlog, self._backlog_at = 0, -BACKLOG_EVERY     # cpu jobs waiting in the ledger, as last counted
        self._jobs: collections.deque = collections.deque()      # jobs to publish
        self._replies: collections.deque = collections.deque()   # (reply_to, body): claim answers
        self._wake = Event()
        self._running: dict[str, tuple[Job, str, object]] = {}   # job id -> (job, worker, timer)
        self._sending: set[str] = set()                            # ids in the publish under way
        self._pub = _Link(settings, "publisher", durable=True)
        self._con = _Link(settings, "consumer")
        self._greenlets: list = []
        self._lines: set = set()         # our ends of the direct lines to supervised workers
        self.messages = collections.Counter()    # "route:type" -> worker messages handled (line or broker)
        self.connected = False
        self._first_attempt = Event()    # set once the publisher tried to connect for the first time
        self.published = 0

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the publisher and consumer greenlets (each connects, and reconnects, on its own)."""
        self._greenlets = [gevent.spawn(self._publish_loop), gevent.spawn(self._consume_loop)]
        if self.supervisor is not None:
            self.supervisor.line_factory = self.open_line

    def stop(self) -> None:
        """Stop both loops, the hard-timeout timers and the broker connections."""
        gevent.killall(self._greenlets)
        for sock in list(self._lines):
            sock.close()
        for _, _, timer in self._running.values():
            timer.close()
        self._pub.kill()
        self._con.kill()

    def stats(self) -> dict:
        """Broker connection, running and unpublished cpu jobs, workers alive and restarted (for /health, /metrics)."""
        return {"broker_connected": self.connected, "running": len(self._running),
                "to_publish": len(self._jobs), "published": self.published,
                "workers": self.supervisor.alive() if self.supervisor else None,
                "worker_restarts": self.supervisor.restarts if self.supervisor else None,
                "lines": len(self._lines), "messages": dict(self.messages)}

    def check_available(self) -> None:
        """Raise QueueUnavailable (503) unless the broker is connected (waits for the first attempt after start)."""
        if not self.connected:      # just started? the first connection attempt decides
            self._first_attempt.wait(self.settings.broker_connect_timeout + 1)
        if not self.connected:
            raise QueueUnavailable("the CPU job broker is not reachable right now; retry shortly "
                                   f"({self.settings.broker_url.split('@')[-1]})")

    def can_run(self) -> bool:
        """Whether this server supervises cpu workers (so an io handler may be rerouted to them).  Whether the
        broker is connected this moment is not asked: it is not yet in the first instants after start (a block
        then would keep a handler on the hub for good), and a rerouted job waits out an outage like any cpu job."""
        return self.supervisor is not None

    def admit(self, count: int) -> None:
        """Raise Overloaded (429) when ``count`` more cpu jobs would pass greenjobs.workers.max_pending waiting
        in the ledger (every server's: counted there at most every BACKLOG_EVERY seconds, and here in between)."""
        now = time.monotonic()
        if now >= self._backlog_at + BACKLOG_EVERY:
            self._backlog, self._backlog_at = self.store.backlog(("cpu",)), now
        limit = self.settings.workers_max_pending
        if self._backlog + count > limit:
            raise Overloaded(f"the cpu job backlog is full ({self._backlog} waiting for a worker, limit "
                             f"greenjobs.workers.max_pending={limit}); retry later", retry_after=1)
        self._backlog += count

    # -- publishing --------------------------------------------------------------------
    def publish(self, jobs: list[Job]) -> None:
        """Queue stored jobs for publishing (the store's outbox flag covers a crash before it happens)."""
        self._jobs.extend(jobs)
        self._wake.set()

    def republish_outbox(self) -> None:
        """Publish again every stored job the broker has not confirmed and that is not on its way now
        (a crash between commit and publish, a broker that lost an unconfirmed message)."""
        in_flight = {job.id for job in self._jobs} | self._sending
        after = 0
        while True:
            jobs, after = self.store.unpublished(after)
            fresh = [job for job in jobs if job.id not in in_flight]
            if fresh:
                log.info("publishing %d jobs from the outbox", len(fresh))
                self.publish(fresh)
            if not jobs:
                break

    def _publish_loop(self) -> None:
        delay = 0.2
        while True:
            if self._pub.conn is None:
                try:
                    self._pub.open()
                    self.producer = self._pub.call(self._declare, self._pub.conn)
                    self.connected = True
                    self._first_attempt.set()
                    delay = 0.2
                    log.info("connected to the broker for publishing")
                    self.republish_outbox()
                except Exception as exc:
                    self._pub.close()
                    if self.connected or delay == 0.2:
                        log.error("broker unreachable (%s); retrying with backoff", exc)
                    self.connected = False
                    self._first_attempt.set()
                    gevent.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
            if not self._wake.wait(self.settings.broker_heartbeat / 4 or 1.0):
                try:                    # idle: read the broker's heartbeats and send ours
                    self._pub.call(self._tick, self._pub.conn)
                except Exception as exc:
                    log.error("publisher connection lost (%s); reconnecting", exc)
                    self.connected = False
                    self._pub.close()
                continue
            self._wake.clear()
            jobs = [self._jobs.popleft() for _ in range(min(len(self._jobs), 500))]
            self._sending = {job.id for job in jobs}
            try:
                self._pub.call(self._send, jobs)
            except Exception as exc:
                self._sending = set()
                log.error("publishing failed (%s); reconnecting", exc)
                self._jobs.extendleft(reversed(jobs))
                self.connected = False
                self._pub.close()
                continue
            self._sending = set()
            if jobs:
                self.published += len(jobs)
                self.store.mark_published([j.id for j in jobs])
            if self._jobs:
                self._wake.set()

    @staticmethod
    def _tick(conn) -> None:
        """(a link's thread) read pending frames (heartbeats) without blocking, then check heartbeats."""
        try:
            conn.drain_events(timeout=0)
        except (socket.timeout, TimeoutError):
            pass
        conn.heartbeat_check()

    def _declare(self, conn):
        """(publisher thread) declare every queue, return a producer."""
        channel = conn.channel()
        for queue in self._queues():
            queue(channel).declare()
        return Producer(channel, serializer="json")

    def _queues(self):
        names = broker.queue_names(self.registry)
        return [broker.dead_queue(self.settings), broker.control_queue(self.settings)] + \
            [broker.job_queue(self.settings, n) for n in names]

    def _send(self, jobs) -> None:
        """(publisher thread) publish jobs; on the embedded broker in one (durable) transaction."""
        conn = self._pub.conn
        conn.heartbeat_check()
        with broker.one_commit(conn):
            for job in jobs:
                handler = self.registry.get(job.handler) if job.handler in self.registry else None
                queue = broker.job_queue(self.settings, handler.queue if handler else "cpu")
                self.producer.publish(job.message(), routing_key=queue.name, priority=job.priority,
                                      delivery_mode=2, timeout=self.settings.broker_confirm_timeout,
                                      confirm_timeout=self.settings.broker_confirm_timeout)

    # -- consuming worker messages ---------------------------------------------------------
    def _consume_loop(self) -> None:
        acks: list = []
        requeues: list = []
        delay = 0.2
        while True:
            if self._con.conn is None:
                try:
                    self._con.open()
                    self._inbox: list = []
                    self._consumer = self._con.call(self._subscribe, self._con.conn)
                    delay = 0.2
                except Exception as exc:
                    self._con.close()
                    log.debug("consumer cannot connect (%s)", exc)
                    gevent.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
            replies = [self._replies.popleft() for _ in range(len(self._replies))]
            try:
                batch = self._con.call(self._ack_and_drain, acks, requeues, replies)
            except Exception as exc:
                log.error("consuming failed (%s); reconnecting", exc)
                self._replies.extendleft(reversed(replies))
                self._con.close()   # unacked messages are redelivered; handling them twice is harmless
                continue
            finally:
                acks, requeues = [], []
            if batch:
                handlers = [gevent.spawn(self._handle, body) for body, _ in batch]
                gevent.joinall(handlers)
                # a message whose handling failed (store unavailable) goes back to the queue
                acks = [message for (body, message), g in zip(batch, handlers) if g.successful()]
                requeues = [message for (body, message), g in zip(batch, handlers) if not g.successful()]
                if requeues:
                    gevent.sleep(0.5)

    def _subscribe(self, conn):
        """(consumer thread) consume the control queue, collecting messages into the inbox."""
        channel = conn.channel()
        for queue in self._queues():
            queue(channel).declare()
        consumer = Consumer(channel, [broker.control_queue(self.settings)], accept=broker.ACCEPT,
                            callbacks=[lambda body, message: self._inbox.append((body, message))],
                            on_decode_error=lambda message, exc: message.reject(requeue=False),
                            prefetch_count=200)
        consumer.consume()
        self._reply_producer = Producer(conn.channel(), serializer="json")
        return consumer

    def _ack_and_drain(self, acks, requeues, replies) -> list:
        """(consumer thread) answer claims, ack what was handled, requeue what failed, wait for more.

        Claim answers go out on this connection, not the publisher's: they are transient, so they
        need no durable commit, and the worker waiting for one is not held behind a batch of jobs.
        """
        for reply_to, body in replies:
            self._reply_producer.publish(body, routing_key=reply_to, delivery_mode=1,
                                         timeout=self.settings.broker_confirm_timeout,
                                         confirm_timeout=self.settings.broker_confirm_timeout)
        for message in acks:
            message.ack()
        for message in requeues:
            message.requeue()
        conn = self._con.conn
        conn.heartbeat_check()
        try:
            conn.drain_events(timeout=0.25)
            while True:         # take everything that is already there
                conn.drain_events(timeout=0)
        except (socket.timeout, TimeoutError):
            pass
        batch, self._inbox = self._inbox, []
        return batch

    def _handle(self, body) -> None:
        """A message from the control queue; a claim's answer goes out on the consumer loop's next round."""
        try:
            reply = self._dispatch(body, "broker")
        except Exception as exc:
            log.error("could not handle a %s message for job %s (%s); it goes back to the queue",
                      body.get("type"), body.get("job"), exc)
            raise
        if reply is not None:
            worker = str(body.get("worker"))
            reply_to = body.get("reply_to") or f"{self.settings.broker_namespace}.reply.{worker.replace(':', '_')}"
            self._replies.append((reply_to, reply))     # sent by the consumer loop right after this batch

    def _dispatch(self, body, route: str) -> dict | None:
        """Handle one worker message, from the control queue or a line (``route``): a claim (its answer is
        returned), a result, progress.  Raises when the store failed."""
        if not isinstance(body, dict) or not isinstance(body.get("job"), str):
            log.error("ignoring a malformed worker message (%s): %r", route, str(body)[:200])
            return None
        kind = body.get("type")
        self.messages[f"{route}:{kind if kind in ('claim', 'result', 'progress') else 'other'}"] += 1
        if kind == "claim":
            return self._decide_claim(body)
        if kind == "result":
            self._on_result(body)
        elif kind == "progress" and isinstance(body.get("progress"), dict):
            self.sink.progress(body["job"], body["progress"])
        return None

    # -- the direct lines to supervised workers ------------------------------------------
    def open_line(self):
        """(the supervisor, at each spawn) A socket pair: the worker's end, and a function closing ours, which
        is served here until the worker is gone (the supervisor calls it when the process exits: a grandchild
        that inherited the worker's end must not keep the line open)."""
        ours, theirs = socket.socketpair()
        self._lines.add(ours)
        gevent.spawn(self._serve_line, ours)

        def close() -> None:
            self._lines.discard(ours)
            ours.close()
        return theirs, close

    def _serve_line(self, sock) -> None:
        lock = Semaphore()
        frames = Frames(max(MAX_FRAME, 2 * self.settings.job_max_result_bytes + 65536))

        def answer(body: dict) -> None:
            with lock:
                sock.sendall(encode(body))

        def serve(raw: bytes) -> None:
            try:     # a large result is decoded off the hub, as the broker's consumer thread would
                body = decode(raw) if len(raw) < 65536 else gevent.get_hub().threadpool.apply(decode, (raw,))
            except ConnectionError as exc:
                log.error("closing a worker line: %s", exc)
                sock.close()
                return
            if body is None:
                return
            try:
                reply = self._dispatch(body, "line")
                if body.get("type") == "result":
                    reply = {"corr": body.get("corr"), "recorded": True}
            except Exception as exc:    # (the store failed: the worker goes back to the queue, or the broker)
                log.error("could not handle a %s message for job %s from a worker line (%s)", body.get("type"),
                          body.get("job"), exc)
                reply = {"corr": body.get("corr"), "error": str(exc)[:200]}
            if reply is not None:
                try:
                    answer(reply)
                except OSError:         # the worker is gone: its message comes back to another
                    pass
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for raw in frames.feed(data):
                    gevent.spawn(serve, raw)
        except (OSError, ConnectionError) as exc:
            log.warning("a worker line failed (%s); closing it", exc)
        finally:
            self._lines.discard(sock)
            sock.close()

    def _decide_claim(self, body) -> dict:
        """Judge a worker's claim in the ledger; the answer to send back.  A claim past its ``until`` (a line's:
        the worker gave up waiting and gave the message back) is refused unjudged."""
        until = body.get("until")
        if isinstance(until, (int, float)) and time.time() > until:
            return {"corr": body.get("corr"), "go": False, "error": "the claim came too late (the worker gave up)"}
        worker = str(body.get("worker"))
        judge = functools.partial(judge_worker_claim, redelivered=bool(body.get("redelivered")),
                                  worker_dead=owner_is_dead, max_redeliveries=self.settings.workers_redeliveries,
                                  lease_seconds=self.store.lease_seconds, now=time.time())
        verdict, job = self.store.claim_for_worker(body["job"], worker,
                                                   lambda job, lease: judge(job, lease.owner, lease.expires))
        reply = {"corr": body.get("corr"), "go": verdict == "go"}
        if verdict in ("go", "lost"):
            previous = self._running.pop(body["job"], None)     # an earlier attempt whose worker died
            if previous is not None and previous[2] is not None:
                previous[2].close()
        if verdict == "go":
            if job.timeout is None:     # enqueued in an application's transaction: the handler's default
                handler = self.registry.find(job.handler)
                job.timeout = (handler.timeout if handler is not None else None) or self.settings.job_max_timeout
            timer = gevent.get_hub().loop.timer(job.timeout) if job.timeout else None
            if timer is not None:
                timer.start(lambda: gevent.spawn(self._expire, job.id))
            self._running[job.id] = (job, worker, timer)
            reply.update(attempts=job.attempts, timeout=job.timeout)
            self.sink.started(job)
        else:
            reply["reason"] = "unknown job" if job is None else f"job is {job.state}"
            if verdict == "lost":
                self.sink.ended(job)
        return reply

    def _on_result(self, body) -> None:
        job_id, worker, attempt = body["job"], str(body.get("worker")), body.get("attempt")
        entry = self._running.get(job_id)
        if entry is not None and entry[1] == worker and attempt in (None, entry[0].attempts):
            job, _, timer = entry
        else:
            job, timer = self.store.get(job_id), None     # claimed before a restart, or a stale attempt
            if job is None:
                return
            if isinstance(attempt, int) and attempt != job.attempts:
                # the result of an earlier attempt (redelivered, or late): recorded as that attempt's,
                # so the store's fence refuses it rather than letting it end the attempt now running
                job = copy.copy(job)
                job.attempts = attempt
        self._conclude(job, worker, outcomes.from_message(body, self.settings.job_max_result_bytes))
        if timer is not None:           # recorded (a store failure raised above and keeps it)
            timer.close()
            self._running.pop(job_id, None)

    def _conclude(self, job: Job, worker: str, outcome: Outcome) -> bool:
        """Record ``worker``'s outcome; False if that attempt no longer holds the job."""
        return self.sink.record(job, worker, outcome) is not None

    def _expire(self, job_id: str) -> None:
        """A cpu job ran past its timeout: record it, then kill its worker process (hard limit).  The job stays
        running here until the store took the record: a store failure tries again in a second, so the limit
        holds however long the store fails."""
        entry = self._running.get(job_id)
        if entry is None:
            return
        job, worker, _ = entry
        try:
            recorded = self._conclude(job, worker, outcomes.timed_out(job.timeout, "; its worker was killed"))
        except Exception as exc:
            log.warning("cpu job %s: could not record its timeout (%s); trying again in 1 s", job_id, exc)
            again = gevent.get_hub().loop.timer(1.0)
            again.start(lambda: gevent.spawn(self._expire, job_id))
            if self._running.get(job_id) is entry:
                self._running[job_id] = (job, worker, again)
            return
        self._forget(job_id, entry)
        if recorded:                # (else the result won the race: nothing to stop)
            self._stop_worker(worker, job)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a cpu job running on a worker: record it, then kill the worker.  None if not running here.
        A store failure raises with the job still running here under its time limit."""
        entry = self._running.get(job_id)
        if entry is None:
            return None
        job, worker, _ = entry
        recorded = self._conclude(job, worker, outcomes.cancelled())
        self._forget(job_id, entry)
        if not recorded:
            return None
        self._stop_worker(worker, job)
        return job

    def _forget(self, job_id: str, entry) -> None:
        """Drop a running entry (and its timer) once its outcome is recorded, unless another replaced it."""
        if self._running.get(job_id) is entry:
            del self._running[job_id]
            if entry[2] is not None:
                entry[2].close()

    def abandon(self, job_id: str, attempt: int, why: str, stop: bool) -> None:
        """Forget the claim this server granted for attempt ``attempt`` of a job whose record another server
        changed; with ``stop`` (it was cancelled there), stop the worker's run as a cancel here would."""
        entry = self._running.get(job_id)
        if entry is None or entry[0].attempts != attempt:
            return
        job, worker, timer = self._running.pop(job_id)
        if timer is not None:
            timer.close()
        log.info("cpu job %s (%s) on worker %s: %s", job_id, job.handler, worker, why)
        if stop:
            self._stop_worker(worker, job)

    def _stop_worker(self, worker: str, job: Job) -> None:
        """Stop ``worker``'s run of ``job``: SIGKILL it if it is one of ours (its supervisor replaces it),
        else ask it over its reply queue to leave (a worker on another host, or another server's child)."""
        pid = owner_pid(worker)
        if pid is not None and self.supervisor is not None and self.supervisor.kill(pid):
            return
        log.info("asking worker %s to stop job %s (attempt %s)", worker, job.id, job.attempts)
        self._replies.append((broker.reply_queue(self.settings, worker).name,
                              {"type": "stop", "job": job.id, "attempt": job.attempts}))

    def running_attempts(self) -> dict[str, tuple[str, int]]:
        """Job id -> (worker, attempt) of the cpu jobs running under claims this server granted."""
        return {job_id: (worker, job.attempts) for job_id, (job, worker, _) in self._running.items()}

    def running(self, job_id: str) -> bool:
        """Whether a worker is running ``job_id`` under a claim this server granted."""
        return job_id in self._running

    def running_job(self, job_id: str) -> Job | None:
        """The job a worker runs under our claim, or None."""
        entry = self._running.get(job_id)
        return entry[0] if entry is not None else None
