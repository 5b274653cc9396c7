"""A private RabbitMQ node for fault tests: its own node name, ports, data and cookie under one folder.

The shared broker (127.0.0.1:5672, ``rabbit@…``) is never touched: this node has another name, its
own AMQP and distribution ports, its own mnesia/log/config/plugins files and its own Erlang cookie
(``HOME`` points into the folder), and ``RABBITMQ_CONF_ENV_FILE`` is an empty file, so nothing of
``/etc/rabbitmq`` applies to it.  It only shares epmd (a name registry), which is harmless.

The server runs in the foreground as a child in its own session (process group), so the test can
stop it gracefully (``rabbitmqctl -n NODE stop``), SIGKILL its ``beam.smp`` (a crash: no cleanup),
and start it again on the same data folder (durable queues and persistent messages survive).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support import free_port

#: The distribution packages run their scripts through a wrapper that ``su``s to the ``rabbitmq``
#: user (who cannot write into the test's folder); the real scripts sit next to it.
_SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin", "/opt/rabbitmq/sbin")


def find_script(name: str) -> str | None:
    """The unwrapped RabbitMQ script ``name`` (rabbitmq-server, rabbitmqctl), or None if not installed."""
    override = os.environ.get("RABBITMQ_SCRIPTS_DIR")
    candidates = [os.path.join(override, name)] if override else []
    candidates += [os.path.join(d, name) for d in _SCRIPT_DIRS]
    found = shutil.which(name)
    if found:
        real = os.path.realpath(found)
        if os.path.basename(real) == "rabbitmq-script-wrapper":
            candidates.append(os.path.join(os.path.dirname(real), name))
        else:
            candidates.append(real)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK) and \
                os.path.basename(os.path.realpath(path)) != "rabbitmq-script-wrapper":
            return path
    return None




def _amqp_answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


class RabbitNode:
    """One private RabbitMQ node in ``folder``: ``start()``, ``stop()``, ``kill()``, ``wait_ready()``, ``close()``."""

    def __init__(self, folder: Path, port: int | None = None, listen: str = "127.0.0.1"):
        """``listen``: the address AMQP is served on (loopback, or a test lab's services address; then the
        guest user may log in from the lab's hosts, which are not loopback)."""
        self.server_script = find_script("rabbitmq-server")
        self.ctl_script = find_script("rabbitmqctl")
        if self.server_script is None or self.ctl_script is None:
            raise FileNotFoundError("no rabbitmq-server / rabbitmqctl installed")
        self.folder = Path(folder)
        self.port = port or free_port()
        self.dist_port = free_port()
        while self.dist_port == self.port:
            self.dist_port = free_port()
        self.node = f"gjtest-{secrets.token_hex(4)}@localhost"
        self.listen = listen
        self.url = f"amqp://guest:guest@{listen}:{self.port}//"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.folder / "node.out"
        home = self.folder / "home"
        for sub in ("home", "mnesia", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        (self.folder / "enabled_plugins").write_text("[].\n")      # no management plugin (port 15672)
        (self.folder / "rabbitmq-env.conf").write_text("")         # not /etc/rabbitmq/rabbitmq-env.conf
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = {listen}:{self.port}\n"
            f"loopback_users.guest = {'true' if listen.startswith('127.') else 'false'}\n"
            "disk_free_limit.absolute = 10MB\n")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(home),                          # the Erlang cookie of this node and of rabbitmqctl
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": listen,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.folder / "node.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    # -- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "RabbitNode":
        """Start the node (foreground, own session) and wait until it accepts AMQP connections."""
        if self.running():
            raise RuntimeError(f"node {self.node} is already running")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([self.server_script], cwd=self.folder, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until an AMQP client can connect and open a channel (bounded); raises with the node's log tail."""
        from kombu import Connection
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if _amqp_answers(self.listen, self.port):
                try:
                    with Connection(self.url, connect_timeout=2) as conn:
                        conn.connect()
                        conn.channel().close()
                    return
                except Exception as exc:  # noqa: BLE001 - still booting
                    last = exc
            time.sleep(0.2)
        raise RuntimeError(f"node {self.node} did not accept AMQP on port {self.port} within {timeout} s "
                           f"(last error {last!r}):\n{self.log_tail()}")

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """``rabbitmqctl -n NODE …`` against this node only."""
        return subprocess.run([self.ctl_script, "-n", self.node, *args], env=self.env, cwd=self.folder,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop (``rabbitmqctl stop``): clients see their connections closed; the process exits."""
        if not self.running():
            return
        try:
            self.ctl("stop", timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_group()
        self._kill_group()          # helpers left behind (erl_child_setup, inet_gethost), if any

    def kill(self) -> int:
        """SIGKILL the node's beam.smp (a crash: no cleanup, no flush); returns its pid."""
        pid = self.beam_pid()
        if pid is None:
            raise RuntimeError(f"no beam.smp found for node {self.node}")
        os.kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        self._kill_group()
        deadline = time.monotonic() + 10
        while _amqp_answers(self.listen, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return pid

    def close(self) -> None:
        """Teardown: stop gracefully if it runs, then make sure nothing of its process group is left."""
        try:
            self.stop(timeout=30)
        finally:
            self._kill_group()

    # -- inspection ------------------------------------------------------------------
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def beam_pid(self) -> int | None:
        """The pid of the node's Erlang VM: a beam process in our child's process group."""
        if self.proc is None:
            return None
        for pid in self._group_pids():
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("beam"):
                return pid
        return None

    def _group_pids(self) -> list[int]:
        if self.proc is None:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:        # pgrp (the session leader is our child)
                pids.append(int(entry))
        return pids

    def _kill_group(self) -> None:
        """SIGKILL what is left of the node's process group (only while members of it exist)."""
        if self.proc is None:
            return
        if self._group_pids():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.log_path, self.folder / "log" / f"{self.node}.log"):
            try:
                text += f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
            except OSError:
                pass
        return text
