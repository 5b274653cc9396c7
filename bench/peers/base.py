"""What the harness needs from a peer: start its workers, submit, wait, stop and clean up."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPUS = os.cpu_count() or 1


class NotReady(Exception):
    """A result did not arrive within the timeout given to ``Peer.result``."""


class Peer:
    """One job system driven through its own client API; subclasses bind the job names to tasks.

    ``mode`` is ``io`` (sleep, http_get, echo: the peer's gevent/greenlet setup) or ``cpu``
    (pbkdf2: its process setup), each configured as the peer's docs recommend.
    """

    name = "peer"
    broker = "redis"
    has_batch = False

    def __init__(self, namespace: str, redis_url: str, log_dir: Path):
        self.namespace, self.redis_url, self.log_dir = namespace, redis_url, log_dir
        self.procs: list[subprocess.Popen] = []
        self.mode = ""

    # -- subclasses --------------------------------------------------------------------
    def worker_commands(self, mode: str) -> list[list[str]]:
        """One command per worker process to start for ``mode``."""
        raise NotImplementedError

    def configuration(self, mode: str) -> str:
        """What the table shows about how this peer ran in ``mode``."""
        raise NotImplementedError

    def submit(self, job: str, **kwargs):
        """Enqueue one job; returns a handle."""
        raise NotImplementedError

    def submit_many(self, job: str, kwargs_list: list[dict]) -> list:
        """Enqueue many with the peer's batch API (only when ``has_batch``); returns handles."""
        raise NotImplementedError

    def result(self, handle, timeout: float = 60.0):
        """Block until the job of ``handle`` has a result visible to this client; return it.

        Raises NotReady after ``timeout`` s, and the peer's own error if the job failed.
        """
        raise NotImplementedError

    def wait_all(self, handles: list, timeout: float = 1200.0) -> None:
        """Block until every handle has a result (the default waits one by one, in short slices:
        a blocking read longer than the Redis client's socket timeout fails instead of waiting)."""
        deadline = time.monotonic() + timeout
        for h in handles:
            while True:
                try:
                    self.result(h, 1.0)
                    break
                except NotReady:
                    if time.monotonic() > deadline:
                        raise

    def cleanup(self) -> None:
        """Delete what this run left in the broker (keys under ``namespace``)."""
        import redis
        client = redis.Redis.from_url(self.redis_url)
        for key in client.scan_iter(match=f"*{self.namespace}*", count=1000):
            client.delete(key)
        client.close()

    # -- shared ------------------------------------------------------------------------
    def env(self) -> dict:
        return dict(os.environ, BENCH_NS=self.namespace, BENCH_REDIS=self.redis_url, PYTHONUNBUFFERED="1",
                    PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    def start(self, mode: str, timeout: float = 90.0) -> "Peer":
        """Start the workers for ``mode`` in their own process group; return once one echo came back."""
        self.mode = mode
        bindir = Path(sys.executable).parent
        for i, cmd in enumerate(self.worker_commands(mode)):
            if not os.path.isabs(cmd[0]) and (bindir / cmd[0]).exists():
                cmd = [str(bindir / cmd[0]), *cmd[1:]]
            log = open(self.log_dir / f"{self.name}-{mode}-{i}.log", "ab")
            self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=self.env(), stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
        deadline = time.monotonic() + timeout
        handle = self.submit("echo", ready=True)
        while True:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{self.name} worker exited with {dead[0].returncode}; see {self.log_dir}")
            try:
                self.result(handle, timeout=1.0)
                return self
            except NotReady:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} workers not ready in {timeout} s; see {self.log_dir}")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        """SIGTERM each worker's process group, SIGKILL what is left after 10 s, then clean up."""
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        self.procs = []
        self.cleanup()
