"""The Django outbox (greenjobs_client.django.outbox) against a real server that is down, then up.

Each step is a real Django process (tests/client/django_project, settings gjsite.outbox_settings) on a
database of its own, SQLite file or PostgreSQL (skipped without one): the rows are written in the
process's transactions and sent by a real relay (its class, its thread, or ``manage.py greenjobs_relay``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from greenjobs_client import Client
from tests.e2e.helpers import QUICK_STOP, wait_until
from tests.support import ROOT

pytestmark = pytest.mark.e2e

PROJECT = Path(__file__).with_name("django_project")
APP = {**QUICK_STOP, "greenjobs.workers.cpu": 0, "greenjobs.store.synchronous": "normal"}

PRELUDE = """
import json, os, signal, sys, threading, time
import django
django.setup()
from django.db import connection, transaction
from django.utils import timezone
from greenjobs_client.django.models import OutboxJob
from greenjobs_client.django.outbox import Relay, enqueue, start_relay

def out(value):
    print("RESULT " + json.dumps(value), flush=True)

def rows(**filters):
    return [{"id": r.id, "handler": r.handler, "kwargs": r.kwargs, "state": r.state, "attempts": r.attempts,
             "job_id": r.job_id, "last_error": r.last_error, "key": r.idempotency_key,
             "due_in": (r.next_try_at - timezone.now()).total_seconds()}
            for r in OutboxJob.objects.filter(**filters).order_by("id")]
"""


class Site:
    """The Django project on one database, pointed at one greenjobs URL."""

    def __init__(self, db: str):
        self.db = db
        self.url = "http://127.0.0.1:9"

    def env(self) -> dict:
        return dict(os.environ, DJANGO_SETTINGS_MODULE="gjsite.outbox_settings", OUTBOX_DB=self.db,
                    GREENJOBS_URL=self.url, PYTHONUNBUFFERED="1",
                    PYTHONPATH=os.pathsep.join([str(PROJECT), str(ROOT)]))

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def run(self, code: str, timeout: float = 180, expect: int = 0):
        """Run ``code`` after django.setup(); returns (what it passed to out() first, its stderr), and keeps
        what it passed last in ``last``."""
        done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=PROJECT,
                              env=self.env(), capture_output=True, text=True, timeout=timeout)
        assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        results = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        self.last = results[-1] if results else None
        return (results[0] if results else None), done.stderr


@pytest.fixture(params=["sqlite", "postgres"])
def site(request, tmp_path):
    if request.param == "sqlite":
        project = Site(str(tmp_path / "app.sqlite3"))
    else:
        project = Site(request.getfixturevalue("postgres").database_url("outbox"))
    migrated = project.manage("migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    return project


def server_jobs(url: str, marker: str) -> list[dict]:
    with Client(url, timeout=30) as client:
        return [job for job in client.jobs(handler="echo", page_size=500) if job["kwargs"].get("marker") == marker]


def test_a_committed_job_waits_out_a_server_that_is_down_then_is_sent_once_and_runs(site, make_server):
    srv = make_server(app=APP, start=False)         # its port is reserved and nothing listens on it yet
    site.url = srv.url
    marker = uuid.uuid4().hex
    down, stderr = site.run(f"""
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE notes (ref varchar(20))")
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO notes VALUES ('kept')")
            kept = enqueue("echo", kwargs={{"order": "kept", "marker": {marker!r}}})
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("INSERT INTO notes VALUES ('dropped')")
                enqueue("echo", kwargs={{"order": "dropped", "marker": {marker!r}}})
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        with connection.cursor() as cursor:
            cursor.execute("SELECT ref FROM notes")
            notes = [ref for (ref,) in cursor.fetchall()]
        sent = Relay().run_once()
        out({{"notes": notes, "sent": sent, "rows": rows(), "key": kept.idempotency_key}})
    """)
    assert down["notes"] == ["kept"]
    assert down["sent"] == 0
    [row] = down["rows"]                              # the rolled-back one left no row
    assert row["kwargs"] == {"order": "kept", "marker": marker} and row["state"] == "pending"
    assert row["attempts"] == 1 and 0 < row["due_in"] <= 1.5, row
    assert "cannot connect" in row["last_error"] and srv.url in row["last_error"], row
    assert row["key"] == down["key"] and row["key"].startswith("outbox-")
    assert "not sent, next try in" in stderr          # the relay logged the failure as a warning

    srv.start()
    assert server_jobs(srv.url, marker) == []         # nothing reached the server while it was down
    time.sleep(max(0.0, row["due_in"]) + 0.1)         # the backoff: not before next_try_at
    relayed = site.manage("greenjobs_relay", "--once")
    assert relayed.returncode == 0, relayed.stdout + relayed.stderr
    assert "sent 1; pending 0, rejected 0" in relayed.stdout, relayed.stdout

    [row], _ = site.run("out(rows())")
    assert row["state"] == "sent" and row["attempts"] == 2 and len(row["job_id"]) == 32, row
    done = srv.wait(row["job_id"], 30)
    assert done["state"] == "succeeded" and done["result"] == {"order": "kept", "marker": marker}, done
    assert [job["id"] for job in server_jobs(srv.url, marker)] == [row["job_id"]]


def test_a_relay_killed_between_the_send_and_the_mark_sends_again_and_gets_the_same_jobs(site, make_server):
    srv = make_server(app=APP)
    site.url = srv.url
    marker = uuid.uuid4().hex
    # the relay process dies (SIGKILL) right after the server answered, before it marks a single row
    _, stderr = site.run(f"""
        for n in range(3):
            enqueue("echo", kwargs={{"n": n, "marker": {marker!r}}})
        Relay._record = lambda self, rows, outcomes: os.kill(os.getpid(), signal.SIGKILL)
        Relay().run_once()
    """, expect=-signal.SIGKILL)
    stored = server_jobs(srv.url, marker)
    assert len(stored) == 3                           # the batch reached the server ...
    unmarked, _ = site.run("out(rows())")
    assert [r["state"] for r in unmarked] == ["pending"] * 3 and not any(r["job_id"] for r in unmarked)

    again, _ = site.run("out({'sent': Relay().run_once(), 'rows': rows()})")
    assert again["sent"] == 3                         # ... and is sent again: the same three jobs
    assert [r["state"] for r in again["rows"]] == ["sent"] * 3
    assert {r["job_id"] for r in again["rows"]} == {job["id"] for job in stored}
    assert len(server_jobs(srv.url, marker)) == 3

    # the same after a lost mark of one row, which goes alone (POST /jobs, not a batch)
    first = again["rows"][0]
    once_more, _ = site.run(f"""
        OutboxJob.objects.filter(pk={first['id']}).update(sent_at=None, job_id="")
        out({{"sent": Relay().run_once(), "rows": rows(pk={first['id']})}})
    """)
    assert once_more["sent"] == 1 and once_more["rows"][0]["job_id"] == first["job_id"]
    jobs = server_jobs(srv.url, marker)
    assert len(jobs) == 3 and all(srv.wait(job["id"], 30)["state"] == "succeeded" for job in jobs)


def test_a_job_the_server_refuses_is_rejected_for_good_and_does_not_hold_up_the_others(site, make_server):
    srv = make_server(app=APP)
    site.url = srv.url
    marker = uuid.uuid4().hex
    first, stderr = site.run(f"""
        enqueue("echo", kwargs={{"n": 1, "marker": {marker!r}}})
        enqueue("no.such.handler", kwargs={{"marker": {marker!r}}})
        enqueue("echo", args=[1, 2], kwargs={{"marker": {marker!r}}})      # echo takes keyword arguments only
        enqueue("echo", kwargs={{"n": 2, "marker": {marker!r}}})
        out({{"sent": Relay().run_once(), "rows": rows()}})
    """)
    assert first["sent"] == 2
    good1, unknown, bad_args, good2 = first["rows"]
    assert good1["state"] == good2["state"] == "sent"
    assert unknown["state"] == bad_args["state"] == "rejected"
    assert "422" in unknown["last_error"] and "unknown handler 'no.such.handler'" in unknown["last_error"]
    assert "422" in bad_args["last_error"] and "do not fit the handler 'echo'" in bad_args["last_error"]
    assert stderr.count("was rejected and will not be sent") == 2, stderr
    assert sorted(job["kwargs"]["n"] for job in server_jobs(srv.url, marker)) == [1, 2]

    # never sent again; a bad row alone (no batch) is rejected the same way; a job whose expires passed before
    # it could be sent is rejected without being sent; a delay counts from the enqueue, not from the send
    second, _ = site.run(f"""
        enqueue("no.such.handler", kwargs={{"marker": {marker!r}}})
        out({{"sent": Relay().run_once(), "again": Relay().run_once(), "rows": rows()}})
        enqueue("echo", kwargs={{"n": 3, "marker": {marker!r}}}, expires=0.5)
        delayed = enqueue("echo", kwargs={{"n": 4, "marker": {marker!r}}}, delay=3600)
        time.sleep(1)
        out({{"sent": Relay().run_once(), "rows": rows(), "run_at": delayed.options["run_at"]}})
    """)
    assert second["sent"] == 0 and second["again"] == 0
    assert [r["state"] for r in second["rows"]] == ["sent", "rejected", "rejected", "sent", "rejected"]
    assert [r["attempts"] for r in second["rows"][:4]] == [1, 1, 1, 1]
    third = site.last
    assert third["sent"] == 1
    *_, expired, delayed = third["rows"]
    assert expired["state"] == "rejected" and "before it could be sent" in expired["last_error"], expired
    job = srv.get(f"/jobs/{delayed['job_id']}").json()
    assert job["state"] == "scheduled"
    assert abs(datetime.fromisoformat(job["run_at"].replace("Z", "+00:00")).timestamp()
               - datetime.fromisoformat(third["run_at"]).timestamp()) < 0.01, (job["run_at"], third["run_at"])
    assert sorted(job["kwargs"]["n"] for job in server_jobs(srv.url, marker)) == [1, 2, 4]


def test_five_hundred_jobs_from_ten_threads_arrive_exactly_once(site, make_server):
    srv = make_server(app=APP)
    site.url = srv.url
    marker = uuid.uuid4().hex
    relays = 2 if site.db.startswith("postgresql://") else 1   # SKIP LOCKED shares the rows; SQLite has one relay
    result, _ = site.run(f"""
        from django.db import connections
        relays = [start_relay(interval=0.2) for _ in range({relays})]
        errors = []

        def writer(t):
            try:
                for i in range(50):
                    with transaction.atomic():
                        enqueue("echo", kwargs={{"n": t * 50 + i, "marker": {marker!r}}})
                    if i % 10 == 0:                       # and one rolled back now and then: never sent
                        try:
                            with transaction.atomic():
                                enqueue("echo", kwargs={{"n": -1, "marker": {marker!r}}})
                                raise RuntimeError
                        except RuntimeError:
                            pass
            except Exception as exc:
                errors.append(repr(exc))
            finally:
                connections.close_all()

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 120
        while OutboxJob.objects.filter(sent_at__isnull=True).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        for relay in relays:
            relay.stop()
        out({{"errors": errors, "rows": [(r.kwargs["n"], r.state, r.job_id) for r in OutboxJob.objects.all()],
              "alive": [relay.thread.is_alive() for relay in relays]}})
    """, timeout=300)
    assert result["errors"] == [] and result["alive"] == [False] * relays
    assert sorted(n for n, _, _ in result["rows"]) == list(range(500))
    assert {state for _, state, _ in result["rows"]} == {"sent"}
    jobs = server_jobs(srv.url, marker)
    assert len(jobs) == 500
    assert sorted(job["kwargs"]["n"] for job in jobs) == list(range(500))
    assert {job["id"] for job in jobs} == {job_id for _, _, job_id in result["rows"]}


def test_the_commit_wakes_the_relay_thread_so_the_job_is_sent_at_once(site, make_server):
    srv = make_server(app=APP)
    site.url = srv.url
    marker = uuid.uuid4().hex
    result, _ = site.run(f"""
        relay = start_relay(interval=3600)       # it would not poll again within the test: only a nudge wakes it
        time.sleep(0.5)
        with transaction.atomic():
            row = enqueue("echo", kwargs={{"marker": {marker!r}}})
            time.sleep(0.5)
            in_transaction = OutboxJob.objects.get(pk=row.pk).state   # not committed: invisible to the relay
        committed = time.monotonic()
        while OutboxJob.objects.get(pk=row.pk).sent_at is None and time.monotonic() - committed < 10:
            time.sleep(0.02)
        elapsed = time.monotonic() - committed
        relay.stop()
        out({{"in_transaction": in_transaction, "elapsed": elapsed, "row": rows(pk=row.pk)[0],
              "alive": relay.thread.is_alive()}})
    """)
    assert result["in_transaction"] == "pending"
    assert result["row"]["state"] == "sent", result      # within 10 s of the commit, with a poll every hour
    assert not result["alive"]
    print(f"\n[outbox] committed -> sent in {1000 * result['elapsed']:.0f} ms (woken by the commit)")
    assert srv.wait(result["row"]["job_id"], 30)["result"] == {"marker": marker}


def test_the_relay_command_runs_until_sigterm_and_prunes_old_sent_rows(site, make_server):
    srv = make_server(app=APP)
    site.url = srv.url
    marker = uuid.uuid4().hex
    setup, _ = site.run(f"""
        from datetime import timedelta
        old = enqueue("echo", kwargs={{"n": 0, "marker": {marker!r}}})
        bad = enqueue("no.such.handler", kwargs={{"marker": {marker!r}}})
        Relay().run_once()
        long_ago = timezone.now() - timedelta(days=8)       # past OUTBOX_KEEP (a week)
        OutboxJob.objects.filter(pk=old.pk).update(sent_at=long_ago)
        OutboxJob.objects.filter(pk=bad.pk).update(created_at=long_ago, rejected_at=long_ago)
        fresh = enqueue("echo", kwargs={{"n": 1, "marker": {marker!r}}})
        out([old.pk, bad.pk, fresh.pk])
    """)
    old, bad, fresh = setup
    relay = subprocess.Popen([sys.executable, "manage.py", "greenjobs_relay", "--interval", "0.2"], cwd=PROJECT,
                             env=site.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def states():
            return {r["id"]: r["state"] for r in site.run("out(rows())")[0]}
        assert wait_until(lambda: states() == {bad: "rejected", fresh: "sent"}, 60, interval=0.5,
                          message="the fresh row sent, the old sent row pruned, the rejected one kept")
        enqueued_later, _ = site.run(f"out(enqueue('echo', kwargs={{'n': 2, 'marker': {marker!r}}}).pk)")
        wait_until(lambda: states().get(enqueued_later) == "sent", 30, interval=0.5, message="polled")
    finally:
        relay.send_signal(signal.SIGTERM)
        output, _ = relay.communicate(timeout=60)
    assert relay.returncode == 0, output
    assert "polling every 0.2 s" in output and "relay stopped" in output, output
    assert sorted(job["kwargs"]["n"] for job in server_jobs(srv.url, marker)) == [0, 1, 2]
