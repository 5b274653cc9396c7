"""The Flask extension against a real greenjobs server."""
import pytest
import requests
from flask import Flask

from greenjobs_client import Client
from greenjobs_client.flask import Greenjobs
from tests.client.flask_app import create_app

pytestmark = pytest.mark.e2e


def test_a_view_submits_and_answers_202_with_the_job_url(server, marker):
    app = create_app({"GREENJOBS_URL": server.url})
    answer = app.test_client().post("/reports", json={"marker": marker, "month": "2026-11"})
    assert answer.status_code == 202
    job_url = answer.headers["Location"]
    assert job_url == answer.get_json()["url"] == f"{server.url}/jobs/{answer.get_json()['job']}"
    job = requests.get(job_url + "?wait=30", timeout=60).json()      # the URL works for any HTTP client
    assert job["state"] == "succeeded" and job["result"] == {"marker": marker, "month": "2026-11"}


def test_init_app_puts_one_configured_client_on_each_app(server, proxy):
    extension = Greenjobs()
    first, second = Flask("first"), Flask("second")
    first.config.update(GREENJOBS_URL=server.url, GREENJOBS_TIMEOUT=3)
    second.config.update(GREENJOBS_URL=proxy.url, GREENJOBS_TOKEN="flask-token")
    extension.init_app(first)
    extension.init_app(second)
    assert isinstance(first.extensions["greenjobs"], Client)
    assert first.extensions["greenjobs"].base_url == server.url
    with second.app_context():
        assert extension.client is second.extensions["greenjobs"]
        extension.submit("echo").result(30)
        extension.submit_with("echo", kwargs={"n": 1}, priority=4).result(30)
    assert [r.headers["authorization"] for r in proxy.seen("POST", "/jobs")] == ["Bearer flask-token"] * 2
    assert proxy.connections == 1     # the app's client reuses its connection


def test_a_missing_url_is_a_clear_error():
    with pytest.raises(RuntimeError, match="GREENJOBS_URL"):
        Greenjobs(Flask("unconfigured"))
    extension = Greenjobs()
    with Flask("other").app_context(), pytest.raises(RuntimeError, match="init_app"):
        extension.client
