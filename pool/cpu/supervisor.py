"""Start, watch and restart CPU worker processes.

Each worker is a fresh interpreter (``python -m greenjobs.pool.cpu.worker --one INI``), never a fork of the
gevent server.  The same code runs in the server (where threads and subprocess are gevent's, so
each watcher is a greenlet) and in ``greenjobs-worker`` (plain threads).
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

log = logging.getLogger(__name__)

#: The exit code of a worker that left to stop a job it was told to stop (cancelled, or past its time
#: limit, by a server that does not supervise it): replaced at once, like one we killed.
EXIT_STOPPED = 3


class Supervisor:
    """Keeps ``count`` worker processes running; a crash is restarted with exponential backoff."""

    def __init__(self, ini: str, count: int, grace: float = 10.0, env: dict | None = None):
        self.ini = os.path.abspath(ini)
        self.count = count
        self.grace = grace
        self.env = env
        self.procs: dict[int, subprocess.Popen] = {}      # slot -> process
        self.restarts = 0
        self._killed: set[int] = set()                    # pids we killed on purpose (no backoff)
        self._stop = threading.Event()
        self._threads: dict[int, threading.Thread] = {}   # slot -> its watcher
        self._lock = threading.Lock()
        self.restarting = False                           # a rolling restart is under way
        #: Set by a server: returns (the worker's end of a fresh direct line, a function closing the server's
        #: end), for each new worker (CpuDispatcher.open_line)
        self.line_factory = None
        self._line_closers: dict[int, object] = {}         # worker pid -> closes the server's end of its line

    def start(self) -> "Supervisor":
        """Start one watcher thread per slot, each running and restarting its worker; returns self."""
        with self._lock:
            self._start_watchers()
        return self

    def _start_watchers(self) -> None:
        for slot in range(self.count):
            thread = self._threads.get(slot)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._watch, args=(slot,), name=f"worker-{slot}", daemon=True)
                self._threads[slot] = thread
                thread.start()

    def resize(self, count: int) -> None:
        """Keep ``count`` workers from now on: new slots start at once; a removed slot's worker is sent SIGTERM,
        finishes its job (SIGKILL after the grace, as at shutdown) and is not replaced."""
        with self._lock:
            retired = [self.procs.get(slot) for slot in range(count, self.count)]
            self.count = count
            self._start_watchers()
        for proc in retired:        # each in its own thread: the caller (a request, a heartbeat) must not wait
            if proc is not None:    # for a job to finish
                threading.Thread(target=self._retire, args=(proc,), name="worker-retire", daemon=True).start()

    def restart(self) -> None:
        """Replace every worker, one at a time (the others keep working): each gets SIGTERM, finishes its job
        (SIGKILL after the grace) and is replaced at once, before the next one is asked.  Blocks until done:
        run it in its own thread or greenlet."""
        self.restarting = True
        try:
            for slot in sorted(list(self.procs)):
                proc = self.procs.get(slot)
                if proc is None or proc.poll() is not None or slot >= self.count or self._stop.is_set():
                    continue
                self._killed.add(proc.pid)                # a planned replacement: no backoff
                self._retire(proc)
                deadline = time.monotonic() + 30.0        # its replacement running before the next one goes
                while not self._stop.is_set() and time.monotonic() < deadline:
                    new = self.procs.get(slot)
                    if slot >= self.count or (new is not None and new is not proc and new.poll() is None):
                        break
                    self._stop.wait(0.05)
        finally:
            self.restarting = False

    def _retire(self, proc: subprocess.Popen) -> None:
        """SIGTERM ``proc`` and wait for it, SIGKILL after the grace."""
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(self.grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass

    def _spawn(self) -> subprocess.Popen:
        args = [sys.executable, "-m", "greenjobs.pool.cpu.worker", "--one", "--supervised",
                "--parent", str(os.getpid()), self.ini]
        line = close = None
        if self.line_factory is not None:
            try:
                line, close = self.line_factory()
            except OSError as exc:      # (out of descriptors?) this worker talks over the broker only
                log.warning("could not make a direct line for a new cpu worker (%s); it uses the broker", exc)
        if line is None:
            return subprocess.Popen(args, env=self.env, stdin=subprocess.DEVNULL)
        try:
            proc = subprocess.Popen(args + ["--line", str(line.fileno())], env=self.env, stdin=subprocess.DEVNULL,
                                    pass_fds=(line.fileno(),))
        except BaseException:
            close()
            raise
        finally:
            line.close()                # the child holds its own copy; ours would keep the line open past it
        self._line_closers[proc.pid] = close
        return proc

    def _watch(self, slot: int) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            started = time.monotonic()
            with self._lock:                              # a resize reads procs under it: none spawns unseen
                if slot >= self.count:
                    break
                proc = self._spawn()
                self.procs[slot] = proc
            code = proc.wait()
            close = self._line_closers.pop(proc.pid, None)
            if close is not None:
                close()
            if self._stop.is_set():
                break
            if slot >= self.count:                        # resized away: not replaced
                self.procs.pop(slot, None)
                log.info("worker %s (pid %s) stopped: the pool was resized to %d", slot, proc.pid, self.count)
                break
            self.restarts += 1
            if proc.pid in self._killed or code == EXIT_STOPPED:
                self._killed.discard(proc.pid)
                log.info("worker %s (pid %s) was stopped to stop its job; replacing it", slot, proc.pid)
                continue
            if time.monotonic() - started > 10:
                backoff = 0.5
            log.warning("worker %s (pid %s) exited with %s; restarting in %.1f s", slot, proc.pid, code, backoff)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def pids(self) -> list[int]:
        """Process ids of the workers running now."""
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def alive(self) -> int:
        """How many workers are running now."""
        return len(self.pids())

    def kill(self, pid: int) -> bool:
        """SIGKILL one of our workers (hard time limit, cancel); it is replaced at once."""
        if pid not in self.pids():
            return False
        self._killed.add(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def request_stop(self) -> None:
        """Safe in a signal handler: only sets the stop event, so run_forever stops the workers."""
        self._stop.set()

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM every worker (each finishes its job), SIGKILL what is left after ``grace`` (default: its own)."""
        self._stop.set()
        procs = [p for p in self.procs.values() if p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + (self.grace if grace is None else grace)
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def run_forever(self) -> None:
        """For greenjobs-worker: supervise until SIGTERM/SIGINT, then stop the workers."""
        self.start()
        while not self._stop.wait(1.0):
            pass
        self.stop()


class HostLock:
    """One set of cpu workers per ini per host, however many processes serve that ini (``gunicorn -w N``,
    several ``pserve`` of one file): the process holding an flock on a file named for the ini supervises
    them.  The kernel releases the lock when its holder dies, however it dies, so another process of
    that ini takes over at its next maintenance tick (its workers, children of the dead one, die with it)."""

    def __init__(self, ini: str):
        digest = hashlib.sha256(os.path.abspath(ini).encode()).hexdigest()[:16]
        self.path = os.path.join(tempfile.gettempdir(), f"greenjobs-cpu-workers-{digest}.lock")
        self.ini = os.path.abspath(ini)
        self._fh = None

    @property
    def held(self) -> bool:
        return self._fh is not None             # False (no file to lock) counts as held

    def acquire(self) -> bool:
        """Take the lock if nobody holds it (never waits); True if this process holds it now."""
        if self._fh is not None:
            return True
        try:
            fh = open(self.path, "a+")
        except OSError as exc:      # e.g. another user's file in a sticky /tmp: supervise, as without a lock
            log.warning("cannot open %s (%s): starting this process's cpu workers without the host lock",
                        self.path, exc)
            self._fh = False
            return True
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} {self.ini}\n")
        fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        """The pid that holds the lock, as its file says ('' if it cannot be read)."""
        try:
            with open(self.path) as fh:
                return fh.read().split(" ", 1)[0]
        except OSError:
            return ""

    def release(self) -> None:
        if self._fh:
            self._fh.close()            # closing the file releases the flock
        self._fh = None
