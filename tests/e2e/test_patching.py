"""gevent monkey-patching inside the real pserve process: early, complete, and without warnings.

(tests/e2e/test_request_isolation.py checks Pyramid's own thread-local per request; these
checks look from the jobs' side and from many concurrent long-polls.)
"""
from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.helpers import E2E_HANDLERS, QUICK_STOP, wait_job
from tests.support import ROOT

pytestmark = pytest.mark.e2e


def test_concurrent_long_polls_each_return_their_own_job_and_no_patch_warning(make_server):
    srv = make_server(app={**E2E_HANDLERS, **QUICK_STOP})
    jobs = [srv.submit("e2e.whoami", kwargs={"pause": 0.2 + 0.02 * (n % 7), "n": n})["id"] for n in range(20)]

    def long_poll(job_id):
        response = srv.http.get(f"{srv.url}/jobs/{job_id}", params={"wait": 30}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(long_poll, jobs))
    for n, (job_id, job) in enumerate(zip(jobs, answers)):
        assert job["id"] == job_id and job["state"] == "succeeded", job
        assert job["kwargs"]["n"] == n
        assert job["result"]["before"]["id"] == job_id == job["result"]["after"]["id"]
        assert job["result"]["after"]["kwargs"]["n"] == n

    log = srv.log()
    assert "MonkeyPatchWarning" not in log, log
    assert "Traceback" not in log, log


def test_the_server_process_is_fully_patched(make_server):
    srv = make_server(app={**E2E_HANDLERS, **QUICK_STOP})
    env = wait_job(srv, srv.submit("e2e.environment")["id"], 30)
    assert env["state"] == "succeeded", env["error"]
    result = env["result"]
    assert result["patched"] == {"socket": True, "threading": True, "time": True, "select": True, "ssl": True}
    assert result["threading_local"].startswith("gevent"), result
    # Pyramid's thread-local manager subclasses a greenlet-local, not the thread-local of before patching
    assert any(m.startswith("gevent") for m in result["pyramid_manager_base"]), result
    assert "MonkeyPatchWarning" not in srv.log()


def test_server_package_init_is_empty_and_imports_nothing():
    """pserve imports ``greenjobs.server`` (and so the ``greenjobs`` facade) before our factory patches:
    the server package stays empty, and neither imports gevent, Pyramid or the store."""
    assert (ROOT / "server" / "__init__.py").read_text().strip() == ""
    code = ("import sys; import greenjobs.server; "
            "print(sorted(m for m in ('gevent', 'pyramid', 'greenjobs.pool.store', 'greenjobs.pool.runtime',"
            " 'threading_local') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
