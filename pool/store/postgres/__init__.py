"""The PostgreSQL ledger (psycopg 3): ``store.PostgresStore``."""
from greenjobs.pool.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
