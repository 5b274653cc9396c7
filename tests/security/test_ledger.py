"""A ledger whose write-ahead log was damaged on disk stops pserve with one line, instead of starting
with jobs silently gone (issue 12 finding 10)."""
import shutil
import struct

import pytest

from greenjobs.pool.job import RUNNING, Job, new_id
from greenjobs.pool.store.sqlite import SqliteStore

pytestmark = pytest.mark.e2e


def test_pserve_refuses_a_damaged_ledger_with_one_line(make_server, tmp_path):
    srv = make_server(app={"greenjobs.workers.cpu": 0}, start=False)
    target = srv.ini.parent / "var" / "greenjobs.sqlite"
    target.parent.mkdir(parents=True, exist_ok=True)
    live = tmp_path / "live.sqlite"
    store = SqliteStore(str(live), synchronous="normal").open()
    try:
        for _ in range(200):
            store.insert([Job(id=new_id(), handler="echo", kind="io", state=RUNNING, attempts=1)], "gone-host:1:x")
        store.flush()
        shutil.copy(live, target)                                   # what a crash leaves on disk
        shutil.copy(str(live) + "-wal", str(target) + "-wal")
    finally:
        store.close()
    wal = target.parent / "greenjobs.sqlite-wal"
    data = bytearray(wal.read_bytes())
    # break the checksum of a frame in the middle (its page bytes might be free space, zeros already)
    page_size = struct.unpack(">I", data[8:12])[0]
    frame = 32 + ((len(data) - 32) // (24 + page_size) // 2) * (24 + page_size)
    data[frame + 16:frame + 24] = bytes(b ^ 0xFF for b in data[frame + 16:frame + 24])
    wal.write_bytes(bytes(data))
    with pytest.raises(RuntimeError) as failed:
        srv.start(timeout=20)
    log = str(failed.value)
    assert "greenjobs: the ledger's write-ahead log" in log and ".recover" in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]
