"""A PostgreSQL database of its own for one test run, on the machine's shared server (never reconfigured).

``GREENJOBS_TEST_POSTGRES`` names the server (a libpq URL to a database we may CREATE DATABASE from);
default ``postgresql://postgres@127.0.0.1:5432/postgres``.  Each store test takes a fresh schema in
the run's database (``schema_url``), each e2e server a database of its own (``database_url``); all
are dropped at the end.
"""
from __future__ import annotations

import os
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

ADMIN_URL = os.environ.get("GREENJOBS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


class PostgresForTests:
    def __init__(self, admin_url: str, name: str):
        self.admin_url, self.name = admin_url, name
        self.extra: list[str] = []
        parts = urlsplit(admin_url)
        self.url = urlunsplit(parts._replace(path="/" + name, query=""))

    @classmethod
    def start_or_skip(cls) -> "PostgresForTests":
        """Create the run's database, or skip (fail under CI) when no server answers."""
        import psycopg
        name = f"greenjobs_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"no PostgreSQL at {urlsplit(ADMIN_URL).hostname}: {exc}")
        return cls(ADMIN_URL, name)

    def schema_url(self, schema: str) -> str:
        """A URL whose tables live in ``schema`` (created here), so each test has a ledger of its own."""
        import psycopg
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.url}?options={quote(f'-csearch_path={schema}')}"

    def database_url(self, suffix: str) -> str:
        """A URL of a new, empty database of this run's (for a server's ini: no ``%`` to escape)."""
        import psycopg
        name = f"{self.name}_{suffix}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.extra.append(name)
        return urlunsplit(urlsplit(self.admin_url)._replace(path="/" + name, query=""))

    def drop(self) -> None:
        import psycopg
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in [self.name, *self.extra]:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
