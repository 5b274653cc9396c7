"""The PostgreSQL ledger's schema and its migrations, applied at open under an advisory lock.

Versions live in ``greenjobs_schema``.  Every server runs ``migrate`` at start; the first to take
the transaction-level advisory lock applies what is missing and the others, waiting on the lock,
find nothing left to do, so several servers may start at once.  ``greenjobs-admin schema`` prints
the same SQL for DBAs who apply schema changes themselves.

The tables are unqualified: they live in the first schema of the connection's ``search_path``
(``?options=-csearch_path%3Dmyschema`` in the URL picks another).
"""
from __future__ import annotations

from greenjobs.pool.errors import StoreUnavailable
from greenjobs.pool.store.rows import ACTIVE_SQL, TERMINAL_SQL

#: pg_advisory_xact_lock key: "greenjob" as a 64-bit integer.
LOCK = int.from_bytes(b"greenjob", "big") & 0x7FFF_FFFF_FFFF_FFFF

VERSION_1 = f"""
CREATE TABLE IF NOT EXISTS jobs (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    handler text NOT NULL,
    kind text NOT NULL,
    state text NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    args text NOT NULL,
    kwargs text NOT NULL,
    timeout double precision,
    max_retries integer NOT NULL DEFAULT 0,
    run_at double precision,
    attempts integer NOT NULL DEFAULT 0,
    result text,
    error text,
    errors text,
    progress text,
    batch_id text,
    lease_owner text,
    lease_expires double precision,
    outbox smallint NOT NULL DEFAULT 0,
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    callback_url text,
    callback text
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02,
        autovacuum_vacuum_cost_delay = 1);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_handler ON jobs (handler, seq);
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (kind, priority DESC, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_outbox ON jobs (seq) WHERE outbox = 1;
CREATE INDEX IF NOT EXISTS jobs_callback_due ON jobs (seq) WHERE callback_url IS NOT NULL AND callback IS NULL;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE state IN {TERMINAL_SQL};
CREATE TABLE IF NOT EXISTS batches (id text PRIMARY KEY, total integer NOT NULL, created_at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS batches_created ON batches (created_at);
CREATE TABLE IF NOT EXISTS idempotency (key text PRIMARY KEY, fingerprint text NOT NULL, job_id text NOT NULL,
                                        created_at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created_at);
"""

#: version -> the SQL that brings the previous version to it, in order.
MIGRATIONS: dict[int, str] = {
    1: VERSION_1,
    # servers take queued jobs nobody holds, best first, without sorting the whole backlog
    2: "CREATE INDEX IF NOT EXISTS jobs_free ON jobs (kind, priority DESC, seq) WHERE state = 'queued'"
       " AND lease_owner IS NULL;",
    # the cluster: every runtime's heartbeat and load, for /health, /servers and /metrics
    3: "CREATE TABLE IF NOT EXISTS servers (owner text PRIMARY KEY, host text NOT NULL, pid integer NOT NULL,"
       " role text NOT NULL, version text NOT NULL, started_at double precision NOT NULL,"
       " heartbeat_at double precision NOT NULL, pool_size integer NOT NULL, pool_busy integer NOT NULL,"
       " cpu_workers integer NOT NULL, streams integer NOT NULL DEFAULT 0);",
    # every server's lifecycle events in one order, for GET /events on any of them
    4: "CREATE TABLE IF NOT EXISTS events (seq bigserial PRIMARY KEY, at double precision NOT NULL,"
       " body text NOT NULL);",
    # schedules, and the jobs their slots made: one job per (schedule, slot), whichever servers fire it
    5: "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS schedule_name text,"
       " ADD COLUMN IF NOT EXISTS schedule_fire_at double precision;"
       " CREATE UNIQUE INDEX IF NOT EXISTS jobs_schedule_slot ON jobs (schedule_name, schedule_fire_at)"
       " WHERE schedule_fire_at IS NOT NULL;"
       " CREATE INDEX IF NOT EXISTS jobs_schedule ON jobs (schedule_name, seq) WHERE schedule_name IS NOT NULL;"
       " CREATE TABLE IF NOT EXISTS schedules (name text PRIMARY KEY, definition text NOT NULL, source text NOT NULL,"
       " paused integer NOT NULL DEFAULT 0, revision integer NOT NULL DEFAULT 0, next_fire_at double precision,"
       " last_fire_at double precision, last_job_id text, created_at double precision NOT NULL,"
       " updated_at double precision NOT NULL);"
       " CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_fire_at) WHERE paused = 0;",
    # workflows: a batch with a shape, steps that wait for deps_left dependencies, an edge per dependency
    6: "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS workflow_id text, ADD COLUMN IF NOT EXISTS deps_left integer,"
       " ADD COLUMN IF NOT EXISTS step_input text;"
       " ALTER TABLE batches ADD COLUMN IF NOT EXISTS shape text;"
       " CREATE TABLE IF NOT EXISTS job_deps (workflow_id text NOT NULL, job_id text NOT NULL,"
       " dependent_id text NOT NULL);"
       " CREATE INDEX IF NOT EXISTS job_deps_job ON job_deps (job_id);"
       " CREATE INDEX IF NOT EXISTS job_deps_dependent ON job_deps (dependent_id);"
       " CREATE INDEX IF NOT EXISTS job_deps_workflow ON job_deps (workflow_id);",
    # flow control (greenjobs.pool.store.flow): expiry, one active job per unique_key, gated jobs and the
    # rate buckets and concurrency locks they share
    7: "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS expires_at double precision,"
       " ADD COLUMN IF NOT EXISTS unique_key text, ADD COLUMN IF NOT EXISTS gate text,"
       " ADD COLUMN IF NOT EXISTS waiting text;"
       " CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique ON jobs (unique_key) WHERE unique_key IS NOT NULL"
       f" AND state IN {ACTIVE_SQL};"
       " CREATE INDEX IF NOT EXISTS jobs_expiring ON jobs (expires_at) WHERE expires_at IS NOT NULL"
       " AND state IN ('scheduled', 'queued');"
       " CREATE INDEX IF NOT EXISTS jobs_gated_free ON jobs (kind, priority DESC, seq) WHERE state = 'queued'"
       " AND lease_owner IS NULL AND gate IS NOT NULL;"
       " CREATE INDEX IF NOT EXISTS jobs_gated_running ON jobs (handler) WHERE state = 'running' AND gate IS NOT NULL;"
       " CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (waiting, handler, priority DESC, seq)"
       " WHERE waiting IS NOT NULL;"
       " CREATE TABLE IF NOT EXISTS flow (key text PRIMARY KEY, next_at double precision NOT NULL DEFAULT 0);",
    # the hub guard: how a job blocked the event loop, and whether its io handler was rerouted to the workers
    8: "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS blocked text,"
       " ADD COLUMN IF NOT EXISTS rerouted integer NOT NULL DEFAULT 0;",
    # a rate bucket's last actual start: no two starts closer than its interval, however late one came
    9: "ALTER TABLE flow ADD COLUMN IF NOT EXISTS last_start double precision NOT NULL DEFAULT 0;",
    # which server or cpu worker ran a job's last ended attempt (its lease owner, kept when the lease ends)
    10: "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS ran_by text;",
    # a server's throughput and cpu workers in its heartbeat, and an admin's request to resize or restart those
    11: "ALTER TABLE servers ADD COLUMN IF NOT EXISTS stats text, ADD COLUMN IF NOT EXISTS control text;",
}
CURRENT = max(MIGRATIONS)


def script(from_version: int = 0) -> str:
    """The SQL that brings a ledger at ``from_version`` to ``CURRENT``, as one transaction (for DBAs)."""
    steps = [f"-- greenjobs schema version {v}\n{MIGRATIONS[v].strip()}" for v in sorted(MIGRATIONS) if v > from_version]
    return ("BEGIN;\nSELECT pg_advisory_xact_lock(%d);\n" % LOCK
            + "CREATE TABLE IF NOT EXISTS greenjobs_schema (version integer NOT NULL);\n"
            + "\n".join(steps)
            + f"\nDELETE FROM greenjobs_schema;\nINSERT INTO greenjobs_schema (version) VALUES ({CURRENT});\nCOMMIT;\n")


def migrate(conn) -> None:
    """Bring the ledger to ``CURRENT`` in one transaction, under the advisory lock (``conn``: psycopg, not
    in a transaction).  Refuses a ledger made by a newer greenjobs."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS greenjobs_schema (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM greenjobs_schema").fetchone()
        version = row[0] or 0
        if version > CURRENT:
            raise StoreUnavailable(f"the ledger is at schema version {version}, made by a newer greenjobs (this one knows"
                                   f" up to {CURRENT}): run that version, or restore the database from before it")
        for target in sorted(v for v in MIGRATIONS if v > version):
            conn.execute(MIGRATIONS[target])
        if version != CURRENT:
            conn.execute("DELETE FROM greenjobs_schema")
            conn.execute("INSERT INTO greenjobs_schema (version) VALUES (%s)", (CURRENT,))
