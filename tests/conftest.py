import pytest

from tests.postgres import PostgresForTests
from tests.support import ServerProcess, stop_all, write_ini


@pytest.fixture(scope="session")
def postgres():
    """Databases for this test run on the shared PostgreSQL server, dropped at the end (skip without one,
    except under CI)."""
    server = PostgresForTests.start_or_skip()
    yield server
    server.drop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request):
    """App settings that put a server's ledger on each backend: the embedded SQLite file, or a fresh
    PostgreSQL database.  A test that takes it runs once per backend."""
    if request.param == "sqlite":
        return {}
    return {"greenjobs.store.url": request.getfixturevalue("postgres").database_url("srv")}


@pytest.fixture
def make_server(tmp_path):
    """Start pserve from a copy of config.ini: ``make_server(app={...}, server={...}, name='a', env={...})``."""
    started = []

    def make(app=None, server=None, name="srv", start=True, replace_server=False, env=None):
        ini = write_ini(tmp_path / name, app, server, replace_server)
        proc = ServerProcess(ini, env)
        started.append(proc)
        return proc.start() if start else proc

    yield make
    stop_all(started)


@pytest.fixture
def server(make_server):
    """A real server on the embedded defaults (fast fsync settings are NOT used: defaults as shipped)."""
    return make_server()


def rabbitmq_answers() -> bool:
    import socket
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(params=["embedded", "rabbitmq"])
def broker_settings(request):
    """Settings that put cpu jobs on each broker: the embedded SQLite transport, and RabbitMQ.

    RabbitMQ tests skip only when no broker answers on 127.0.0.1:5672, and never when CI is set.
    Each test gets its own queue namespace, so leftovers of another test are never consumed.
    """
    import os
    import uuid
    if request.param == "embedded":
        return {}
    if not rabbitmq_answers():
        if os.environ.get("CI"):
            pytest.fail("RabbitMQ is not answering on 127.0.0.1:5672 and CI is set: .ci/run should have started it")
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    return {"greenjobs.broker.url": "amqp://guest:guest@127.0.0.1:5672//",
            "greenjobs.broker.namespace": f"gjtest-{uuid.uuid4().hex[:8]}"}
