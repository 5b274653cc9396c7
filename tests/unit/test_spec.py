import time

import pytest

from greenjobs.pool.registry import Registry
from greenjobs.pool.errors import HandlerNotFound, InvalidJobParams
from greenjobs.pool.spec import parse_spec
from greenjobs.server.settings import load


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Registry().load(["greenjobs.handlers.builtin"]), load({}, str(tmp_path_factory.mktemp("s")))


def test_defaults_come_from_the_handler(ctx):
    job = parse_spec({"handler": "cpu.pbkdf2", "kwargs": {"iterations": 10}}, *ctx)
    assert (job.kind, job.timeout, job.priority, job.max_retries, job.state) == ("cpu", 300.0, 0, 0, "queued")


@pytest.mark.parametrize("body, field", [
    ({"handler": "echo", "priority": 10}, "priority"),
    ({"handler": "echo", "priority": True}, "priority"),
    ({"handler": "echo", "args": {}}, "args"),
    ({"handler": "echo", "kwargs": []}, "kwargs"),
    ({"handler": "echo", "timeout": 0}, "timeout"),
    ({"handler": "echo", "timeout": "5"}, "timeout"),
    ({"handler": "echo", "max_retries": -1}, "max_retries"),
    ({"handler": "echo", "delay": -1}, "delay"),
    ({"handler": "echo", "run_at": "tomorrow"}, "run_at"),
    ({"handler": "echo", "colour": "red"}, "colour"),
    ({"handler": 5}, "handler"),
    ({"handler": "sleep"}, "kwargs.seconds"),
    ({"handler": "sleep", "kwargs": {"seconds": "1"}}, "kwargs.seconds"),
    ({"handler": "http.get", "kwargs": {"url": "file:///etc/passwd"}}, "kwargs.url"),
    ({"handler": "cpu.pbkdf2", "kwargs": {"iterations": 1.5}}, "kwargs.iterations"),
    ([], "body"),
])
def test_bad_fields_are_named(ctx, body, field):
    with pytest.raises(InvalidJobParams) as info:
        parse_spec(body, *ctx)
    assert info.value.field == field


def test_batch_items_are_prefixed(ctx):
    with pytest.raises(InvalidJobParams) as info:
        parse_spec({"handler": "echo", "priority": 11}, *ctx, where="jobs[3].")
    assert info.value.field == "jobs[3].priority"


def test_unknown_handler(ctx):
    with pytest.raises(HandlerNotFound):
        parse_spec({"handler": "nope"}, *ctx)


def test_delay_and_run_at_schedule_the_job(ctx):
    job = parse_spec({"handler": "echo", "delay": 30}, *ctx)
    assert job.run_at == pytest.approx(time.time() + 30, abs=2)
    job = parse_spec({"handler": "echo", "run_at": "2030-01-01T00:00:00Z"}, *ctx) if False else \
        parse_spec({"handler": "echo", "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))}, *ctx)
    assert job.run_at > time.time() + 50


@pytest.mark.parametrize("url", ["http://169.254.169.254\\@127.0.0.1/", "http://user@127.0.0.1/",
                                 "http://127.0.0.1/a b", "ftp://127.0.0.1/"])
def test_http_get_urls_that_could_dodge_the_allow_list_are_refused(ctx, url):
    with pytest.raises(InvalidJobParams) as info:
        parse_spec({"handler": "http.get", "kwargs": {"url": url}}, *ctx)
    assert info.value.field == "kwargs.url"


def test_every_job_gets_a_finite_timeout(ctx):
    with pytest.raises(InvalidJobParams):
        parse_spec({"handler": "echo", "timeout": None}, *ctx)


@pytest.mark.parametrize("body,field,words", [
    ({"handler": "sleep", "kwargs": {"seconds": 1, "extra": 1}}, "kwargs", "unexpected keyword argument 'extra'"),
    ({"handler": "sleep", "args": [1], "kwargs": {"seconds": 1}}, "kwargs", "multiple values"),
    ({"handler": "fail", "args": [1, 2]}, "args", "too many positional arguments"),
])
def test_args_and_kwargs_must_fit_the_handlers_signature(ctx, body, field, words):
    registry, settings = ctx
    with pytest.raises(InvalidJobParams) as err:
        parse_spec(body, registry, settings)
    assert err.value.field == field and words in str(err.value)


def test_a_handler_taking_anything_takes_anything(ctx):
    registry, settings = ctx
    assert parse_spec({"handler": "echo", "kwargs": {"any": 1, "thing": 2}}, registry, settings).kwargs == {"any": 1,
                                                                                                            "thing": 2}
