"""The cpu dispatcher keeps a job's time limit until its timeout or cancel is recorded: a store that fails at
that moment does not make the job unlimited (unit test: a sink that fails, no broker)."""
import time

import gevent
import pytest

from greenjobs.pool.cpu.dispatcher import CpuDispatcher
from greenjobs.pool.errors import StoreUnavailable
from greenjobs.pool.job import RUNNING, Job, new_id
from greenjobs.server.settings import load


class FailingSink:
    """Records outcomes like the real Sink's ``record``, failing the first ``failures`` calls."""

    def __init__(self, failures: int):
        self.failures = failures
        self.recorded = []

    def record(self, job, owner, outcome):
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the store is failing (test)")
        self.recorded.append((job.id, outcome.state, outcome.error["kind"] if outcome.error else None))
        return "finished"


@pytest.fixture
def dispatcher(tmp_path):
    def make(failures):
        d = CpuDispatcher(load({}, str(tmp_path)), store=None, registry=None, sink=FailingSink(failures))
        d.stopped = []
        d._stop_worker = lambda worker, job: d.stopped.append((worker, job.id))
        return d
    return make


def running(d, timeout=0.05) -> Job:
    job = Job(id=new_id(), handler="cpu.spin", kind="cpu", state=RUNNING, timeout=timeout, attempts=1)
    d._running[job.id] = (job, "worker-1", None)
    return job


def test_a_timeout_whose_record_fails_is_tried_again_and_the_worker_stopped(dispatcher):
    d = dispatcher(failures=2)
    job = running(d)
    d._expire(job.id)
    assert job.id in d._running, "still running here, under its limit"
    assert d.stopped == []
    deadline = time.monotonic() + 5
    while job.id in d._running and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert job.id not in d._running
    assert d.sink.recorded == [(job.id, "failed", "timeout")]
    assert d.stopped == [("worker-1", job.id)]


def test_a_cancel_whose_record_fails_keeps_the_job_and_its_limit(dispatcher):
    d = dispatcher(failures=1)
    job = running(d)
    timer = gevent.get_hub().loop.timer(30)
    timer.start(lambda: None)
    d._running[job.id] = (job, "worker-1", timer)
    with pytest.raises(StoreUnavailable):
        d.cancel(job.id)
    assert d._running[job.id][2] is timer and timer.active, "its time limit still runs"
    assert d.cancel(job.id) is job
    assert job.id not in d._running and not timer.active
    assert d.stopped == [("worker-1", job.id)]
