"""The one job record shared by the greenlet pool, the store, the CPU queue and the HTTP API."""
from __future__ import annotations

import collections
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from greenjobs.pool.errors import IllegalTransition

SCHEDULED, QUEUED, RUNNING = "scheduled", "queued", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
STATES = (SCHEDULED, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset((SUCCEEDED, FAILED, CANCELLED))
ACTIVE = (SCHEDULED, QUEUED, RUNNING)
KINDS = ("io", "cpu")
#: Separates the principal from the client's key in a stored unique_key.
SCOPE = "\x1f"
#: The lifecycle events, in the order one job meets them (listeners, the event stream, signals).
EVENTS = ("submitted", "started", "progress", "blocked", "retrying", SUCCEEDED, FAILED, CANCELLED)

#: Allowed moves.  running -> queued is a lease given back (shutdown, owner death);
#: running -> scheduled and failed -> queued are retries.
TRANSITIONS: dict[str, frozenset[str]] = {
    SCHEDULED: frozenset((QUEUED, CANCELLED)),
    QUEUED: frozenset((RUNNING, CANCELLED, SCHEDULED)),
    RUNNING: frozenset((SUCCEEDED, FAILED, CANCELLED, QUEUED, SCHEDULED)),
    SUCCEEDED: frozenset(),
    FAILED: frozenset((QUEUED,)),
    CANCELLED: frozenset(),
}


def sources(target: str) -> tuple[str, ...]:
    """The states from which ``target`` may be reached (used in the store's compare-and-swap)."""
    return tuple(s for s in STATES if target in TRANSITIONS[s])


def check_transition(current: str, target: str) -> None:
    """Raise IllegalTransition unless ``current -> target`` is allowed."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"a job cannot move from {current} to {target}")


#: Ids made ahead, from one os.urandom call per ID_CHUNK: os.urandom releases the GIL, and a batch of 10,000 jobs
#: parsed on the hub while the store's writer thread holds the GIL paid a GIL hand-off for every id.
_ids: collections.deque = collections.deque()
ID_CHUNK = 256
os.register_at_fork(after_in_child=_ids.clear)      # a forked child must not hand out its parent's next ids


def new_id() -> str:
    """A random 32-hex job id, a version-4 UUID's hex (ordering comes from the store's sequence, not the id).

    Built from random bytes directly (``uuid.uuid4().hex`` makes a UUID object and an int on the way, 3.5x the
    cost), ID_CHUNK at a time.  Thread-safe: deque pops are atomic, and two threads refilling at once only make
    more."""
    while True:
        try:
            return _ids.popleft()
        except IndexError:
            _ids.extend(_make_ids(ID_CHUNK))


def _make_ids(count: int) -> list[str]:
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])     # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])     # RFC 4122 variant
    hexed = raw.hex()
    return [hexed[i:i + 32] for i in range(0, 32 * count, 32)]


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def runner(owner: str | None) -> dict | None:
    """A lease owner id (``host:pid:start:random``, greenjobs.pool.owners) as ``{id, host, pid}``, or None."""
    if not owner:
        return None
    parts = owner.split(":")
    pid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return {"id": owner, "host": parts[0], "pid": pid}


def error_info(kind: str, message: str, traceback: str | None = None) -> dict[str, Any]:
    """The JSON shape of a job error: ``kind`` is machine-readable (timeout, exception, ...)."""
    return {"kind": kind, "message": message, "traceback": traceback}


@dataclass(slots=True)
class Job:
    """A job as stored and as run.  ``args``/``kwargs`` are JSON values, never Python objects."""

    id: str
    handler: str
    kind: str
    state: str
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    priority: int = 0
    timeout: float | None = None
    max_retries: int = 0
    run_at: float | None = None
    attempts: int = 0
    result: Any = None
    error: dict | None = None
    errors: list = field(default_factory=list)   # every failed attempt's error, oldest first
    progress: dict | None = None
    batch_id: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    callback_url: str | None = None     # POSTed to (signed) when the job ends
    callback: dict | None = None        # {url, delivery (job id), state, attempts: [...]}
    schedule: dict | None = None        # {name, fire_at (epoch s; None for "run now")} of a schedule's job
    workflow_id: str | None = None      # the workflow this job is a step of (also its batch)
    deps_left: int | None = None        # a waiting step: how many of its dependencies have not succeeded yet
    step_input: dict | None = None      # what a waiting step receives first (greenjobs.pool.workflows)
    expires_at: float | None = None     # a job not started by then ends cancelled, error kind expired
    unique_key: str | None = None       # at most one active job per key (scoped by principal)
    gate: dict | None = None            # {bucket, every, max_running}: its flow rules (greenjobs.pool.flow)
    waiting: str | None = None          # "rate_limit" (run_at is its reserved start) or "max_running"
    blocked: dict | None = None         # {count, longest_ms, total_ms}: how it blocked the event loop
    rerouted: bool = False              # an io handler's job sent to the cpu workers (it kept blocking the hub)
    ran_by: str | None = None           # the runner (server or cpu worker owner id) of its last ended attempt

    @property
    def terminal(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self.state in TERMINAL

    def transition(self, target: str) -> None:
        """Move to ``target`` in memory, rejecting illegal moves (IllegalTransition)."""
        if target not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"a job cannot move from {self.state} to {target}")
        self.state = target

    def public(self) -> dict[str, Any]:
        """The job as the HTTP API shows it."""
        return {
            "id": self.id,
            "handler": self.handler,
            "kind": self.kind,
            "state": self.state,
            "priority": self.priority,
            "args": self.args,
            "kwargs": self.kwargs,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "result": self.result,
            "error": self.error,
            "errors": self.errors,
            "attempts": self.attempts,
            "progress": self.progress,
            "batch": self.batch_id,
            "run_at": iso(self.run_at),
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "callback_url": self.callback_url,
            "callback": self.callback,
            "schedule": None if self.schedule is None else {"name": self.schedule["name"],
                                                           "fire_at": iso(self.schedule["fire_at"])},
            "workflow": None if self.workflow_id is None else {"id": self.workflow_id,
                                                              "waiting_for": self.deps_left or 0},
            "expires_at": iso(self.expires_at),
            "unique_key": None if self.unique_key is None else self.unique_key.rsplit(SCOPE, 1)[-1],
            "rate_limit": None if self.gate is None or self.gate.get("every") is None
            else {"bucket": self.gate["bucket"], "per_second": round(1.0 / self.gate["every"], 6)},
            "max_running": None if self.gate is None else self.gate.get("max_running"),
            "waiting": self.why_waiting(),
            "blocked": self.blocked,
            "ran_in": "worker" if self.kind == "cpu" else "hub",
            "rerouted": self.rerouted,
            "ran_by": runner(self.ran_by),
        }

    def why_waiting(self) -> dict | None:
        """Why an active job does not run yet: its rate limit (until when), its handler's concurrency limit,
        the workflow steps it waits for, or its run_at; None when it runs, ended or is due."""
        if self.state == RUNNING or self.state in TERMINAL:
            return None
        if self.waiting == "rate_limit":
            return {"reason": "rate_limit", "until": iso(self.run_at)}
        if self.waiting == "max_running":
            return {"reason": "max_running"}
        if self.workflow_id is not None and self.deps_left:
            return {"reason": "upstream", "steps": self.deps_left}
        if self.state == SCHEDULED and self.run_at is not None:
            return {"reason": "run_at", "until": iso(self.run_at)}
        return None

    def message(self) -> dict:
        """The body of a queue message (JSON-serialisable): the stored fields, nothing executable."""
        return {"id": self.id, "handler": self.handler, "kind": self.kind, "args": self.args,
                "kwargs": self.kwargs, "priority": self.priority, "timeout": self.timeout,
                "max_retries": self.max_retries, "attempts": self.attempts}

    @classmethod
    def decode(cls, text: str | bytes | dict) -> "Job":
        """Inverse of :meth:`message` (a dict, or its JSON); ValueError on anything that is not a job message."""
        data = text if isinstance(text, dict) else json.loads(text)
        if (not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("handler"), str)
                or not isinstance(data.get("args", []), list) or not isinstance(data.get("kwargs", {}), dict)):
            raise ValueError("not a greenjobs job message")
        try:
            return cls(id=data["id"], handler=data["handler"], kind=str(data.get("kind", "cpu")), state=RUNNING,
                       args=data.get("args", []), kwargs=data.get("kwargs", {}),
                       priority=int(data.get("priority", 0)), timeout=data.get("timeout"),
                       max_retries=int(data.get("max_retries", 0)), attempts=int(data.get("attempts", 0)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a greenjobs job message: {exc}") from None
