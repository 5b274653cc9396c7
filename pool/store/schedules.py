"""The schedules table, one implementation for every SQL ledger (they differ only in paramstyle).

A row holds a schedule's definition (JSON) and its state: ``revision`` (+1 on every change and every
firing) and ``next_fire_at`` (the cursor).  Every write is a compare-and-swap on ``revision``, so a PATCH
and a firing, or two servers firing, cannot both apply; the jobs table's unique index on
(schedule_name, schedule_fire_at) is the second guard, in case a cursor were ever moved back.
"""
from __future__ import annotations

import time

from greenjobs.pool.schedules import Advance, Schedule
from greenjobs.pool.store.rows import dumps, loads

COLUMNS = ("name", "definition", "source", "paused", "revision", "next_fire_at", "last_fire_at", "last_job_id",
           "created_at", "updated_at")
SELECT = ", ".join(COLUMNS)
_DEFINITION = ("cron", "timezone", "every", "missed", "overlap", "jitter", "start_at", "end_at")


def schedule_row(s: Schedule) -> tuple:
    return (s.name, dumps(s.definition()), s.source, int(s.paused), s.revision, s.next_fire_at, s.last_fire_at,
            s.last_job_id, s.created_at, s.updated_at)


def row_to_schedule(row) -> Schedule:
    name, definition, source, paused, revision, next_fire_at, last_fire_at, last_job_id, created, updated = row
    data = loads(definition)
    timing = {k: data.pop(k) for k in _DEFINITION if k in data}
    return Schedule(name=name, job=data, **timing, paused=bool(paused), source=source, revision=revision,
                    next_fire_at=next_fire_at, last_fire_at=last_fire_at, last_job_id=last_job_id,
                    created_at=created, updated_at=updated)


ADVANCE = ("UPDATE schedules SET revision = revision + 1, next_fire_at = ?, last_fire_at = ?, last_job_id = ?"
           " WHERE name = ? AND revision = ?")


#: What an insert's op returns when its schedule's cursor move was refused (the store then raises ScheduleRaced).
RACED = object()


def advance_params(a: Advance) -> tuple:
    return (a.next_fire_at, a.last_fire_at, a.last_job_id, a.name, a.revision)


class ScheduleTable:
    """Mixed into an SQL store that has ``self._db.read(fn)`` / ``self._db.write(fn)``; ``_MARK`` is its paramstyle."""

    _MARK = "?"

    def _q(self, sql: str) -> str:
        return sql if self._MARK == "?" else sql.replace("?", self._MARK)

    def add_schedule(self, schedule: Schedule) -> bool:
        """Insert a new schedule; False (nothing written) if the name is taken."""
        sql = self._q(f"INSERT INTO schedules ({SELECT}) VALUES ({', '.join('?' * len(COLUMNS))})"
                      " ON CONFLICT (name) DO NOTHING")
        return self._db.write(lambda conn: conn.execute(sql, schedule_row(schedule)).rowcount == 1)

    def update_schedule(self, schedule: Schedule) -> bool:
        """Write ``schedule``'s definition, pause and cursor if the row is still at ``schedule.revision``
        (then ``schedule.revision`` is the new one); False if another change or a firing came first."""
        now = time.time()
        sql = self._q("UPDATE schedules SET definition = ?, source = ?, paused = ?, next_fire_at = ?,"
                      " revision = revision + 1, updated_at = ? WHERE name = ? AND revision = ?")
        params = (dumps(schedule.definition()), schedule.source, int(schedule.paused), schedule.next_fire_at, now,
                  schedule.name, schedule.revision)
        if not self._db.write(lambda conn: conn.execute(sql, params).rowcount == 1):
            return False
        schedule.revision += 1
        schedule.updated_at = now
        return True

    def advance_schedule(self, advance: Advance) -> bool:
        """Move a schedule's cursor without a job (its slots skipped); False if it is not at that revision."""
        sql = self._q(ADVANCE)
        return self._db.write(lambda conn: conn.execute(sql, advance_params(advance)).rowcount == 1)

    def get_schedule(self, name: str) -> Schedule | None:
        sql = self._q(f"SELECT {SELECT} FROM schedules WHERE name = ?")
        row = self._db.read(lambda conn: conn.execute(sql, (name,)).fetchone())
        return None if row is None else row_to_schedule(row)

    def list_schedules(self) -> list[Schedule]:
        return [row_to_schedule(r) for r in self._db.read(lambda conn: conn.execute(
            f"SELECT {SELECT} FROM schedules ORDER BY name").fetchall())]

    def delete_schedule(self, name: str) -> bool:
        sql = self._q("DELETE FROM schedules WHERE name = ?")
        return self._db.write(lambda conn: conn.execute(sql, (name,)).rowcount == 1)

    def schedules_due(self, before: float, limit: int = 100) -> list[Schedule]:
        """Schedules not paused whose next slot is at or before ``before``, soonest first."""
        sql = self._q(f"SELECT {SELECT} FROM schedules WHERE paused = 0 AND next_fire_at IS NOT NULL"
                      " AND next_fire_at <= ? ORDER BY next_fire_at LIMIT ?")
        return [row_to_schedule(r) for r in self._db.read(lambda conn: conn.execute(sql, (before, limit)).fetchall())]
