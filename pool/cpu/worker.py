"""CPU worker processes: plain interpreters (never gevent, never forked from the server).

A worker consumes cpu jobs with prefetch 1.  Before running one it asks the server for a claim
(the store is the ledger, and only the server writes it), so a job that was cancelled, timed out
or already taken is skipped.  The handler runs in a thread while the main thread keeps the broker
connection alive (heartbeats) and forwards progress.  The result is recorded (or published, confirmed)
before the message is acked: a worker killed mid-job means the job is delivered again.  A worker its
server supervises asks for claims and reports results over a direct line to it (``line.py``), with the
broker's control queue as the fallback.

``greenjobs-worker config.ini`` runs ``greenjobs.workers.cpu`` of them under a supervisor;
``python -m greenjobs.pool.cpu.worker --one config.ini`` runs a single one (that is what supervisors start).
"""
from __future__ import annotations

import argparse
import collections
import logging
import logging.config
import os
import signal
import socket
import sys
import threading
import time
import traceback
from contextvars import copy_context

from kombu import Consumer, Producer

from greenjobs.pool.cpu import broker
from greenjobs.pool.cpu.line import ParentLine
from greenjobs.pool.cpu.supervisor import EXIT_STOPPED
from greenjobs.pool.context import JobContext, activate, deactivate
from greenjobs.pool import outcomes
from greenjobs.pool.job import Job, new_id
from greenjobs.pool.owners import owner_id

# named, not __name__: run as ``-m greenjobs.pool.cpu.worker`` it would be "__main__", outside the greenjobs logger
log = logging.getLogger("greenjobs.pool.cpu.worker")
CLAIM_TIMEOUT = 30.0
#: Seconds a result sent over the line may wait for the server's "recorded" before it goes over the broker.
RECORD_TIMEOUT = 10.0
#: Seconds past its timeout a job may run in a worker before the worker itself ends it (the server's timer
#: usually has by then; on another host it may not be able to stop the worker).
TIMEOUT_GRACE = 1.0
TIMED_OUT = "timed_out"     # (an outcome message state only _run and _handle use between themselves)


def load_config(ini: str):
    """Settings, handler registry and middleware from the ini's [app:main], without Pyramid (the setup hooks run
    here, once per worker process); logging set up from it."""
    import plaster

    import greenjobs.pool.settings
    from greenjobs.pool.hooks import load_handlers
    ini = os.path.abspath(ini)
    loader = plaster.get_loader(ini, protocols=["wsgi"])
    try:
        loader.setup_logging({})
    except Exception:  # an ini without logging sections
        logging.basicConfig(level=logging.INFO)
    raw = loader.get_settings("app:main")
    settings = greenjobs.pool.settings.load((), raw, os.path.dirname(ini), strict=False)
    registry, middleware = load_handlers(settings, strict=False)
    for message in registry.import_errors.values():
        log.error("%s; jobs of its handlers will fail with this error", message)
    return settings, registry, middleware


class Worker:
    """One consumer of cpu jobs."""

    def __init__(self, settings, registry, middleware=None):
        self.settings = settings
        self.registry = registry
        self.middleware = middleware
        self.id = owner_id()
        self.stopping = False
        self._jobs: collections.deque = collections.deque()   # (body, message) delivered, not yet handled
        self._replies: dict[str, dict] = {}
        self._progress: dict | None = None
        self._unsent: list[dict] = []       # results whose publish failed: sent first on the next connection
        self._broken = False                # the connection failed while a handler was running
        self._stops: set[tuple] = set()     # (job id, attempt) a server told us to stop
        self.parent: int | None = None      # the supervisor's pid: we leave when it is gone
        self.line: ParentLine | None = None  # the direct line to that supervisor (a server), if it gave one

    # -- broker callbacks (run inside drain_events) ---------------------------------------
    def _on_job(self, body, message):
        self._jobs.append((body, message))

    def _on_reply(self, body, message):
        if isinstance(body, dict) and body.get("type") == "stop":
            self._stops.add((body.get("job"), body.get("attempt")))     # checked while the job runs
        elif isinstance(body, dict) and isinstance(body.get("corr"), str):
            self._replies[body["corr"]] = body
        message.ack()

    @staticmethod
    def _on_bad_message(message, exc):
        log.error("rejecting an undecodable message to the dead-letter queue: %s", exc)
        message.reject(requeue=False)

    # -- the loop --------------------------------------------------------------------
    def run(self) -> None:
        """Consume until asked to stop, starting a new connection (channels, consumers) whenever the
        broker goes away: a restarted broker drops every channel, and kombu revives only what it retries."""
        delay = 0.5
        while not self.stopping:
            started = time.monotonic()
            try:
                self._session()
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                # deliveries of the lost channel come back from the broker; only results are ours to keep
                self._jobs.clear()
                self._replies.clear()
                self._broken = False
                delay = 0.5 if time.monotonic() - started > 30 else min(delay * 2, 5.0)
                log.warning("worker %s lost the broker (%s: %s); reconnecting in %.1f s", self.id,
                            type(exc).__name__, exc, delay)
                time.sleep(delay)

    def _session(self) -> None:
        settings = self.settings
        names = broker.queue_names(self.registry)
        self.conn = broker.connect(settings)
        self.conn.ensure_connection(max_retries=None, interval_start=0.5, interval_step=1, interval_max=5,
                                    callback=lambda: log.warning("waiting for the broker ..."))
        with self.conn:
            job_channel = self.conn.channel()
            reply_channel = self.conn.channel()
            self.producer = Producer(self.conn.channel(), serializer="json")
            for queue in (broker.dead_queue(settings), broker.control_queue(settings)):
                queue(self.producer.channel).declare()
            self.reply_to = broker.reply_queue(settings, self.id)
            # one job at a time across all our queues: a channel-wide (global) prefetch of 1
            job_channel.basic_qos(0, 1, True)
            jobs = Consumer(job_channel, [broker.job_queue(settings, n) for n in names], callbacks=[self._on_job],
                            accept=broker.ACCEPT, on_decode_error=self._on_bad_message)
            replies = Consumer(reply_channel, [self.reply_to], callbacks=[self._on_reply], accept=broker.ACCEPT,
                               on_decode_error=self._on_bad_message)
            while self._unsent:                 # results the last connection could not take
                self._publish(self._unsent[0])
                self._unsent.pop(0)
            with jobs, replies:
                log.info("worker %s consuming %s", self.id, ", ".join(names))
                while not self.stopping:
                    if not self._jobs:
                        self._drain(1.0)
                    if self._jobs:
                        self._handle(*self._jobs.popleft())

    def _drain(self, timeout: float) -> None:
        try:
            self.conn.drain_events(timeout=timeout)
        except socket.timeout:
            pass
        self.conn.heartbeat_check()
        if self.parent is not None and os.getppid() != self.parent and not self.stopping:
            log.warning("worker %s: its supervisor (pid %s) is gone; leaving after its current job", self.id,
                        self.parent)
            self.stopping = True

    def _publish(self, body: dict, reply: bool = False) -> None:
        props = {"reply_to": self.reply_to.name} if reply else {}
        # no retry here: a failed publish ends the session, and run() starts a fresh connection
        self.producer.publish(body, routing_key=broker.control_queue(self.settings).name, delivery_mode=2,
                              timeout=self.settings.broker_confirm_timeout,
                              confirm_timeout=self.settings.broker_confirm_timeout, **props)

    def _claim(self, job: Job, redelivered: bool) -> dict | None:
        """The server's answer to our claim, or None (no answer in CLAIM_TIMEOUT: the message goes back)."""
        corr = new_id()
        body = {"type": "claim", "job": job.id, "worker": self.id, "redelivered": redelivered, "corr": corr,
                "reply_to": self.reply_to.name}
        # a claim the server reads after we gave up must not be granted (we give the message back, and a
        # running job's redelivery would count as orphaned): it refuses one past "until" (same host, same clock)
        if self._ask_line({**body, "until": time.time() + CLAIM_TIMEOUT - 2.0}):
            answer = self._answer(corr, CLAIM_TIMEOUT)
            if answer is None and self.line is not None and not self.line.broken:
                log.warning("worker %s: no answer to a claim over the line to its server in %s s; claims and "
                            "results go over the broker from now on", self.id, CLAIM_TIMEOUT)
                self.line.close()
            return None if answer is None or "error" in answer else answer
        self._publish(body, reply=True)
        deadline = time.monotonic() + CLAIM_TIMEOUT
        while time.monotonic() < deadline:
            if corr in self._replies:
                return self._replies.pop(corr)
            self._drain(0.2)
        return None

    def _ask_line(self, body: dict) -> bool:
        """Send ``body`` over the line to our server; False when there is no line (or it just broke), so the
        caller goes over the broker."""
        line = self.line
        if line is None or line.broken:
            return False
        try:
            line.send(body)
        except OSError as exc:
            log.warning("worker %s: the line to its server is gone (%s); claims and results go over the broker",
                        self.id, exc)
            return False
        return True

    def _answer(self, corr: str, timeout: float) -> dict | None:
        """Wait for the line's answer to ``corr`` (reading the broker's heartbeats meanwhile); None when it did
        not come in ``timeout`` s or the line broke."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                answer = self.line.receive(min(0.2, max(0.0, deadline - time.monotonic())))
            except OSError:
                return None
            if answer is None:
                if not self._broken:        # (heartbeats; a dead connection waits for the next session)
                    self._drain(0)
            elif answer.get("corr") == corr:
                return answer
        return None

    def _report(self, result: dict) -> None:
        """Have the result recorded: over the line when the server answers "recorded", else published to the
        control queue (a result recorded twice is refused the second time by the store's fence)."""
        corr = new_id()
        if self._ask_line({**result, "corr": corr}):
            answer = self._answer(corr, RECORD_TIMEOUT)
            if answer is not None and answer.get("recorded"):
                return
            log.info("worker %s: the server did not record job %s's result over the line; publishing it",
                     self.id, result.get("job"))
        if self._broken:
            raise ConnectionError("the broker connection failed while the job ran")
        self._publish(result)

    def _handle(self, body, message) -> None:
        try:
            job = Job.decode(body)
        except ValueError as exc:
            self._on_bad_message(message, exc)
            return
        redelivered = bool(message.delivery_info.get("redelivered"))
        log.debug("job %s received", job.id)
        answer = self._claim(job, redelivered)
        log.debug("job %s claim answered", job.id)
        if answer is None:
            log.warning("job %s: no answer to its claim in %s s; giving it back", job.id, CLAIM_TIMEOUT)
            message.requeue()
            return
        if not answer.get("go"):
            log.info("job %s skipped: %s", job.id, answer.get("reason"))
            message.ack()
            return
        job.attempts = int(answer.get("attempts", job.attempts + 1))
        outcome = self._run(job, answer.get("timeout"))
        log.debug("job %s ran", job.id)
        result = {"type": "result", "job": job.id, "worker": self.id, "attempt": job.attempts, **outcome}
        if outcome.get("state") == TIMED_OUT:
            self._time_out(job, result, message)         # does not return
        try:
            self._report(result)
        except Exception as exc:
            if _is_connection_error(exc):
                self._unsent.append(result)     # published first thing on the next connection
            raise
        if self._broken:        # recorded over the line; the message is acked on no connection: it comes
            raise ConnectionError("the broker connection failed while the job ran")   # back, and is skipped
        message.ack()
        log.debug("job %s acked", job.id)

    def _run(self, job: Job, timeout: float | None) -> dict:
        """Run the handler in a thread; keep the connection alive meanwhile.  Returns the result message."""
        try:
            handler = self.registry.get(job.handler)
        except Exception as exc:
            why = "; ".join([str(exc)] + list(self.registry.import_errors.values()))
            return outcomes.to_message(outcomes.unknown_handler(why))
        box: dict = {}

        def report(job_id, progress):
            self._progress = progress

        def target():
            token = activate(JobContext(job, self.settings, report))
            try:
                if self.middleware:
                    box["result"] = self.middleware.call(job, handler.fn, job.args, job.kwargs)
                else:
                    box["result"] = handler.fn(*job.args, **job.kwargs)
            except BaseException as exc:   # noqa: B902 - reported to the server, never swallowed silently
                box["exc"] = exc
                box["tb"] = traceback.format_exc(limit=20)
            finally:
                deactivate(token)

        thread = threading.Thread(target=copy_context().run, args=(target,), name=f"job-{job.id}", daemon=True)
        started = time.monotonic()
        thread.start()
        while thread.is_alive():
            thread.join(0.05)        # returns as soon as the job ends
            if timeout and time.monotonic() - started > timeout + TIMEOUT_GRACE and thread.is_alive():
                # the server may not be able to stop us (a worker on another host): enforce it here
                message = outcomes.to_message(outcomes.timed_out(timeout, "; the worker stopped it"))
                return {**message, "state": TIMED_OUT}
            if self._broken:
                continue             # the connection is gone: let the job finish, report it on the next one
            try:
                if thread.is_alive():
                    self._drain(0)   # read heartbeats (and stop requests) without waiting
                if (job.id, job.attempts) in self._stops:
                    self._leave_to_stop(job)
                if self._progress is not None:
                    progress, self._progress = self._progress, None
                    body = {"type": "progress", "job": job.id, "worker": self.id, "progress": progress}
                    if not self._ask_line(body):
                        self._publish(body)
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                log.warning("worker %s: broker connection lost while job %s runs (%s)", self.id, job.id, exc)
                self._broken = True
        self._stops.clear()
        if "exc" in box:
            return outcomes.to_message(outcomes.from_exception(box["exc"], handler, box["tb"]))
        value = box.get("result")
        return outcomes.to_message(outcomes.succeeded(value, self.settings.job_max_result_bytes), value)


    def _time_out(self, job: Job, result: dict, message) -> None:
        """The job ran past its timeout here: report ``timeout`` (unless a server already ended it, the report
        is its outcome), ack its message, and leave, because a thread cannot be stopped; a fresh worker takes
        this one's place."""
        result["state"] = "failed"
        try:
            self._report(result)
            if not self._broken:
                message.ack()
        except Exception as exc:             # the broker is gone: the server's own timer ends the job
            log.warning("worker %s: could not report the timeout of job %s (%s)", self.id, job.id, exc)
        log.warning("worker %s: job %s ran past its timeout of %s s; leaving so it stops (a fresh worker takes this"
                    " one's place)", self.id, job.id, job.timeout)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_STOPPED)

    def _leave_to_stop(self, job: Job) -> None:
        """A server asked us to stop this attempt (cancelled or timed out, and we are not its child to kill):
        a thread cannot be stopped, so the process exits at once.  The job's message was never acked: the
        broker delivers it again and the next claim is refused, because the ledger already ended it."""
        log.warning("worker %s: job %s (attempt %s) was stopped by a server; leaving so it stops (a fresh worker"
                    " takes this one's place)", self.id, job.id, job.attempts)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_STOPPED)


def _is_connection_error(exc: BaseException) -> bool:
    """Errors that mean "this connection is gone" (kombu, amqp, sockets), not a bug to crash on."""
    from kombu.exceptions import OperationalError
    try:
        from amqp.exceptions import ConnectionError as AMQPConnectionError, RecoverableChannelError
    except ImportError:  # pragma: no cover - amqp comes with kombu
        AMQPConnectionError = RecoverableChannelError = OSError
    return isinstance(exc, (OperationalError, AMQPConnectionError, RecoverableChannelError, ConnectionError,
                            OSError, socket.timeout))


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM when the supervisor dies, even by SIGKILL."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)        # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_one(ini: str, supervised: bool = False, parent: int | None = None, line: int | None = None) -> int:
    """Run one worker in this process until SIGTERM/SIGINT (``--supervised``: die with the parent); returns the
    exit code."""
    if supervised:
        # Ask for the signal first, then check the parent is still there (the race-free order): a
        # server killed while we were starting would otherwise leave us running with no parent.
        _die_with_parent()
        parent = parent or os.getppid()
        if os.getppid() != parent:
            log.warning("worker: its supervisor (pid %s) is gone before it started; leaving", parent)
            return 0
    settings, registry, middleware = load_config(ini)
    worker = Worker(settings, registry, middleware)
    if supervised:
        worker.parent = parent
    if line is not None:
        worker.line = ParentLine(line)

    def stop(signum, frame):
        worker.stopping = True     # finish the current job, then leave
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()
    return 0


def main(argv=None) -> int:
    """``greenjobs-worker config.ini``: supervise ``greenjobs.workers.cpu`` workers, or with ``--one`` be one."""
    parser = argparse.ArgumentParser(prog="greenjobs-worker", description="Run greenjobs CPU worker processes.")
    parser.add_argument("ini", help="the same config.ini the server uses")
    parser.add_argument("--one", action="store_true", help="run one worker in this process (what supervisors start)")
    parser.add_argument("--supervised", action="store_true", help="leave when the parent process is gone")
    parser.add_argument("--parent", type=int, default=None, help="the supervisor's pid (with --supervised)")
    parser.add_argument("--line", type=int, default=None, help="descriptor of the direct line to the supervising "
                        "server (given by the server)")
    parser.add_argument("--processes", type=int, default=None, help="default: greenjobs.workers.cpu, or the CPU count")
    args = parser.parse_args(argv)
    if args.one:
        return run_one(args.ini, supervised=args.supervised, parent=args.parent, line=args.line)
    from greenjobs.pool.cpu.supervisor import Supervisor
    settings, _, _ = load_config(args.ini)
    count = args.processes or settings.workers_cpu or (os.cpu_count() or 1)
    supervisor = Supervisor(args.ini, count)
    signal.signal(signal.SIGTERM, lambda *a: supervisor.request_stop())
    signal.signal(signal.SIGINT, lambda *a: supervisor.request_stop())
    supervisor.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
