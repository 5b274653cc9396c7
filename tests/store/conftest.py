"""The store contract suite runs against every backend in ``BACKENDS`` (real databases, no stubs).

``make_store(lease_seconds=..., synchronous=...)`` opens a fresh ledger of the backend under test:
SQLite a new file, PostgreSQL a new schema in a database made for this test run (127.0.0.1:5432,
or GREENJOBS_TEST_POSTGRES).  PostgreSQL tests skip when no server answers, except under CI.
"""
import uuid

import gevent
import pytest

from greenjobs.pool.store import open_store


def _sqlite(request, tmp_path, name):
    return f"sqlite:///{tmp_path / (name + '.sqlite')}"


def _postgres(request, tmp_path, name):
    return request.getfixturevalue("postgres").schema_url(f"{name}_{uuid.uuid4().hex[:12]}")


#: backend name -> how to make a fresh ledger URL for one test.
BACKENDS = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(autouse=True)
def under_timeout():
    """Every store test runs under a gevent timeout, so a lost wake-up fails instead of hanging."""
    with gevent.Timeout(30):
        yield


@pytest.fixture(params=sorted(BACKENDS))
def make_store(request, tmp_path):
    opened = []

    def make(name="jobs", lease_seconds=5.0, **options):
        options.setdefault("synchronous", "normal") if request.param == "sqlite" else None
        store = open_store(BACKENDS[request.param](request, tmp_path, name), lease_seconds=lease_seconds, **options)
        opened.append(store)
        return store

    make.backend = request.param
    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()
