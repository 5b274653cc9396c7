"""Enqueue in your own transaction: with the PostgreSQL ledger in your application's database, a job is a row
written in the transaction that writes your data, so it exists if and only if that transaction commits (River's
and Oban's model; Celery cannot).  No HTTP, no server needs to be up: the servers hear of it at the commit.

    from greenjobs_client.transactional import enqueue

    with psycopg.connect(DSN) as conn:                  # psycopg 3
        conn.execute("INSERT INTO orders ...")
        enqueue(conn, "shop.confirm", kwargs={"order": 42})

    with transaction.atomic():                           # Django (its connection, on the ledger's database)
        order = Order.objects.create(...)
        enqueue(django.db.connection, "shop.confirm", kwargs={"order": order.pk})

    with Session.begin() as session:                     # SQLAlchemy (a Session or a Connection)
        session.add(order); session.flush()
        enqueue(session, "shop.confirm", kwargs={"order": order.id})

The job is validated only for its shape here (the servers' handler registry is not in your process): an
unknown handler or arguments that do not fit end the job ``failed`` when a server takes it, with the reason.
Pass ``kind="cpu"`` for a cpu handler.  ``schema`` names the ledger's schema if it is not first on the
connection's ``search_path``.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterable, Mapping

#: The servers' LISTEN/NOTIFY channel (greenjobs.pool.store.postgres.store.CHANNEL); delivered at the commit.
CHANNEL = "greenjobs"


def enqueue(connection: Any, handler: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
            kind: str = "io", priority: int = 0, timeout: float | None = None, max_retries: int = 0,
            delay: float | None = None, schema: str | None = None) -> str:
    """Insert a job in ``connection``'s current transaction; returns its id.  ``connection``: a psycopg 3
    connection or cursor, a Django ``connection``, or an SQLAlchemy ``Session`` / ``Connection``."""
    from greenjobs.pool.job import QUEUED, SCHEDULED, Job, new_id
    from greenjobs.pool.store.rows import INSERTED, insert_row
    if not isinstance(handler, str) or not handler or handler.startswith("greenjobs."):
        raise ValueError("handler must be the name of one of the servers' handlers")
    if kind not in ("io", "cpu"):
        raise ValueError("kind must be 'io' or 'cpu' (the handler's kind)")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ValueError("priority must be an integer from 0 to 9")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError("timeout must be a positive number of seconds (or None: the handler's default)")
    args, kwargs = list(args), dict(kwargs or {})
    json.dumps([args, kwargs], allow_nan=False)              # JSON only, as over HTTP (TypeError/ValueError)
    run_at = time.time() + delay if delay else None
    job = Job(id=new_id(), handler=handler, kind=kind, state=SCHEDULED if run_at else QUEUED, args=args,
              kwargs=kwargs, priority=priority, timeout=None if timeout is None else float(timeout),
              max_retries=int(max_retries), run_at=run_at)
    table = f'"{schema}".jobs' if schema else "jobs"
    sql = f"INSERT INTO {table} ({', '.join(INSERTED)}) VALUES ({', '.join(['%s'] * len(INSERTED))})"
    _execute(connection, sql, insert_row(job, "", 0.0))
    _execute(connection, "SELECT pg_notify(%s, %s)", (CHANNEL, "queued"))
    return job.id


def _execute(target: Any, sql: str, params: tuple) -> None:
    if hasattr(target, "exec_driver_sql"):               # SQLAlchemy Connection
        target.exec_driver_sql(sql, params)
    elif hasattr(target, "get_bind") and hasattr(target, "connection"):     # SQLAlchemy Session
        target.connection().exec_driver_sql(sql, params)
    elif hasattr(target, "cursor"):                        # psycopg connection, Django connection
        cursor = target.cursor()
        try:
            cursor.execute(sql, params)
        finally:
            cursor.close()
    else:                                                  # a DB-API cursor
        target.execute(sql, params)
