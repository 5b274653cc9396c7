"""How a job is a row, for every SQL backend: the columns, their order, and the JSON they hold.

Both ledgers keep the same columns (JSON as text, times as epoch seconds), so a job reads and
writes the same way whichever database holds it; only the SQL dialect differs.
"""
from __future__ import annotations

import json
from dataclasses import astuple, dataclass
from typing import Any

from greenjobs.pool import lifecycle
from greenjobs.pool.job import ACTIVE, TERMINAL, Job

#: Every column of a job row as the store reads it (row_to_job takes them in this order).
COLUMNS = ("id", "handler", "kind", "state", "priority", "args", "kwargs", "timeout", "max_retries", "run_at",
           "attempts", "result", "error", "errors", "progress", "batch_id", "created_at", "started_at",
           "finished_at", "callback_url", "callback", "schedule_name", "schedule_fire_at", "workflow_id",
           "deps_left", "expires_at", "unique_key", "gate", "waiting", "blocked", "rerouted", "ran_by")
SELECT = ", ".join(COLUMNS)
#: The columns a new job is inserted with (the rest start NULL or at their default).
INSERTED = ("id", "handler", "kind", "state", "priority", "args", "kwargs", "timeout", "max_retries", "run_at",
            "attempts", "batch_id", "lease_owner", "lease_expires", "outbox", "created_at", "started_at",
            "callback_url", "schedule_name", "schedule_fire_at", "workflow_id", "deps_left", "step_input",
            "expires_at", "unique_key", "gate", "rerouted")


@dataclass(frozen=True)
class ServerRecord:
    """One runtime of the cluster as the servers table holds it: who it is and how busy, at its last heartbeat."""

    owner: str              # the lease owner id (greenjobs.pool.owners)
    host: str
    pid: int
    role: str               # "server" (HTTP and jobs) or "io-worker" (jobs only)
    version: str
    started_at: float
    heartbeat_at: float
    pool_size: int
    pool_busy: int
    cpu_workers: int        # worker processes it supervises
    streams: int = 0        # open GET /events streams (every server writes events to the ledger while any are)
    stats: str | None = None    # JSON: its throughput of the last minutes and its cpu workers (pool.observe.throughput)
    control: str | None = None  # JSON: the last request an admin made of it (resize or restart its cpu workers)

    def row(self) -> tuple:
        """The record as a servers row, in SERVER_COLUMNS order (``control`` is the admins', never a heartbeat's)."""
        return astuple(self)[:len(SERVER_COLUMNS)]


#: The servers table's columns a heartbeat writes, in ServerRecord's order.
SERVER_COLUMNS = ("owner", "host", "pid", "role", "version", "started_at", "heartbeat_at", "pool_size", "pool_busy",
                  "cpu_workers", "streams", "stats")
#: The columns read back: a heartbeat's, and the request an admin left for the server.
SERVER_READ = SERVER_COLUMNS + ("control",)


def states(names) -> str:
    """A SQL list of state (or kind) names, from the job model's constants: ``('scheduled', 'queued')``."""
    return "(" + ", ".join(f"'{name}'" for name in names) + ")"


ACTIVE_SQL = states(ACTIVE)
#: A failed job may be revived unless another job holding its unique_key is active (the unique index).
UNIQUE_FREE = (f"(unique_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS other WHERE other.unique_key = jobs.unique_key"
               f" AND other.state IN {ACTIVE_SQL}))")
TERMINAL_SQL = states(sorted(TERMINAL))
PUBLISHED_SQL = states(lifecycle.PUBLISHED_KINDS)      # kinds that go to the outbox while queued
#: move name -> the SQL list of states it may start from (greenjobs.pool.lifecycle's moves).
FROM = {name: states(move[0]) for name, move in (("claim", lifecycle.CLAIM), ("finish", lifecycle.FINISH),
                                                 ("retry", lifecycle.RETRY), ("cancel", lifecycle.CANCEL),
                                                 ("revive", lifecycle.REVIVE), ("give_back", lifecycle.GIVE_BACK),
                                                 ("promote", lifecycle.PROMOTE))}


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def row_to_job(row) -> Job:
    """A row of ``COLUMNS`` as a Job (JSON columns decoded)."""
    (id_, handler, kind, state, priority, args, kwargs, timeout, max_retries, run_at, attempts,
     result, error, errors, progress, batch_id, created_at, started_at, finished_at, callback_url, callback,
     schedule_name, schedule_fire_at, workflow_id, deps_left, expires_at, unique_key, gate, waiting, blocked,
     rerouted, ran_by) = row
    return Job(id=id_, handler=handler, kind=kind, state=state, priority=priority, args=json.loads(args),
               kwargs=json.loads(kwargs), timeout=timeout, max_retries=max_retries, run_at=run_at,
               attempts=attempts, result=loads(result), error=loads(error), errors=loads(errors) or [],
               progress=loads(progress), batch_id=batch_id, created_at=created_at, started_at=started_at,
               finished_at=finished_at, callback_url=callback_url, callback=loads(callback),
               schedule=None if schedule_name is None else {"name": schedule_name, "fire_at": schedule_fire_at},
               workflow_id=workflow_id, deps_left=deps_left, expires_at=expires_at, unique_key=unique_key,
               gate=loads(gate), waiting=waiting, blocked=loads(blocked), rerouted=bool(rerouted), ran_by=ran_by)


def insert_row(j: Job, owner: str, expires: float) -> tuple:
    """The values of ``INSERTED`` for a new job; the lifecycle says whether it is leased or published."""
    leased = lifecycle.leased(j)
    return (j.id, j.handler, j.kind, j.state, j.priority, dumps(j.args) if j.args else "[]",
            dumps(j.kwargs) if j.kwargs else "{}", j.timeout, j.max_retries, j.run_at, j.attempts, j.batch_id,
            owner if leased else None, expires if leased else None, int(lifecycle.to_publish(j)), j.created_at,
            j.started_at, j.callback_url, j.schedule["name"] if j.schedule else None,
            j.schedule["fire_at"] if j.schedule else None, j.workflow_id, j.deps_left,
            None if j.step_input is None else dumps(j.step_input), j.expires_at, j.unique_key,
            None if j.gate is None else dumps(j.gate), int(j.rerouted))
