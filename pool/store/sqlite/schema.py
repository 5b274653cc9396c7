"""The SQLite ledger's schema and its migrations, applied at open on the writer connection.

The schema version is SQLite's ``user_version``.  Version 1 is the first release's schema;
each later version is one entry of ``MIGRATIONS``.  A ledger made before versions were kept (0)
is brought to 1 by adding the columns that release lacked.
"""
from __future__ import annotations

import sqlite3

from greenjobs.pool.job import ACTIVE, TERMINAL

#: Every column of a job row as the store reads it (row_to_job takes them in this order).
COLUMNS = ("id", "handler", "kind", "state", "priority", "args", "kwargs", "timeout", "max_retries", "run_at",
           "attempts", "result", "error", "errors", "progress", "batch_id", "created_at", "started_at",
           "finished_at", "callback_url", "callback")
SELECT = ", ".join(COLUMNS)
#: The columns a new job is inserted with (the rest start NULL or at their default).
INSERTED = ("id", "handler", "kind", "state", "priority", "args", "kwargs", "timeout", "max_retries", "run_at",
            "attempts", "batch_id", "lease_owner", "lease_expires", "outbox", "created_at", "started_at",
            "callback_url")
INSERT = f"INSERT INTO jobs ({', '.join(INSERTED)}) VALUES ({', '.join('?' * len(INSERTED))})"


def states(names) -> str:
    """A SQL list of state names, from the job model's constants: ``('scheduled', 'queued')``."""
    return "(" + ", ".join(f"'{name}'" for name in names) + ")"


ACTIVE_SQL = states(ACTIVE)
TERMINAL_SQL = states(sorted(TERMINAL))

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

#: version -> the SQL that brings version-1 ledgers up to it, in order.  (None yet.)
MIGRATIONS: dict[int, str] = {}
CURRENT = max((1, *MIGRATIONS))


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the ledger to ``CURRENT``: create it, or apply each migration it lacks, in one transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > CURRENT:
        raise RuntimeError(f"the ledger {conn} is at schema version {version}; this greenjobs knows up to {CURRENT}")
    if version == CURRENT:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
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
