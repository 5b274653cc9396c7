import pytest

pytestmark = pytest.mark.e2e


def test_a_handler_module_that_fails_to_import_in_the_worker_fails_its_jobs_with_that_error(make_server):
    srv = make_server(app={"greenjobs.handlers": "greenjobs.handlers.builtin tests.e2e.server_only_handlers",
                           "greenjobs.workers.cpu": 1})
    job = srv.wait(srv.submit("e2e.server_only")["id"], 60)
    assert job["state"] == "failed" and job["error"]["kind"] == "unknown_handler"
    assert "only imports in the server" in job["error"]["message"]
    assert "cannot import 'tests.e2e.server_only_handlers'" in srv.log()
    # the worker lives on and runs other jobs
    other = srv.wait(srv.submit("cpu.pbkdf2", kwargs={"iterations": 1000})["id"], 60)
    assert other["state"] == "succeeded"
    assert srv.get("/health").json()["cpu"]["worker_restarts"] == 0
