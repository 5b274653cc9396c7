"""Fixtures of the client tests: one real greenjobs server (pserve) for the session, a client on it,
and a fault-injecting proxy in front of it."""
from __future__ import annotations

import uuid

import pytest

from greenjobs_client import Client
from tests.client.proxy import FaultProxy
from tests.support import ServerProcess, stop_all, write_ini


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real server from a copy of config.ini (no cpu workers: every client test uses io handlers)."""
    ini = write_ini(tmp_path_factory.mktemp("greenjobs-client"),
                    app={"greenjobs.workers.cpu": 0, "greenjobs.store.synchronous": "normal",
                         "greenjobs.handlers": "greenjobs.handlers.builtin tests.client.client_handlers"
                                               " tests.workflow_handlers tests.flow_handlers"})
    proc = ServerProcess(ini).start()
    yield proc
    stop_all([proc])


@pytest.fixture
def client(server):
    with Client(server.url, timeout=10) as c:
        yield c


@pytest.fixture
def proxy(server):
    p = FaultProxy(server.port)
    yield p
    p.close()


@pytest.fixture
def marker():
    """A value to put in a job's kwargs, so a test finds its own jobs on the shared server."""
    return uuid.uuid4().hex

