"""The Pyramid include against a real greenjobs server."""
import pytest
import webtest

from greenjobs_client import Client
from tests.client.pyramid_app import main

pytestmark = pytest.mark.e2e


def test_request_jobs_is_one_client_per_app_reused_across_requests(server, client, marker):
    app = main({}, **{"greenjobs_client.url": server.url, "greenjobs_client.timeout": "5"})
    browser = webtest.TestApp(app)
    answers = [browser.post_json("/reports", {"marker": marker, "n": n}, status=202) for n in range(3)]
    seen = app.registry.clients_seen
    assert len(seen) == 3 and all(c is app.registry.greenjobs_client for c in seen)
    assert isinstance(seen[0], Client) and seen[0].base_url == server.url
    for n, answer in enumerate(answers):
        assert answer.headers["Location"] == answer.json["url"]
        assert client.job(answer.json["job"]).result(30) == {"marker": marker, "n": n}

    other = main({}, **{"greenjobs_client.url": server.url})
    webtest.TestApp(other).post_json("/reports", {"marker": marker}, status=202)
    assert other.registry.clients_seen[0] is not seen[0]       # per app, not global


def test_one_connection_serves_every_request_of_the_app(proxy):
    app = main({}, **{"greenjobs_client.url": proxy.url, "greenjobs_client.token": "pyr"})
    browser = webtest.TestApp(app)
    for n in range(5):
        browser.post_json("/reports", {"n": n}, status=202)
    assert proxy.connections == 1
    assert {r.headers["authorization"] for r in proxy.seen("POST", "/jobs")} == {"Bearer pyr"}


def test_a_missing_url_stops_configuration():
    with pytest.raises(ValueError, match="greenjobs_client.url"):
        main({})
