"""What only the SQLite backend promises: group-commit fsync policy, a full disk, schema versions."""
import sqlite3
import time

import pytest

from greenjobs.pool.job import QUEUED, Job, new_id
from greenjobs.pool.errors import StoreUnavailable
from greenjobs.pool.lifecycle import CANCELLED_BY_REQUEST
from greenjobs.pool.store.sqlite import SqliteStore as Store
from greenjobs.pool.store.sqlite import schema


def job(state=QUEUED, **kw):
    return Job(id=new_id(), handler="echo", kind="io", state=state, **kw)


def test_unwritable_store_raises_store_unavailable(tmp_path, monkeypatch):
    """A full disk fails the writes that need space; small writes that still fit do not make the store healthy
    until writes have succeeded for HOLD seconds after the last failure (then ping() probes it back)."""
    import os
    from greenjobs.pool.store import health
    monkeypatch.setattr(health, "HOLD", 0.3)

    import pytest

    from greenjobs.pool.errors import StoreUnavailable
    from greenjobs.pool.store.sqlite import SqliteStore as Store
    s = Store(str(tmp_path / "full.sqlite"), synchronous="normal").open()
    try:
        s._db.write(lambda conn: conn.execute("PRAGMA max_page_count = 1"))
        page = s._db.write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        s._db.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {page}"))
        with pytest.raises(StoreUnavailable):
            s.insert([job(kwargs={"pad": "x" * 100000})], "me")
        assert s.healthy is False
        s.insert([job()], "me")                     # a small job fits in a free page: not yet healthy
        assert s.healthy is False and s.ping() is False and "full" in s.last_error
        s._db.write(lambda conn: conn.execute("PRAGMA max_page_count = 1000000"))
        s.insert([job()], "me")
        assert s.healthy is False                   # within HOLD of the failure
        time.sleep(0.3)
        assert s.ping() is True and s.healthy is True and s.last_error is None
    finally:
        s.close()
    assert os.path.exists(tmp_path / "full.sqlite")



def test_only_promises_to_clients_wait_for_an_fsync(tmp_path):
    """With synchronous=full, a commit holding a submission, cancel or revive is fsynced (FULL);
    a commit of only claims and outcomes is not (NORMAL): losing it to a power cut reruns a job."""
    from greenjobs.pool.store.sqlite import SqliteStore as Store
    s = Store(str(tmp_path / "full.sqlite"), synchronous="full").open()
    try:
        def mode():
            return s._db._writer_pool.apply(lambda: s._db._writer.execute("PRAGMA synchronous").fetchone()[0])
        j = job()
        s.insert([j], "me")
        assert mode() == 2                                   # FULL
        assert s.claim(j, "me").get() is True
        assert s.finish(j, "me", "succeeded", "1", None) is True
        assert mode() == 1                                   # NORMAL
        other = job()
        s.insert([other], "me")
        assert mode() == 2
        s.cancel(other.id, CANCELLED_BY_REQUEST)
        assert mode() == 2 and s.get(other.id).state == "cancelled"
    finally:
        s.close()


def test_a_ledger_from_before_schema_versions_is_migrated(tmp_path):
    """A first-release ledger (no user_version, no callback columns) opens, keeps its jobs, gains the columns."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, handler TEXT NOT NULL,"
                 " kind TEXT NOT NULL, state TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0, args TEXT NOT NULL,"
                 " kwargs TEXT NOT NULL, timeout REAL, max_retries INTEGER NOT NULL DEFAULT 0, run_at REAL,"
                 " attempts INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT, errors TEXT, progress TEXT,"
                 " batch_id TEXT, lease_owner TEXT, lease_expires REAL, outbox INTEGER NOT NULL DEFAULT 0,"
                 " created_at REAL NOT NULL, started_at REAL, finished_at REAL)")
    conn.execute("INSERT INTO jobs (id, handler, kind, state, args, kwargs, created_at) VALUES"
                 " ('old1', 'echo', 'io', 'succeeded', '[]', '{}', 1.0)")
    conn.commit()
    conn.close()
    s = Store(str(path), synchronous="normal").open()
    try:
        assert s.get("old1").state == "succeeded" and s.get("old1").callback_url is None
        assert s._db.write(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == schema.CURRENT
        s.insert([job(callback_url="http://127.0.0.1/x")], "me")
    finally:
        s.close()


def test_a_ledger_from_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.CURRENT + 1}")
    conn.close()
    with pytest.raises(StoreUnavailable, match="schema version .*newer greenjobs"):
        Store(str(path), synchronous="normal").open()


def _middle_of_current_log(data: bytearray) -> int:
    """An offset inside the page of the middle frame of the WAL's current generation (frames carrying the
    header's salts, from the start).  A checkpoint may have restarted the log, leaving older frames
    past its end; damage there loses nothing, so the test must not land in them."""
    import struct
    page_size, salts = struct.unpack(">I", data[8:12])[0], data[16:24]
    frame, frames = 24 + page_size, 0
    while 32 + (frames + 1) * frame <= len(data) and data[32 + frames * frame + 8:32 + frames * frame + 16] == salts:
        frames += 1
    assert frames >= 100, frames                    # 300 commits: the log holds many frames
    return 32 + (frames // 2) * frame + 24 + page_size // 2


def _snapshot(path, into):
    """The database and its WAL as a crash would leave them (the store is still open)."""
    import shutil
    shutil.copy(path, into)
    shutil.copy(str(path) + "-wal", str(into) + "-wal")


def test_a_damaged_wal_refuses_to_start_instead_of_losing_jobs(tmp_path):
    path = tmp_path / "live.sqlite"
    s = Store(str(path), synchronous="normal").open()
    try:
        jobs = [job() for _ in range(300)]
        for j in jobs:
            s.insert([j], "me")            # one commit each, all in the WAL (no checkpoint ran)
        s.flush()
        _snapshot(path, tmp_path / "crash.sqlite")
    finally:
        s.close()
    intact = Store(str(tmp_path / "crash.sqlite"), synchronous="normal").open()      # a plain crash opens fine
    try:
        assert all(intact.get(j.id) is not None for j in jobs[::50])
    finally:
        intact.close()

    s = Store(str(path), synchronous="normal").open()
    try:
        for j in [job() for _ in range(300)]:
            s.insert([j], "me")
        s.flush()
        _snapshot(path, tmp_path / "damaged.sqlite")
    finally:
        s.close()
    wal = tmp_path / "damaged.sqlite-wal"
    data = bytearray(wal.read_bytes())
    at = _middle_of_current_log(data)
    data[at:at + 64] = bytes(b ^ 0xFF for b in data[at:at + 64])   # 64 bytes changed in the middle of the log
    # (flipped, not zeroed: the middle of a page is often free space that is zero already)
    wal.write_bytes(bytes(data))
    with pytest.raises(StoreUnavailable, match="is damaged"):
        Store(str(tmp_path / "damaged.sqlite"), synchronous="normal").open()
    kept = tmp_path / "damaged.sqlite-wal.damaged"
    assert kept.read_bytes() == bytes(data)         # the evidence is kept as it was, for recovery
    with pytest.raises(StoreUnavailable, match="kept at"):   # and a restart does not accept the loss
        Store(str(tmp_path / "damaged.sqlite"), synchronous="normal").open()
    kept.unlink()                                   # the operator accepts the loss: it opens
    Store(str(tmp_path / "damaged.sqlite"), synchronous="normal").open().close()


def test_the_committer_survives_a_failure_of_its_own_recovery(tmp_path, monkeypatch):
    """A batch that fails and whose op-by-op retry fails too (a ROLLBACK that raises) fails its writes
    with StoreUnavailable; the committer lives on and the next write commits."""
    from greenjobs.pool.store import health
    monkeypatch.setattr(health, "HOLD", 0.0)
    s = Store(str(tmp_path / "c.sqlite"), synchronous="normal").open()
    try:
        def broken(*args):
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")
        monkeypatch.setattr(s._db, "_run_batch", broken)
        monkeypatch.setattr(s._db, "_run_singly", broken)
        with pytest.raises(StoreUnavailable):
            s.insert([job()], "me")
        assert s.healthy is False
        monkeypatch.undo()
        monkeypatch.setattr(health, "HOLD", 0.0)
        j = job()
        s.insert([j], "me")
        assert s.get(j.id) is not None and s.healthy is True
    finally:
        s.close()


def test_two_processes_opening_a_new_ledger_at_once_migrate_it_once(tmp_path):
    """Two servers (gunicorn's workers) starting together on a fresh file: the second waits for the first's
    migration and finds nothing left to do, instead of adding its columns again (duplicate column name)."""
    import subprocess
    import sys
    path = tmp_path / "fresh.sqlite"
    code = ("import sys, time, sqlite3; from greenjobs.pool.store.sqlite import schema;"
            " conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None);"
            " time.sleep(max(0.0, float(sys.argv[2]) - time.time()));"     # all read the version at one moment
            " schema.migrate(conn); print(conn.execute('PRAGMA user_version').fetchone()[0])")
    for _ in range(5):
        path.unlink(missing_ok=True)
        at = str(time.time() + 1.5)
        procs = [subprocess.Popen([sys.executable, "-c", code, str(path), at], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err[-500:] for _, err in outs]
        assert {out.strip() for out, _ in outs} == {str(schema.CURRENT)}
