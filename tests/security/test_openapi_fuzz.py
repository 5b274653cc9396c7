"""schemathesis against a real pserve's /openapi.json, access control off and on (issue 12).

Every check schemathesis has (``--checks all``) over every operation, in its coverage, fuzzing and
stateful phases; tests/security/schemathesis.toml says which expectations are widened and why.  The
seed is fixed so a failure reproduces (GREENJOBS_FUZZ_SEED picks another; GREENJOBS_FUZZ_EXAMPLES
more cases per operation).  A failure prints schemathesis' report, with a curl line per case.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import QUICK_STOP

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")
ADMIN = "admin-token-for-fuzzing"
SEED = int(os.environ.get("GREENJOBS_FUZZ_SEED", "20261201"))
EXAMPLES = int(os.environ.get("GREENJOBS_FUZZ_EXAMPLES", "15"))
#: Long-polls answer within 0.5 s and idle streams beat every 0.5 s (schemathesis reads a stream until its
#: timeout); one cpu worker is enough for what the fuzzer submits.
SERVER = {**QUICK_STOP, "greenjobs.api.max_wait": 0.5, "greenjobs.events.heartbeat": 0.5, "greenjobs.workers.cpu": 1}


def schemathesis(srv, *extra: str) -> tuple[int, str]:
    exe = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    command = [exe, "--no-color", "--config-file", str(CONFIG), "run", f"{srv.url}/openapi.json",
               "--checks", "all",
               # DELETE /jobs/{id} cancels a job, it does not delete it: the job stays readable (as cancelled)
               "--exclude-checks", "use_after_free",
               # a hang, not a speed test: speed is measured in bench/, never asserted on a shared machine
               "--max-response-time", "60",
               "--max-examples", str(EXAMPLES), "--seed", str(SEED),
               "--workers", "1", "--max-failures", "20", *extra]   # 1: hypothesis' lambda
    # descriptions are not thread-safe on Python 3.11 (an "AST constructor recursion depth mismatch" error)
    run = subprocess.run(command, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    return run.returncode, run.stdout + run.stderr


def report(name: str, output: str, capsys) -> None:
    lines = output.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith("Test cases:")), None)
    with capsys.disabled():
        print(f"\n[schemathesis {name}] {lines[at + 1].strip() if at is not None else output[-300:]}")


def check(srv, name: str, rc: int, output: str, capsys) -> None:
    report(name, output, capsys)
    if rc != 0:
        start = output.find("=== ERRORS ===") if "=== ERRORS ===" in output else output.find("=== FAILURES ===")
        pytest.fail(f"schemathesis exit {rc}:\n{output[max(start, 0):]}", pytrace=False)
    assert "Traceback" not in srv.log(), srv.log()[-5000:]
    assert srv.get("/health").status_code == 200


def test_schemathesis_with_access_control_off(make_server, capsys):
    srv = make_server(app=SERVER)
    rc, output = schemathesis(srv)
    check(srv, "auth off", rc, output, capsys)


def test_schemathesis_with_an_admin_token(make_server, capsys):
    srv = make_server(app={**SERVER, "greenjobs.auth.tokens": f"{ADMIN}:admin"})
    rc, output = schemathesis(srv, "--header", f"Authorization: Bearer {ADMIN}")
    check(srv, "auth on", rc, output, capsys)
