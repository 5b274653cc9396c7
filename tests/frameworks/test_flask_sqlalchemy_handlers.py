"""Flask and SQLAlchemy in handlers, on the real app and runtime: the Flask adapter runs each job in the app's
context (``current_app`` works, ``g`` never carries over), the SQLAlchemy adapter gives each job its own session
and removes it after (what a job did not commit is rolled back).  Both at once: setup hooks and middleware
compose."""
import gevent
import pytest
import webtest

from greenjobs.server.wsgi import make_app


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENJOBS_SA_DB", str(tmp_path / "items.sqlite3"))
    wsgi = make_app({"here": str(tmp_path)}, **{
        "greenjobs.store.synchronous": "normal", "greenjobs.workers.cpu": "0", "greenjobs.api.max_wait": "10",
        "greenjobs.handlers": "greenjobs.handlers.builtin tests.frameworks.flask_shop tests.frameworks.sa_shop",
        "greenjobs.setup": "greenjobs.handlers.frameworks.flask:setup greenjobs.handlers.frameworks.sqlalchemy:setup",
        "flask.app": "tests.frameworks.flask_shop:app", "sqlalchemy.session": "tests.frameworks.sa_shop:Session"})
    with gevent.Timeout(60):
        yield webtest.TestApp(wsgi)
    wsgi.registry.greenjobs_runtime.shutdown(0)


def run(app, handler, **kwargs):
    done = app.post_json("/jobs?wait=10", {"handler": handler, "kwargs": kwargs}).json
    assert done["state"] == "succeeded", done
    return done["result"]


def test_each_job_runs_in_the_flask_app_context_and_g_never_carries_over(app):
    first = run(app, "flaskshop.whoami", mark="one")
    second = run(app, "flaskshop.whoami", mark="two")
    assert first == {"app": "flaskshop", "shop": "the flask shop", "inherited": None}
    assert second["inherited"] is None, "g is per job"
    batch = app.post_json("/jobs/batch", {"jobs": [{"handler": "flaskshop.whoami", "kwargs": {"mark": i}}
                                                   for i in range(50)]}).json
    counts = app.get(f"/batches/{batch['batch']}?wait=10").json
    assert counts["counts"].get("succeeded") == 50
    results = [app.get(f"/jobs/{i}").json["result"] for i in batch["ids"]]
    assert all(r["inherited"] is None for r in results), "50 at once: none saw another's g"


def test_each_job_gets_its_own_sqlalchemy_session_removed_after_it(app):
    assert run(app, "sa.add", name="kept") == {"fresh": True}
    assert run(app, "sa.add", name="kept too") == {"fresh": True}, "the last job's session was removed"
    assert run(app, "sa.add", name="dropped", commit=False) == {"fresh": True}
    assert run(app, "sa.count") == 2, "what a job did not commit was rolled back when its session was removed"
