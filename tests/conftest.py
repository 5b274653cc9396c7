import pytest

from tests.support import ServerProcess, write_ini


@pytest.fixture
def make_server(tmp_path):
    """Start pserve from a copy of config.ini: ``make_server(app={...}, server={...}, name='a')``."""
    started = []

    def make(app=None, server=None, name="srv", start=True, replace_server=False):
        ini = write_ini(tmp_path / name, app, server, replace_server)
        proc = ServerProcess(ini)
        started.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in started:
        try:
            proc.stop(timeout=30)
        except Exception:
            proc.kill()


@pytest.fixture
def server(make_server):
    """A real server on the embedded defaults (fast fsync settings are NOT used: defaults as shipped)."""
    return make_server()
