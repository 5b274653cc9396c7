"""Hosts as network namespaces, for tests that kill, pause and partition whole hosts.

A :class:`Lab` is a bridge in the root namespace (the services host: it carries the lab's first
address, where the test's private PostgreSQL listens) and one namespace per host, each joined to the
bridge by a veth pair and given its own hostname (a UTS namespace, through ``unshare``), so the
server's lease owner ids name different hosts and adoption goes by lease expiry, as across machines.
Only addresses the lab assigned are used.  ``close()`` kills every process of every host and removes
the links, namespaces and bridge, also after a failed test.
"""
from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import subprocess


def available() -> bool:
    """Root, iproute2 and unshare: what a lab needs."""
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("unshare") is not None


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)


class Host:
    """One namespace of a lab: ``run`` starts a process inside it (with the host's own hostname)."""

    def __init__(self, lab: "Lab", index: int, name: str):
        self.lab, self.name = lab, name
        self.ns = f"{lab.tag}{name}"
        self.outer = f"{lab.tag}o{index}"            # the bridge's end of the veth pair
        self.inner = f"{lab.tag}i{index}"
        self.address = f"{lab.prefix}.{10 + index}"
        self.procs: list[subprocess.Popen] = []

    def create(self) -> "Host":
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        _ip("link", "set", self.inner, "netns", self.ns)
        _ip("link", "set", self.outer, "master", self.lab.bridge)
        _ip("link", "set", self.outer, "up")
        _ip("netns", "exec", self.ns, "ip", "addr", "add", f"{self.address}/24", "dev", self.inner)
        _ip("netns", "exec", self.ns, "ip", "link", "set", self.inner, "up")
        _ip("netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        return self

    def run(self, argv: list[str], cwd, log, env: dict | None = None) -> subprocess.Popen:
        """Start ``argv`` inside the host (its network, its hostname); output to the open file ``log``."""
        script = f'hostname {self.name} && exec "$@"'
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "unshare", "--uts", "sh", "-c", script, "sh", *argv],
                                cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True, timeout=30).stdout
        return [int(p) for p in out.split()]

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every process of the host (SIGKILL: the host dies; SIGSTOP: it freezes)."""
        for pid in self.pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def partition(self) -> None:
        """Cut the host off the lab (its link down): it neither reaches nor is reached by anyone."""
        _ip("link", "set", self.outer, "down")

    def heal(self) -> None:
        _ip("link", "set", self.outer, "up")

    def destroy(self) -> None:
        self.signal_all(signal.SIGCONT)
        self.signal_all(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        _ip("link", "del", self.outer, check=False)
        _ip("netns", "del", self.ns, check=False)


class Lab:
    """A bridge (the services host, ``services`` address) and hosts added with ``host(name)``."""

    def __init__(self):
        self.tag = "gj" + "".join(random.choice("abcdefghijkmnpqrstuvwxyz") for _ in range(3))
        self.prefix = f"10.213.{self._subnet()}"
        self.bridge = f"{self.tag}br"
        self.services = f"{self.prefix}.1"
        self.hosts: list[Host] = []

    _held: list = []

    @classmethod
    def _subnet(cls) -> int:
        """A third octet no other lab on this machine holds (an flock per octet, held until this process exits)."""
        folder = os.path.join(os.environ.get("TMPDIR", "/tmp"), "greenjobs-test-labs")
        os.makedirs(folder, exist_ok=True)
        start = random.randrange(234)
        for i in range(234):
            octet = 16 + (start + i) % 234
            fh = open(os.path.join(folder, str(octet)), "a")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            cls._held.append(fh)
            return octet
        raise RuntimeError("no free lab subnet")

    def open(self) -> "Lab":
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.services}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def host(self, name: str) -> Host:
        host = Host(self, len(self.hosts), name)
        self.hosts.append(host)
        return host.create()

    def close(self) -> None:
        for host in self.hosts:
            host.destroy()
        _ip("link", "del", self.bridge, check=False)
