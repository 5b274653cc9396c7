import json

import pytest

from greenjobs.pool.errors import IllegalTransition
from greenjobs.pool.job import (CANCELLED, FAILED, QUEUED, RUNNING, SCHEDULED, SUCCEEDED, TERMINAL, Job, check_transition,
                      iso, sources)


def make(**kw):
    return Job(id="j1", handler="echo", kind="io", state=kw.pop("state", QUEUED), **kw)


@pytest.mark.parametrize("terminal", sorted(TERMINAL - {FAILED}))
def test_terminal_states_never_move(terminal):
    for target in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED):
        with pytest.raises(IllegalTransition):
            check_transition(terminal, target)


def test_cancelled_job_can_never_become_succeeded():
    job = make(state=RUNNING)
    job.transition(CANCELLED)
    with pytest.raises(IllegalTransition, match="cancelled to succeeded"):
        job.transition(SUCCEEDED)


def test_failed_job_may_be_retried_only_through_queued():
    check_transition(FAILED, QUEUED)
    with pytest.raises(IllegalTransition):
        check_transition(FAILED, RUNNING)


def test_sources_are_the_compare_and_swap_guards():
    assert sources(RUNNING) == (QUEUED,)
    assert set(sources(CANCELLED)) == {SCHEDULED, QUEUED, RUNNING}
    assert sources(SUCCEEDED) == (RUNNING,)


def test_message_decode_round_trip_is_json_only():
    job = make(args=[1, "a"], kwargs={"k": [1, 2]}, priority=7, timeout=2.5, max_retries=3, attempts=2)
    text = json.dumps(job.message())
    assert json.loads(text)["handler"] == "echo"
    back = Job.decode(text)
    assert (back.id, back.args, back.kwargs, back.priority, back.timeout, back.max_retries, back.attempts) == \
        ("j1", [1, "a"], {"k": [1, 2]}, 7, 2.5, 3, 2)


@pytest.mark.parametrize("garbage", [b"\x80\x04K\x01.", "[]", '{"id": 1}', "not json"])
def test_decode_rejects_anything_that_is_not_a_job(garbage):
    with pytest.raises(ValueError):
        Job.decode(garbage)


def test_public_times_are_iso_utc():
    job = make(created_at=0.0)
    assert job.public()["created_at"] == "1970-01-01T00:00:00.000Z"
    assert iso(None) is None


def test_new_ids_are_distinct_version_4_uuids_in_hex():
    import uuid
    from greenjobs.pool.job import new_id
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for job_id in ids[:200]:
        parsed = uuid.UUID(job_id)
        assert parsed.hex == job_id and len(job_id) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_new_ids_stay_distinct_across_threads_and_a_fork():
    import os
    import threading
    from greenjobs.pool.job import new_id
    per_thread: list[list[str]] = [[] for _ in range(8)]
    threads = [threading.Thread(target=lambda out=out: out.extend(new_id() for _ in range(5_000))) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for out in per_thread for i in out]
    assert len(set(ids)) == len(ids) == 40_000
    new_id()                                    # ids are made ahead now: a forked child must not reuse them
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, "".join(new_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 320).decode()
    os.close(read)
    parents = {new_id() for _ in range(10)}
    assert not parents & {child[i:i + 32] for i in range(0, 320, 32)}
