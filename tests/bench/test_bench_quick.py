"""``python -m bench --quick`` still runs end to end: a row per workload, numbers, no error.

Never a timing assertion: speed is read from the table, not tested. Needs only the ``test`` extra
(no peers run in a quick run, so none is imported).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

WORKLOADS = ("W1", "W1b", "W2", "W3", "W4", "W5", "W6")

pytestmark = pytest.mark.e2e


def test_quick_run_reports_every_workload(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert not [r for r in rows if r["error"]], [r["error"] for r in rows if r["error"]]
    for workload in WORKLOADS:
        measured = [r for r in rows if r["workload"] == workload and r["values"]]
        assert measured, f"no measured row for {workload}"
        for r in measured:
            assert all(isinstance(v, (int, float)) for v in r["values"]), r
            assert isinstance(r["median"], (int, float)), r
    assert {r["system"] for r in rows} <= {"limit", "ceiling", "greenjobs"}     # no peers in --quick
    assert report["machine"]["nproc"] >= 1 and "| workload |" in proc.stdout


def test_request_cpu_reports_cpu_and_rates():
    proc = subprocess.run([sys.executable, "-m", "bench.request_cpu", "--rounds", "1", "--requests", "256"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"health cpu_us", "health rate", "jobs cpu_us", "jobs rate", "jobs ÷ health"}
    assert all(v > 0 for v in out.values()), out
