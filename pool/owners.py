"""Who holds a lease: ``host:pid:start:nonce`` names one process incarnation, so a lease whose
holder died on this host is recognised at once, even when the pid has been reused."""
from __future__ import annotations

import os
import socket
import uuid

HOST = socket.gethostname()


def _start_time(pid: int) -> str:
    """The process start time (clock ticks since boot) from /proc, or '' where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_id() -> str:
    """A fresh id for a lease holder in this process."""
    pid = os.getpid()
    return f"{HOST}:{pid}:{_start_time(pid)}:{uuid.uuid4().hex[:8]}"


def owner_pid(owner: str) -> int | None:
    """The pid of ``owner`` if it runs on this host, else None."""
    parts = owner.split(":")
    if len(parts) < 2 or parts[0] != HOST or not parts[1].isdigit():
        return None
    return int(parts[1])


def owner_is_dead(owner: str, me: str | None = None) -> bool:
    """True if ``owner`` was a process on this host that is gone (or an earlier holder in this one).

    False when it cannot tell (another host): there the lease expiry decides.
    """
    parts = owner.split(":")
    pid = owner_pid(owner)
    if pid is None:
        return False
    start = parts[2] if len(parts) > 2 else ""
    if pid == os.getpid():
        return owner != me          # an earlier runtime or incarnation with our pid
    current = _start_time(pid)
    if not current:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False                # alive, and no /proc to compare start times
    return bool(start) and current != start
