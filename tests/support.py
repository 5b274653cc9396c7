"""Helpers for tests that start a real server: an ini copied from config.ini, a pserve process."""
from __future__ import annotations

import configparser
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


#: Test servers take ports below the kernel's ephemeral range (32768-60999 here), so no outgoing connection
#: is ever given one between our check and the server's bind.
PORTS = range(20000, 32000)
_PORT_LOCKS = Path(os.environ.get("TMPDIR", "/tmp")) / "greenjobs-test-ports"
_held: list = []          # lock files held until this process exits (the kernel releases them if it dies)


def free_port() -> int:
    """A loopback port that no other test process on this machine is handed (xdist workers, several runs).

    A port is ours while we hold an flock on its file; a port that binds now is free now.  Ports are taken in
    order from a random start, so one process never hands the same port out twice either."""
    _PORT_LOCKS.mkdir(exist_ok=True)
    start = random.randrange(len(PORTS))
    for i in range(len(PORTS)):
        port = PORTS[(start + i) % len(PORTS)]
        fh = open(_PORT_LOCKS / str(port), "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                fh.close()
                continue
        _held.append(fh)
        return port
    raise RuntimeError(f"no free test port in {PORTS}")


def child_env() -> dict:
    """The environment of a process a test starts: unbuffered output, and the repo importable (the test-only
    handler and probe modules live in tests/)."""
    return dict(os.environ, PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def write_ini(folder: Path, app: dict | None = None, server: dict | None = None,
              replace_server: bool = False) -> Path:
    """A copy of the project's config.ini in ``folder`` with overrides; returns its path.

    ``replace_server`` drops our runner's keys from [server:main] (for another runner, e.g. waitress).
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(ROOT / "config.ini")
    if replace_server:
        parser["server:main"] = {"host": "127.0.0.1"}
    parser["server:main"]["port"] = str(free_port())
    for key, value in (app or {}).items():
        parser["app:main"][key] = str(value)
    for key, value in (server or {}).items():
        parser["server:main"][key] = str(value)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.ini"
    with open(path, "w") as fh:
        parser.write(fh)
    return path


class ChildProcess:
    """A process a test started (``proc``), with its output in ``log_path``: read the log, signal, kill, stop."""

    log_path: Path
    proc: subprocess.Popen | None = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        return self.proc.returncode


class ServerProcess(ChildProcess):
    """``pserve config.ini`` as a child process, with its output in ``folder/server.log``."""

    def __init__(self, ini: Path, env: dict | None = None):
        self.ini = ini
        self.env = env or {}            # added to child_env(), e.g. libfaketime's variables
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(ini)
        self.port = int(parser["server:main"]["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = ini.parent / "server.log"
        self.proc: subprocess.Popen | None = None
        self.http = requests.Session()

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        log = open(self.log_path, "ab")
        # the test-only handler and probe modules live in tests/, so make the repo importable
        env = {**child_env(), **self.env}
        self.proc = subprocess.Popen([sys.executable, "-m", "pyramid.scripts.pserve", str(self.ini)],
                                     cwd=self.ini.parent, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pserve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"pserve did not become healthy in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        code = super().stop(timeout)
        self.http.close()
        return code

    # -- small HTTP conveniences -------------------------------------------------------
    def post(self, path: str, body, **kw) -> requests.Response:
        return self.http.post(self.url + path, json=body, timeout=kw.pop("timeout", 30), **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.url + path, timeout=kw.pop("timeout", 90), **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.http.delete(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def submit(self, handler: str, **fields) -> dict:
        response = self.post("/jobs", {"handler": handler, **fields})
        assert response.status_code == 202, response.text
        return response.json()

    def wait(self, job_id: str, seconds: float = 30) -> dict:
        response = self.get(f"/jobs/{job_id}?wait={seconds}")
        assert response.status_code == 200, response.text
        return response.json()


def stop_all(procs) -> None:
    """Stop every server (SIGTERM, then SIGKILL if it hangs): the teardown of server fixtures."""
    for proc in procs:
        try:
            proc.stop(timeout=30)
        except Exception:
            proc.kill()


class WorkerProcess(ChildProcess):
    """``greenjobs-worker`` as a child process (no HTTP), with its output in ``folder/<mode>-worker.log``:
    ``mode="io"`` runs ``--io config.ini``; ``mode="cpu"`` supervises ``processes`` cpu workers."""

    READY = {"io": "io worker running io jobs", "cpu": " consuming "}

    def __init__(self, ini: Path, mode: str = "io", processes: int = 1):
        self.ini = ini
        self.mode = mode
        self.args = ["--io", str(ini)] if mode == "io" else [str(ini), "--processes", str(processes)]
        self.log_path = ini.parent / f"{mode}-worker.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "WorkerProcess":
        log = open(self.log_path, "ab")
        env = child_env()
        self.proc = subprocess.Popen([sys.executable, "-m", "greenjobs.pool.cli", *self.args],
                                     cwd=self.ini.parent, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"greenjobs-worker exited with {self.proc.returncode}:\n{self.log()}")
            if self.READY[self.mode] in self.log():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"greenjobs-worker did not start in {timeout} s:\n{self.log()}")
