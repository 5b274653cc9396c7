"""Pyramid's conventions with a real ini: its tools (proutes, pviews, pshell) load the app without running
jobs - an orphaned job and a due scheduled job in the ledger stay as they are, no worker starts - and pshell
reads the ledger through ``jobs``; ``pserve config.ini http_port=NNNN`` serves there while plain ``pserve
config.ini`` serves the ini's default, and ``port=NNNN`` (a variable the ini's key shadows) is refused;
``pserve --reload`` restarts on a handler file's change without a forced kill, the running job's interrupted
start counted."""
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from tests.e2e.helpers import QUICK_STOP, wait_until
from tests.support import child_env, free_port, write_ini

pytestmark = pytest.mark.e2e

GHOST = "ghost-host:4242:1:gone"


def rows(db) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, state, attempts, lease_owner, lease_expires, run_at FROM jobs"
                            " ORDER BY seq").fetchall()


def tool(name: str, ini, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"pyramid.scripts.{name}", str(ini)], input=stdin, text=True,
                          capture_output=True, cwd=ini.parent, env=child_env(), timeout=timeout)


def test_pyramid_tools_load_the_app_but_touch_no_job(make_server, tmp_path):
    srv = make_server(app={**QUICK_STOP, "greenjobs.workers.cpu": 2}, name="srv")
    later = srv.submit("echo", kwargs={"x": 1}, delay=1)
    srv.stop(30)                                    # nobody serves: any change below is a tool's
    db = tmp_path / "srv" / "var" / "greenjobs.sqlite"
    with sqlite3.connect(db) as conn:               # an orphan a runtime would adopt at once
        conn.execute("UPDATE jobs SET state = 'queued', lease_owner = ?, lease_expires = ? WHERE id = ?",
                     (GHOST, time.time() - 60, later["id"]))
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO jobs (id, handler, kind, state, args, kwargs, created_at, run_at, timeout)"
                     " VALUES ('due1', 'echo', 'io', 'scheduled', '[]', '{}', ?, ?, 10)", (time.time(), time.time() - 5))
    time.sleep(1.2)
    before = rows(db)
    ini = tmp_path / "srv" / "config.ini"
    routes = tool("proutes", ini)
    assert routes.returncode == 0 and "/jobs" in routes.stdout, routes.stderr[-2000:]
    shell = tool("pshell", ini, stdin="print('COUNT', len(jobs.list(limit=50)))\nprint('GOT', jobs.get('due1').state)\n")
    assert shell.returncode == 0, shell.stderr[-2000:]
    assert "COUNT 2" in shell.stdout and "GOT scheduled" in shell.stdout, shell.stdout[-2000:]
    for out in (routes, shell):
        text = out.stdout + out.stderr
        assert "runtime is not started" in text, text[-2000:]
        assert "adopted" not in text and "supervising" not in text and "consuming" not in text, text[-2000:]
    assert rows(db) == before, "no job touched"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM servers").fetchone()[0] == 0, "no tool joined the cluster"


def pserve(ini, *args, env=None) -> subprocess.Popen:
    log = open(ini.parent / "pserve.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "pyramid.scripts.pserve", str(ini), *args], cwd=ini.parent,
                            stdout=log, stderr=subprocess.STDOUT, env={**child_env(), **(env or {})})


def answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def shipped_ini(folder):
    """The shipped config.ini as it is (``port = %(http_port)s``), in ``folder``, on a private store."""
    ini = write_ini(folder, {**QUICK_STOP, "greenjobs.workers.cpu": 0})
    text = ini.read_text()
    lines = [("port = %(http_port)s" if line.startswith("port = ") else line) for line in text.splitlines()]
    ini.write_text("\n".join(lines) + "\n")
    return ini


def test_http_port_on_the_command_line_and_a_shadowed_port_refused(tmp_path):
    ini = shipped_ini(tmp_path / "ports")
    port = free_port()
    proc = pserve(ini, f"http_port={port}")
    try:
        wait_until(lambda: answers(port), 30, message=f"serving on {port}")
    finally:
        stop(proc)
    refused = subprocess.run([sys.executable, "-m", "pyramid.scripts.pserve", str(ini), f"port={port}"],
                             capture_output=True, text=True, cwd=ini.parent, env=child_env(), timeout=60)
    assert refused.returncode != 0
    assert f"port={port} on the command line does not change [server:main] port" in refused.stderr + refused.stdout


def test_pserve_reload_restarts_without_a_forced_kill(tmp_path):
    folder = tmp_path / "reload"
    folder.mkdir()
    (folder / "reload_jobs.py").write_text("import gevent\nfrom greenjobs import handler\n\n\n"
                                           "@handler('reload.nap')\ndef nap(seconds=1):\n    gevent.sleep(seconds)\n"
                                           "    return seconds\n")
    ini = write_ini(folder, {**QUICK_STOP, "greenjobs.workers.cpu": 1,
                             "greenjobs.handlers": "greenjobs.handlers.builtin reload_jobs"})
    port = int(next(line.split("=")[1] for line in ini.read_text().splitlines() if line.startswith("port =")))
    proc = pserve(ini, "--reload")
    try:
        wait_until(lambda: answers(port), 60, message="serving")
        time.sleep(2.5)         # hupper learns the files to watch from the server's sys.modules, once a second
        job = requests.post(f"http://127.0.0.1:{port}/jobs", json={"handler": "reload.nap", "kwargs": {"seconds": 3}},
                            timeout=10).json()
        time.sleep(0.5)
        (folder / "reload_jobs.py").write_text((folder / "reload_jobs.py").read_text() + "\n# touched\n")
        wait_until(lambda: "reloading: running jobs are handed back" in (folder / "pserve.log").read_text(), 30,
                   message="the old server stopping for the reload")
        wait_until(lambda: answers(port), 60, message="serving again")
        done = requests.get(f"http://127.0.0.1:{port}/jobs/{job['id']}?wait=30", timeout=40).json()
        log = (folder / "pserve.log").read_text()
        assert done["state"] == "succeeded" and done["attempts"] == 2, (done, log[-3000:])
        assert "forcefully killing" not in log, log[-3000:]
        assert log.count("supervisor (pid") <= 2, "an orphaned worker says so once"
    finally:
        stop(proc)
