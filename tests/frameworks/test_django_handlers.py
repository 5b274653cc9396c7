"""Django in handlers, on a real server with cpu workers: a project (copied beside config.ini, so its modules
import from the ini's folder) whose io and cpu handlers use the ORM, set up by greenjobs' Django adapter.
The setup hook runs once per process, the server's time zone stays its own, application settings reach the
handlers, and the open database connections stay flat over 5,000 io and 200 cpu jobs - while without the
adapter's middleware every io job leaves one open."""
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.helpers import QUICK_STOP, wait_batch, wait_until
from tests.e2e.test_cpu import worker_pids

pytestmark = pytest.mark.e2e

PROJECT = Path(__file__).parent / "shop_project"
ORDERS = 50


def project(tmp_path, name) -> tuple[Path, dict]:
    """The shop project in ``tmp_path/name`` (the server's folder) with its database made and ORDERS orders."""
    folder = tmp_path / name
    shutil.copytree(PROJECT, folder)
    env = {"GREENJOBS_SHOP_DB": str(folder / "shop.sqlite3"), "SHOP_SETUP_LOG": str(folder / "setup.log")}
    made = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.core.management import call_command;"
         " call_command('migrate', run_syncdb=True, verbosity=0); from shop.models import Order;"
         f" Order.objects.bulk_create([Order() for _ in range({ORDERS})])"],
        cwd=folder, env={**os.environ, **env, "DJANGO_SETTINGS_MODULE": "shopsite.settings"}, capture_output=True,
        text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    return folder, env


def app(hook: str, cpu: int) -> dict:
    return {**QUICK_STOP, "greenjobs.handlers": "greenjobs.handlers.builtin shop.jobs", "greenjobs.setup": hook,
            "django.settings_module": "shopsite.settings", "shop.price_api": "https://prices.example/v2",
            "greenjobs.workers.cpu": cpu, "greenjobs.pool.size": 200, "greenjobs.api.max_batch": 1000}


def open_db_files(pid: int, db: str) -> int:
    """How many file descriptors of process ``pid`` are open on the database (its connections)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == db:
                count += 1
        except OSError:
            pass
    return count


def run_io(srv, n: int) -> None:
    for start in range(0, n, 1000):
        batch = srv.post("/jobs/batch", {"jobs": [{"handler": "shop.touch", "args": [1 + (i % ORDERS)]}
                                                  for i in range(start, min(n, start + 1000))]})
        assert batch.status_code == 202, batch.text
        counts = wait_batch(srv, batch.json()["batch"], 300)
        assert counts["counts"]["succeeded"] == min(1000, n - start), counts


def test_django_orm_handlers_keep_the_connection_count_flat(make_server, tmp_path):
    folder, env = project(tmp_path, "srv")
    srv = make_server(app=app("shop.hooks:setup", cpu=2), name="srv", env=env)
    db = env["GREENJOBS_SHOP_DB"]
    seen = srv.wait(srv.submit("shop.env")["id"], 30)
    assert seen["state"] == "succeeded", seen
    assert seen["result"]["TZ"] != "Asia/Tokyo" and "JST" not in seen["result"]["tzname"], "the server's clock is its own"
    assert seen["result"]["price_api"] == "https://prices.example/v2", "application settings reach handlers"

    figures = []
    for done in (1000, 5000):
        run_io(srv, done - (figures[-1][0] if figures else 0))
        figures.append((done, open_db_files(srv.proc.pid, db)))
    cpu = srv.post("/jobs/batch", {"jobs": [{"handler": "shop.count"}] * 200})
    counts = wait_batch(srv, cpu.json()["batch"], 300)
    assert counts["counts"]["succeeded"] == 200, counts
    workers = worker_pids(srv)
    in_workers = {pid: open_db_files(pid, db) for pid in workers}
    print(f"\n[django] open connections to the database, with the adapter: server {figures} (jobs, fds); "
          f"cpu workers after 200 jobs {sorted(in_workers.values())}")
    assert all(n <= 5 for _, n in figures), figures
    assert all(n <= 2 for n in in_workers.values()), in_workers
    setups = Counter(Path(env["SHOP_SETUP_LOG"]).read_text().split())
    assert setups[str(srv.proc.pid)] == 1, setups
    assert all(setups[str(pid)] == 1 for pid in workers), (setups, workers)


def test_without_the_adapters_middleware_each_io_job_leaves_a_connection_open(make_server, tmp_path):
    """The figure the adapter fixes, measured the same way (and proof the count above can fail)."""
    folder, env = project(tmp_path, "bare")
    srv = make_server(app=app("shop.hooks:setup_without_closing", cpu=0), name="bare", env=env)
    run_io(srv, 1000)
    leaked = open_db_files(srv.proc.pid, env["GREENJOBS_SHOP_DB"])
    print(f"\n[django] without closing: {leaked} connections open after 1,000 io jobs")
    assert leaked >= 500, leaked
