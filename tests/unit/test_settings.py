import pytest

from greenjobs.pool.errors import ConfigurationError
from greenjobs.server.settings import load


def test_defaults_are_relative_to_here(tmp_path):
    settings = load({}, str(tmp_path))
    assert settings.pool_size == 1000
    assert settings.store_path == str(tmp_path / "var" / "greenjobs.sqlite")
    assert settings.handlers == ("greenjobs.handlers.builtin",)
    assert settings.http_allowed_hosts == ("127.0.0.1", "localhost")


def test_relative_store_path_is_resolved_against_here(tmp_path):
    settings = load({"greenjobs.store.url": "sqlite:///data/jobs.db"}, str(tmp_path))
    assert settings.store_path == str(tmp_path / "data" / "jobs.db")


def test_every_problem_is_reported_at_once(tmp_path):
    raw = {"greenjobs.pool.size": "lots", "greenjobs.api.max_wait": "-1", "greenjobs.pool.sise": "3",
           "greenjobs.store.synchronous": "sometimes"}
    with pytest.raises(ConfigurationError) as info:
        load(raw, str(tmp_path))
    text = str(info.value)
    assert "greenjobs.pool.size = 'lots': expected an integer" in text
    assert "greenjobs.api.max_wait = '-1'" in text
    assert "greenjobs.pool.sise: unknown setting; did you mean greenjobs.pool.size?" in text
    assert "greenjobs.store.synchronous = 'sometimes': expected one of full, normal" in text


@pytest.mark.parametrize("text", ["ture", "2", "enabled"])
def test_booleans_are_strict(text):
    from greenjobs.pool.settings import as_bool
    with pytest.raises(ValueError):
        as_bool(text)


def test_bad_server_setting_stops_startup_with_one_line():
    from greenjobs.server.runner import gevent_server_factory
    with pytest.raises(SystemExit) as info:
        gevent_server_factory({}, port="http")
    assert "port = 'http': expected an integer" in str(info.value)
    with pytest.raises(SystemExit, match="unknown setting"):
        gevent_server_factory({}, max_conections="5")


def test_non_loopback_default_is_never_used():
    from greenjobs.server.runner import TABLE
    assert {s.key: s.default for s in TABLE}["host"] == "127.0.0.1"
