"""Monkey-patching happens early enough, under our gevent runner and under waitress."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.e2e

RUNNERS = {
    "gevent": {},
    "waitress": {"use": "egg:waitress#main", "threads": "100"},
}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_concurrent_requests_each_see_their_own_request(make_server, runner):
    srv = make_server(app={"pyramid.includes": "tests.e2e.probe"}, server=RUNNERS[runner], name=runner,
                      replace_server=runner != "gevent")
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda n: srv.get(f"/_probe/{n}", timeout=30).json(), range(20)))
    assert [a["n"] for a in answers] == [str(n) for n in range(20)]
    assert all(a["own"] for a in answers), answers
    assert answers[0]["local"].startswith("gevent"), "Pyramid's thread-local was created before patching"
    # jobs work under this runner too
    job = srv.submit("sleep", kwargs={"seconds": 0.1})
    assert srv.wait(job["id"])["state"] == "succeeded"
    assert "MonkeyPatchWarning" not in srv.log()


def test_server_package_init_is_empty():
    """pserve imports server/__init__.py before our factory patches: it must import nothing."""
    assert (ROOT / "server" / "__init__.py").read_text().strip() == ""
