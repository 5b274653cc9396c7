"""Handlers for tests/e2e/test_postgres.py: ``greenjobs.handlers = … tests.e2e.pg_handlers``."""
from __future__ import annotations

from greenjobs import handler


@handler("pg.sleep", timeout=30.0)
def pg_sleep(url, seconds=1.0):
    """Hold a PostgreSQL query for ``seconds`` (pg_sleep) on a connection of its own: psycopg must wait
    on gevent's patched socket, leaving the hub free for every other greenlet meanwhile."""
    import psycopg
    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return {"slept": seconds}
