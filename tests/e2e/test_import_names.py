"""greenjobs installs one import name: an application with its own ``handlers``, ``pool`` and
``server`` modules (common names) runs beside it, in the server and in the cpu workers."""
import pytest

pytestmark = pytest.mark.e2e

PROJECT = {
    "handlers.py": '''
import pool, server
from greenjobs import current_job, handler


@handler("proj.hello")
def hello(name):
    return {"hello": name, "pool": pool.WHOSE, "server": server.WHOSE, "job": current_job.id}


@handler("proj.crunch", kind="cpu")
def crunch(n):
    return {"sum": sum(range(n)), "pool": pool.WHOSE}
''',
    "pool.py": 'WHOSE = "the project\'s pool.py"\n',
    "server.py": 'WHOSE = "the project\'s server.py"\n',
}


def test_a_project_with_its_own_handlers_pool_and_server_modules(make_server):
    srv = make_server(app={"greenjobs.handlers": "greenjobs.handlers.builtin handlers", "greenjobs.workers.cpu": 1},
                      start=False)
    for name, text in PROJECT.items():
        (srv.ini.parent / name).write_text(text)
    srv.start()
    hello = srv.wait(srv.submit("proj.hello", kwargs={"name": "x"})["id"], 30)
    assert hello["state"] == "succeeded", hello["error"]
    assert hello["result"] == {"hello": "x", "pool": "the project's pool.py", "server": "the project's server.py",
                               "job": hello["id"]}
    crunch = srv.wait(srv.submit("proj.crunch", kwargs={"n": 10})["id"], 60)
    assert crunch["state"] == "succeeded", crunch["error"]
    assert crunch["result"] == {"sum": 45, "pool": "the project's pool.py"}


def test_an_ini_naming_the_old_builtin_module_still_starts(make_server):
    srv = make_server(app={"greenjobs.handlers": "handlers.builtin", "greenjobs.workers.cpu": 0})
    assert srv.wait(srv.submit("echo", kwargs={"a": 1})["id"], 30)["result"] == {"a": 1}
    assert "'handlers.builtin' is now 'greenjobs.handlers.builtin'" in srv.log()
