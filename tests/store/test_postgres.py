"""What only the PostgreSQL ledger promises: migrations safe when servers start at once, the schema
SQL for DBAs, and no password in anything it shows."""
import subprocess
import sys

import psycopg
import pytest

from greenjobs.pool.errors import StoreUnavailable
from greenjobs.pool.store import open_store
from greenjobs.pool.store.postgres import schema


@pytest.fixture
def url(postgres):
    return postgres.database_url("only")


def version_of(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version FROM greenjobs_schema").fetchone()[0]


OPEN_ONE = """
import sys, time
from greenjobs.pool.store import open_store
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
open_store(sys.argv[1]).close()
"""


def test_eight_servers_opening_a_new_ledger_at_once_migrate_it_once(url):
    """Eight processes (as eight servers would) open one new ledger at the same instant."""
    import time
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_ONE, url, str(start)], stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    failures = [p.stderr.read() for p in procs if p.wait(60) != 0]
    assert not failures, failures
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM greenjobs_schema").fetchone()[0] == 1
    assert version_of(url) == schema.CURRENT


def test_the_admin_schema_sql_makes_a_ledger_a_server_accepts_as_is(url):
    sql = subprocess.run([sys.executable, "-m", "greenjobs.pool.store.admin", "schema"], check=True,
                         capture_output=True, text=True).stdout
    assert "pg_advisory_xact_lock" in sql and "CREATE TABLE IF NOT EXISTS jobs" in sql
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)
    assert version_of(url) == schema.CURRENT
    store = open_store(url)
    try:
        assert store.list()[0] == []
    finally:
        store.close()


def test_a_newer_ledger_is_refused(url):
    store = open_store(url)
    store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE greenjobs_schema SET version = %s", (schema.CURRENT + 1,))
    with pytest.raises(StoreUnavailable, match="schema version .*newer greenjobs"):       # as SQLite refuses one
        open_store(url)


def test_no_password_in_where_or_in_errors():
    url = "postgresql://greenjobs:s3cret-pw@127.0.0.1:1/nowhere"
    from greenjobs.pool.store import store_for
    store = store_for(url)
    assert "s3cret-pw" not in store.where
    with pytest.raises(StoreUnavailable) as caught:
        store.open()
    assert "s3cret-pw" not in str(caught.value)


def test_a_bad_store_url_setting_never_echoes_its_password(tmp_path):
    from greenjobs.pool.errors import ConfigurationError
    from greenjobs.server.settings import load
    with pytest.raises(ConfigurationError) as caught:
        load({"greenjobs.store.url": "mysql://root:hunter2@db/x"}, str(tmp_path))
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


def test_a_group_of_outcomes_larger_than_one_json_statement_is_split(url, monkeypatch):
    """jsonb refuses arrays past 256 MB (256 outcomes of 1 MB results): a group commit's rows go in statements of
    at most MAX_JSON_BYTES, every row still judged on its own."""
    import gevent

    from greenjobs.pool.job import QUEUED, SUCCEEDED, Job, new_id
    from greenjobs.pool.store.postgres import committer
    monkeypatch.setattr(committer, "MAX_JSON_BYTES", 50_000)
    store = open_store(url)
    try:
        jobs = [Job(id=new_id(), handler="echo", kind="io", state=QUEUED) for _ in range(40)]
        store.insert(jobs, "me")
        assert all(p.get() for p in [store.claim(j, "me") for j in jobs])
        big = '"' + "x" * 10_000 + '"'
        done = [gevent.spawn(store.finish, j, "me", SUCCEEDED, big, None) for j in jobs]
        done.append(gevent.spawn(store.finish, jobs[0], "me", SUCCEEDED, big, None))   # a repeat: refused
        gevent.joinall(done, raise_error=True)
        assert [g.value for g in done] == [True] * 40 + [False]
        assert {store.get(j.id).result == "x" * 10_000 for j in jobs} == {True}
    finally:
        store.close()
