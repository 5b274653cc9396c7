"""Enqueue in your transaction, against a real server on the PostgreSQL ledger the application shares: a job
written in the app's transaction exists if and only if it commits - rolled back, there is none; committed, a
server runs it at once (woken by the commit's notification); a process killed between its insert and its
commit leaves neither the row nor the job.  Through psycopg 3, Django's connection and SQLAlchemy."""
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from greenjobs_client.transactional import enqueue
from tests.e2e.helpers import E2E_HANDLERS, QUICK_STOP, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def shared(make_server, postgres):
    """A server on a fresh PostgreSQL database, and that database's URL (the application's too)."""
    url = postgres.database_url("txn")
    srv = make_server(app={**QUICK_STOP, **E2E_HANDLERS, "greenjobs.store.url": url, "greenjobs.workers.cpu": 1})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
    return srv, url


def jobs_count(url) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM jobs").fetchone()[0]


def test_psycopg_a_rolled_back_job_never_exists_and_a_committed_one_runs_at_once(shared):
    srv, url = shared
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO orders (item) VALUES ('lost')")
        job_id = enqueue(conn, "echo", kwargs={"order": "lost"})
        conn.rollback()
    assert srv.get(f"/jobs/{job_id}").status_code == 404 and jobs_count(url) == 0
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO orders (item) VALUES ('kept')")
        job_id = enqueue(conn, "echo", kwargs={"order": "kept"})
        committed = time.monotonic()
    done = srv.wait(job_id, 30)
    assert done["state"] == "succeeded" and done["result"] == {"order": "kept"}, done
    assert done["timeout"] is not None, "the handler's default timeout applied"
    print(f"\n[txn] committed -> finished in {1000 * (time.monotonic() - committed):.0f} ms (woken by NOTIFY)")
    cpu = None
    with psycopg.connect(url) as conn:
        cpu = enqueue(conn, "cpu.pbkdf2", kwargs={"iterations": 1000}, kind="cpu")
    assert srv.wait(cpu, 30)["state"] == "succeeded"


def test_a_process_killed_between_insert_and_commit_leaves_nothing(shared):
    srv, url = shared
    script = ("import os, sys, time, psycopg\nfrom greenjobs_client.transactional import enqueue\n"
              "conn = psycopg.connect(sys.argv[1])\nconn.execute(\"INSERT INTO orders (item) VALUES ('half')\")\n"
              "print(enqueue(conn, 'echo', kwargs={'order': 'half'}), flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    job_id = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.5)
    assert len(job_id) == 32 and srv.get(f"/jobs/{job_id}").status_code == 404
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
    assert jobs_count(url) == 0


def test_django_and_sqlalchemy_enqueue_in_their_transactions(shared, tmp_path):
    srv, url = shared
    script = f"""
import django, sys
from django.conf import settings
from urllib.parse import urlsplit
parts = urlsplit({url!r})
settings.configure(DATABASES={{"default": {{"ENGINE": "django.db.backends.postgresql", "NAME": parts.path[1:],
                   "USER": parts.username, "HOST": parts.hostname, "PORT": parts.port or 5432}}}})
django.setup()
from django.db import connection, transaction
from greenjobs_client.transactional import enqueue
try:
    with transaction.atomic():
        enqueue(connection, "echo", kwargs={{"via": "django-rolled-back"}})
        raise RuntimeError("roll back")
except RuntimeError:
    pass
with transaction.atomic():
    print(enqueue(connection, "echo", kwargs={{"via": "django"}}))

from sqlalchemy import create_engine
from sqlalchemy.orm import Session
engine = create_engine({url.replace("postgresql://", "postgresql+psycopg://")!r})
with Session(engine) as session:
    enqueue(session, "echo", kwargs={{"via": "sqlalchemy-rolled-back"}})
    session.rollback()
with Session(engine) as session, session.begin():
    print(enqueue(session, "echo", kwargs={{"via": "sqlalchemy"}}))
"""
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert ran.returncode == 0, ran.stderr[-3000:]
    ids = ran.stdout.split()
    assert len(ids) == 2
    results = [srv.wait(i, 30)["result"] for i in ids]
    assert results == [{"via": "django"}, {"via": "sqlalchemy"}]
    wait_until(lambda: jobs_count(url) == 2, 10, message="only the committed two")
