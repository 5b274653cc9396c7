"""The embedded SQLite ledger: WAL mode, group commit in a writer thread, reads in reader threads."""
from greenjobs.pool.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
