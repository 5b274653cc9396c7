"""Fixtures for store and executor tests: real SQLite, real greenlets, no sockets, no patching."""
import gevent
import pytest

from greenjobs.pool.registry import Registry
from greenjobs.pool.runtime import Runtime
from greenjobs.pool.store.sqlite import SqliteStore as Store
from greenjobs.server.settings import load


@pytest.fixture(autouse=True)
def under_timeout():
    """Every test here runs under a gevent timeout, so a lost wake-up fails instead of hanging."""
    with gevent.Timeout(30):
        yield


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "jobs.sqlite"), synchronous="normal", lease_seconds=5).open()
    yield s
    s.close()


@pytest.fixture
def make_runtime(tmp_path):
    made = []

    def make(**raw):
        raw = {f"greenjobs.{k.replace('__', '.')}": str(v) for k, v in raw.items()}
        raw.setdefault("greenjobs.handlers", "greenjobs.handlers.builtin tests.pool.handlers_for_tests")
        raw.setdefault("greenjobs.store.synchronous", "normal")
        settings = load(raw, str(tmp_path))
        runtime = Runtime(settings, Registry().load(settings.handlers)).start()
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.shutdown(0)
