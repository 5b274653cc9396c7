"""The Django integration, tested by Django's own test runner against a real greenjobs server."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.e2e

PROJECT = Path(__file__).with_name("django_project")


def test_django_test_runner_passes_the_on_commit_signal_tests(server):
    env = dict(os.environ, GREENJOBS_URL=server.url, DJANGO_SETTINGS_MODULE="gjsite.settings",
               PYTHONPATH=os.pathsep.join([str(PROJECT), str(ROOT)]))
    out = subprocess.run([sys.executable, "manage.py", "test", "orders", "-v", "2", "--noinput"],
                         cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    assert re.search(r"^Ran 10 tests", report, re.M), report      # all of them ran, none skipped
    assert "\nOK\n" in report and "skipped" not in report, report


def test_the_django_runner_fails_when_the_server_is_gone():
    """The signal tests can fail: with no server there, the committed-order test raises."""
    env = dict(os.environ, GREENJOBS_URL="http://127.0.0.1:9", DJANGO_SETTINGS_MODULE="gjsite.settings",
               PYTHONPATH=os.pathsep.join([str(PROJECT), str(ROOT)]))
    out = subprocess.run([sys.executable, "manage.py", "test", "orders.tests.SubmitOnCommitTests"
                          ".test_a_committed_order_makes_one_job_that_runs", "--noinput"],
                         cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "ConnectionFailed" in out.stderr
