"""Workflow steps in the ledger, one implementation for every SQL store (they differ only in paramstyle).

A workflow is a batch with a ``shape`` (its kind and result expression, greenjobs.pool.workflows) and an
edge per dependency in ``job_deps``.  Every move of a step to an end state goes through :meth:`_ended`
inside the transaction that makes it, so its dependents move with it or not at all:

- succeeded: each waiting dependent's ``deps_left`` drops by one (one UPDATE, by the edge index: a chord of
  10,000 header jobs costs 10,000 of these, not 10,000²); one that reaches zero is released, queued with
  its input (read once, from the results of its dependencies) before its own args;
- failed or cancelled: every waiting step downstream is cancelled with ``upstream_failed``.

The move itself is the store's fenced compare-and-swap, so an end counts once however often a job is
redelivered, retried or adopted; a waiting step can only be moved by the last of its dependencies.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from greenjobs.pool.job import CANCELLED, QUEUED, SCHEDULED, SUCCEEDED, Job
from greenjobs.pool.store.rows import FROM, PUBLISHED_SQL, SELECT, dumps, loads, row_to_job
from greenjobs.pool.workflows import UPSTREAM_FAILED, Plan, evaluate

_DECREMENT = (f"UPDATE jobs SET deps_left = deps_left - 1 WHERE id IN (SELECT dependent_id FROM job_deps"
              f" WHERE job_id = ?) AND state = '{SCHEDULED}' AND deps_left > 0 RETURNING id, deps_left")
_INPUTS = ("SELECT jobs.id, jobs.result FROM job_deps JOIN jobs ON jobs.id = job_deps.job_id"
           " WHERE job_deps.dependent_id = ?")
_RELEASE = (f"UPDATE jobs SET state = '{QUEUED}', args = ?, deps_left = 0, lease_owner = NULL, lease_expires = NULL,"
            f" outbox = CASE WHEN kind IN {PUBLISHED_SQL} THEN 1 ELSE 0 END"
            f" WHERE id = ? AND state = '{SCHEDULED}' AND deps_left = 0 RETURNING {SELECT}")
_DOWNSTREAM = "SELECT dependent_id FROM job_deps WHERE job_id = ?"
_CANCEL_WAITING = (f"UPDATE jobs SET state = '{CANCELLED}', finished_at = ?, error = ?, lease_owner = NULL,"
                   f" lease_expires = NULL WHERE id = ? AND state = '{SCHEDULED}' AND deps_left > 0 RETURNING {SELECT}")
#: running (this attempt, leased to the runner) -> an end state, as the stores' batched FINISH does it
_FINISH_STEP = ("UPDATE jobs SET state = ?, result = ?, error = ?, errors = ?, finished_at = ?,"
                " progress = COALESCE(?, progress), ran_by = lease_owner, lease_owner = NULL, lease_expires = NULL"
                f" WHERE id = ? AND state IN {FROM['finish']} AND lease_owner = ? AND attempts = ?")


class StepsMoved:
    """What one end did downstream: steps released (queued now) and steps cancelled (upstream_failed)."""

    __slots__ = ("released", "cancelled")

    def __init__(self) -> None:
        self.released: list[Job] = []
        self.cancelled: list[Job] = []

    def __bool__(self) -> bool:
        return bool(self.released or self.cancelled)


class WorkflowTable:
    """Mixed into an SQL store with ``self._db.write(fn, ...)`` and ``_q`` (ScheduleTable's paramstyle)."""

    #: Called (in the writer's greenlet, after the commit) with the StepsMoved of every end that moved some:
    #: the runtime announces the cancelled steps and starts the released ones.  Set by the runtime.
    on_steps_moved: Callable[[StepsMoved], None] | None = None

    def _insert_plan(self, conn, plan: Plan, now: float) -> None:
        """Inside an insert's transaction: the workflow's shape on its batch row, and its edges."""
        conn.execute(self._q("UPDATE batches SET shape = ? WHERE id = ?"), (dumps(plan.shape()), plan.id))
        if plan.edges:
            conn.cursor().executemany(self._q("INSERT INTO job_deps (workflow_id, job_id, dependent_id) VALUES (?, ?, ?)"),
                                      [(plan.id, dependency, dependent) for dependency, dependent in plan.edges])

    def _ended(self, conn, ended: list[tuple[str, str]]) -> StepsMoved:
        """Inside the transaction that moved each ``(job id, end state)``: move its dependents."""
        moved, now = StepsMoved(), time.time()
        for job_id, state in ended:
            if state == SUCCEEDED:
                for dependent, left in conn.execute(self._q(_DECREMENT), (job_id,)).fetchall():
                    if left == 0:
                        released = self._release(conn, dependent)
                        if released is not None:
                            moved.released.append(released)
            else:
                frontier = [job_id]
                while frontier:
                    below = [r[0] for j in frontier for r in conn.execute(self._q(_DOWNSTREAM), (j,)).fetchall()]
                    frontier = []
                    for dependent in below:
                        row = conn.execute(self._q(_CANCEL_WAITING), (now, dumps(UPSTREAM_FAILED), dependent)).fetchone()
                        if row is not None:             # not already cancelled by another failed branch
                            moved.cancelled.append(row_to_job(row))
                            frontier.append(dependent)
        return moved

    def _after_end(self, conn, job: Job, state: str) -> StepsMoved:
        """Inside the transaction that moved ``job`` to its end ``state``: move its workflow's dependents, and
        release a job waiting for a slot of its handler (greenjobs.pool.store.flow)."""
        moved = self._ended(conn, [(job.id, state)]) if job.workflow_id is not None else StepsMoved()
        self._free(conn, job, moved)
        return moved

    @staticmethod
    def linked(job: Job) -> bool:
        """Whether ending ``job`` moves other jobs (its workflow's, or one waiting for its handler's slot)."""
        return job.workflow_id is not None or bool(job.gate and job.gate.get("max_running"))

    def _release(self, conn, job_id: str) -> Job | None:
        row = conn.execute(self._q("SELECT args, step_input FROM jobs WHERE id = ?"), (job_id,)).fetchone()
        args, expression = json.loads(row[0]), loads(row[1])
        if expression is not None:          # not immutable: the input goes first
            results = {i: loads(r) for i, r in conn.execute(self._q(_INPUTS), (job_id,)).fetchall()}
            args = [evaluate(expression, results), *args]
        row = conn.execute(self._q(_RELEASE), (dumps(args), job_id)).fetchone()
        return None if row is None else row_to_job(row)

    def _announce(self, moved: StepsMoved) -> None:
        if moved and self.on_steps_moved is not None:
            self.on_steps_moved(moved)

    def _finish_step(self, job: Job, owner: str, args: tuple) -> bool:
        """``finish`` for a workflow step or a job whose end frees a slot of its handler (``_after_end``): the
        fenced move and what it moves, in one transaction."""
        def op(conn):
            if conn.execute(self._q(_FINISH_STEP), args + (job.id, owner, job.attempts)).rowcount != 1:
                return None
            return self._after_end(conn, job, args[0])
        moved = self._write_step(op, notify="ended,queued")
        if moved is None:
            return False
        self._announce(moved)
        return True

    def _sweep_edges(self, conn, finished_before: float) -> None:
        """Inside a sweep: the edges of workflows none of whose jobs are left (before their batch rows go)."""
        conn.execute(self._q("DELETE FROM job_deps WHERE workflow_id IN (SELECT id FROM batches WHERE created_at < ?"
                             " AND shape IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.batch_id = batches.id))"),
                     (finished_before,))

    def workflow_shape(self, workflow_id: str) -> dict | None:
        """The shape of a workflow (kind, result expression), or None if there is no such workflow."""
        row = self._db.read(lambda conn: conn.execute(self._q("SELECT shape FROM batches WHERE id = ?"),
                                                      (workflow_id,)).fetchone())
        return None if row is None or row[0] is None else json.loads(row[0])

    def workflow_jobs(self, workflow_id: str) -> list[Job]:
        """The workflow's steps in the order it lists them."""
        return self._db.read(lambda conn: [row_to_job(r) for r in conn.execute(
            self._q(f"SELECT {SELECT} FROM jobs WHERE batch_id = ? ORDER BY seq"), (workflow_id,)).fetchall()])

