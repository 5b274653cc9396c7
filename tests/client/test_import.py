"""The client is importable without the server's stack: a web app that only submits stays light."""
import json
import subprocess
import sys

from tests.support import ROOT

SERVER_STACK = ("gevent", "pyramid", "kombu", "server", "pool", "handlers", "webob")


def modules_after(statement: str) -> list[str]:
    code = (f"import sys, json; {statement}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_import_greenjobs_client_pulls_in_no_server_module():
    loaded = modules_after("import greenjobs_client; from greenjobs_client import Client, JobHandle, JobFailed")
    assert "greenjobs_client" in loaded and "urllib3" in loaded
    assert not [name for name in SERVER_STACK if name in loaded]


def test_the_cli_and_the_flask_and_django_integrations_pull_in_no_server_module_either():
    loaded = modules_after("import greenjobs_client.cli, greenjobs_client.bulk, greenjobs_client.progress, "
                           "greenjobs_client.flask, greenjobs_client.django")
    assert not [name for name in SERVER_STACK if name in loaded]
