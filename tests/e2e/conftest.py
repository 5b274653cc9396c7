import pytest

from tests.e2e.helpers import LocalHTTP


@pytest.fixture
def local_http():
    """A small HTTP server in a thread that records the paths it was asked for."""
    server = LocalHTTP()
    yield server
    server.close()
