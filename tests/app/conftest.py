import gevent
import pytest
import webtest

from greenjobs.server.wsgi import make_app


@pytest.fixture
def app(tmp_path):
    """The real Pyramid app and runtime over a temporary store, driven by WebTest (no socket)."""
    wsgi = make_app({"here": str(tmp_path)}, **{"greenjobs.store.synchronous": "normal",
                                                "greenjobs.api.max_body": "8192",
                                                "greenjobs.api.max_batch": "5",
                                                "greenjobs.api.max_wait": "2"})
    with gevent.Timeout(60):
        yield webtest.TestApp(wsgi)
    wsgi.registry.greenjobs_runtime.shutdown(0)
