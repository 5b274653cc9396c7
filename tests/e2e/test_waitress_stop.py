"""SIGTERM under waitress (``use = egg:waitress#main``), which leaves SIGTERM to its default: greenjobs catches
it, hands running jobs back to the ledger, and the process still ends by the signal."""
import signal
import sqlite3

import pytest

from tests.e2e.helpers import E2E_HANDLERS, QUICK_STOP, wait_until

pytestmark = pytest.mark.e2e
pytest.importorskip("waitress")


def test_sigterm_under_waitress_hands_running_jobs_back(make_server, tmp_path):
    srv = make_server(app={**E2E_HANDLERS, **QUICK_STOP, "greenjobs.workers.cpu": 0},
                      server={"use": "egg:waitress#main", "threads": "100"}, replace_server=True, name="w")
    job = srv.submit("e2e.pid", kwargs={"pause": 60})
    wait_until(lambda: srv.get(f"/jobs/{job['id']}").json()["state"] == "running", 30, message="running")
    srv.signal(signal.SIGTERM)
    code = srv.proc.wait(30)
    assert code == -signal.SIGTERM, (code, srv.log()[-3000:])
    with sqlite3.connect(tmp_path / "w" / "var" / "greenjobs.sqlite") as conn:
        state, owner, attempts = conn.execute("SELECT state, lease_owner, attempts FROM jobs WHERE id = ?",
                                              (job["id"],)).fetchone()
    assert (state, owner, attempts) == ("queued", None, 1), (state, owner, srv.log()[-3000:])
    assert "SIGTERM: shutting the job runtime down" in srv.log()
