"""The SQLite ledger's schema and its migrations, applied at open on the writer connection.

The schema version is SQLite's ``user_version``.  Version 1 is the first release's schema;
each later version is one entry of ``MIGRATIONS``.  A ledger made before versions were kept (0)
is brought to 1 by adding the columns that release lacked.
"""
from __future__ import annotations

import sqlite3

from greenjobs.pool.errors import StoreUnavailable
from greenjobs.pool.store.rows import ACTIVE_SQL, INSERTED, TERMINAL_SQL

INSERT = f"INSERT INTO jobs ({', '.join(INSERTED)}) VALUES ({', '.join('?' * len(INSERTED))})"


VERSION_1 = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    handler TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    args TEXT NOT NULL,
    kwargs TEXT NOT NULL,
    timeout REAL,
    max_retries INTEGER NOT NULL DEFAULT 0,
    run_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    errors TEXT,
    progress TEXT,
    batch_id TEXT,
    lease_owner TEXT,
    lease_expires REAL,
    outbox INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    callback_url TEXT,
    callback TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_handler ON jobs(handler, seq);
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs(batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(run_at) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS jobs_outbox ON jobs(seq) WHERE outbox = 1;
DROP INDEX IF EXISTS jobs_active;
CREATE INDEX IF NOT EXISTS jobs_callback_due ON jobs(seq) WHERE callback_url IS NOT NULL AND callback IS NULL;
CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, total INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, job_id TEXT NOT NULL,
                                        created_at REAL NOT NULL);
"""

#: Columns added before versions were kept: a version-0 ledger gets those it lacks.
_UNVERSIONED_ADDITIONS = (("callback_url", "TEXT"), ("callback", "TEXT"))

#: version -> the SQL that brings the previous version up to it, in order.
MIGRATIONS: dict[int, str] = {
    # the TTL sweep goes by when jobs finished, oldest first, whatever their sequence
    2: f"CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished_at) WHERE state IN {TERMINAL_SQL}",
    # servers take queued jobs nobody holds, best first, without sorting the whole backlog
    3: "CREATE INDEX IF NOT EXISTS jobs_free ON jobs(kind, priority DESC, seq) WHERE state = 'queued'"
       " AND lease_owner IS NULL",
    # the cluster: every runtime's heartbeat and load, for /health, /servers and /metrics
    4: "CREATE TABLE IF NOT EXISTS servers (owner TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,"
       " role TEXT NOT NULL, version TEXT NOT NULL, started_at REAL NOT NULL, heartbeat_at REAL NOT NULL,"
       " pool_size INTEGER NOT NULL, pool_busy INTEGER NOT NULL, cpu_workers INTEGER NOT NULL,"
       " streams INTEGER NOT NULL DEFAULT 0)",
    # every server's lifecycle events in one order, for GET /events on any of them (AUTOINCREMENT: a
    # sequence number is never reused after a prune, so a client's Last-Event-ID keeps its meaning)
    5: "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,"
       " body TEXT NOT NULL)",
    # schedules, and the jobs their slots made: one job per (schedule, slot), whichever servers fire it
    6: "ALTER TABLE jobs ADD COLUMN schedule_name TEXT; ALTER TABLE jobs ADD COLUMN schedule_fire_at REAL;"
       " CREATE UNIQUE INDEX IF NOT EXISTS jobs_schedule_slot ON jobs(schedule_name, schedule_fire_at)"
       " WHERE schedule_fire_at IS NOT NULL;"
       " CREATE INDEX IF NOT EXISTS jobs_schedule ON jobs(schedule_name, seq) WHERE schedule_name IS NOT NULL;"
       " CREATE TABLE IF NOT EXISTS schedules (name TEXT PRIMARY KEY, definition TEXT NOT NULL, source TEXT NOT NULL,"
       " paused INTEGER NOT NULL DEFAULT 0, revision INTEGER NOT NULL DEFAULT 0, next_fire_at REAL, last_fire_at REAL,"
       " last_job_id TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL);"
       " CREATE INDEX IF NOT EXISTS schedules_due ON schedules(next_fire_at) WHERE paused = 0",
    # workflows: a batch with a shape, steps that wait for deps_left dependencies, an edge per dependency
    7: "ALTER TABLE jobs ADD COLUMN workflow_id TEXT; ALTER TABLE jobs ADD COLUMN deps_left INTEGER;"
       " ALTER TABLE jobs ADD COLUMN step_input TEXT; ALTER TABLE batches ADD COLUMN shape TEXT;"
       " CREATE TABLE IF NOT EXISTS job_deps (workflow_id TEXT NOT NULL, job_id TEXT NOT NULL,"
       " dependent_id TEXT NOT NULL);"
       " CREATE INDEX IF NOT EXISTS job_deps_job ON job_deps(job_id);"
       " CREATE INDEX IF NOT EXISTS job_deps_dependent ON job_deps(dependent_id);"
       " CREATE INDEX IF NOT EXISTS job_deps_workflow ON job_deps(workflow_id)",
    # flow control (greenjobs.pool.store.flow): expiry, one active job per unique_key, gated jobs and the
    # rate buckets and concurrency locks they share
    8: "ALTER TABLE jobs ADD COLUMN expires_at REAL; ALTER TABLE jobs ADD COLUMN unique_key TEXT;"
       " ALTER TABLE jobs ADD COLUMN gate TEXT; ALTER TABLE jobs ADD COLUMN waiting TEXT;"
       f" CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique ON jobs(unique_key) WHERE unique_key IS NOT NULL"
       f" AND state IN {ACTIVE_SQL};"
       " CREATE INDEX IF NOT EXISTS jobs_expiring ON jobs(expires_at) WHERE expires_at IS NOT NULL"
       " AND state IN ('scheduled', 'queued');"
       " CREATE INDEX IF NOT EXISTS jobs_gated_free ON jobs(kind, priority DESC, seq) WHERE state = 'queued'"
       " AND lease_owner IS NULL AND gate IS NOT NULL;"
       " CREATE INDEX IF NOT EXISTS jobs_gated_running ON jobs(handler) WHERE state = 'running' AND gate IS NOT NULL;"
       " CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs(waiting, handler, priority DESC, seq) WHERE waiting IS NOT NULL;"
       " CREATE TABLE IF NOT EXISTS flow (key TEXT PRIMARY KEY, next_at REAL NOT NULL DEFAULT 0)",
    # the hub guard: how a job blocked the event loop, and whether its io handler was rerouted to the workers
    9: "ALTER TABLE jobs ADD COLUMN blocked TEXT; ALTER TABLE jobs ADD COLUMN rerouted INTEGER NOT NULL DEFAULT 0",
    # a rate bucket's last actual start: no two starts closer than its interval, however late one came
    10: "ALTER TABLE flow ADD COLUMN last_start REAL NOT NULL DEFAULT 0",
    # which server or cpu worker ran a job's last ended attempt (its lease owner, kept when the lease ends)
    11: "ALTER TABLE jobs ADD COLUMN ran_by TEXT",
    # a server's throughput and cpu workers in its heartbeat, and an admin's request to resize or restart those
    12: "ALTER TABLE servers ADD COLUMN stats TEXT; ALTER TABLE servers ADD COLUMN control TEXT",
}
CURRENT = max((1, *MIGRATIONS))


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the ledger to ``CURRENT``: create it, or apply each migration it lacks, in one transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > CURRENT:
        raise StoreUnavailable(f"the ledger is at schema version {version}, made by a newer greenjobs (this one knows up"
                               f" to {CURRENT}): run that version, or restore a copy of the ledger from before it")
    if version == CURRENT:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # read again under the write lock: another process of this ledger (a second gunicorn worker starting at the
        # same moment) may have migrated it while we waited, and its ALTERs must not run twice
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == CURRENT:
            conn.execute("COMMIT")
            return
        if version == 0:
            have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
            if have:                              # a ledger from before versions were kept
                for name, sqltype in _UNVERSIONED_ADDITIONS:
                    if name not in have:
                        conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {sqltype}")
            for statement in VERSION_1.split(";"):
                if statement.strip():
                    conn.execute(statement)
            version = 1
        for target in sorted(v for v in MIGRATIONS if v > version):
            for statement in MIGRATIONS[target].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {CURRENT}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
