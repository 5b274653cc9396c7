"""The cpu path's own guarantees on the embedded broker: the outbox, and result limits."""
import pytest

from greenjobs.pool.job import QUEUED, Job, new_id
from greenjobs.pool.store.sqlite import SqliteStore as Store
from tests.e2e.helpers import wait_job

pytestmark = pytest.mark.e2e


@pytest.mark.faults
def test_a_job_committed_but_never_published_runs_after_restart(make_server):
    """A crash between the store commit and the publish: the outbox publishes it at the next start."""
    srv = make_server(app={"greenjobs.workers.cpu": 1}, start=False)
    import gevent
    store = Store(str(srv.ini.parent / "var" / "greenjobs.sqlite")).open()
    try:
        job = Job(id=new_id(), handler="cpu.pbkdf2", kind="cpu", state=QUEUED, kwargs={"iterations": 1000},
                  timeout=60.0)
        store.insert([job], "a-server-that-crashed:1:x")   # committed, flagged in the outbox, never published
    finally:
        store.close()
        gevent.sleep(0)
    srv.start()
    done = wait_job(srv, job.id, 60)
    assert done["state"] == "succeeded" and done["attempts"] == 1


def test_a_cpu_result_over_the_size_limit_fails_the_job(make_server):
    srv = make_server(app={"greenjobs.workers.cpu": 1, "greenjobs.job.max_result_bytes": 50,
                           "greenjobs.handlers": "greenjobs.handlers.builtin tests.e2e.cpu_handlers"})
    done = wait_job(srv, srv.submit("cpu.pbkdf2", kwargs={"iterations": 1000})["id"], 60)
    assert done["state"] == "failed" and done["error"]["kind"] == "result_too_large"


def test_retry_of_a_failed_cpu_job_runs_it_again_on_a_worker(make_server):
    srv = make_server(app={"greenjobs.workers.cpu": 1})
    job = wait_job(srv, srv.submit("cpu.spin", kwargs={"seconds": 5}, timeout=0.5)["id"], 60)
    assert job["state"] == "failed" and job["error"]["kind"] == "timeout"
    response = srv.post(f"/jobs/{job['id']}/retry", None)
    assert response.status_code == 202, response.text
    again = wait_job(srv, job["id"], 60)
    assert again["state"] == "failed" and again["attempts"] == 2 and len(again["errors"]) == 2
