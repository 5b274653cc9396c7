"""Built-in handlers (a public contract: their names, kwargs and results are documented in the README)."""
from __future__ import annotations

import hashlib
import time

import urllib3

from greenjobs.handlers.registry import handler
from greenjobs.pool.context import current_job
from greenjobs.pool.urls import check_allowed, check_url, http_pool

MAX_HTTP_BODY = 16 * 1024 * 1024


def _number(kwargs: dict, key: str, lo: float, hi: float, required: bool = True) -> None:
    if key not in kwargs:
        if required:
            raise ValueError(f"kwargs.{key} is required")
        return
    value = kwargs[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"kwargs.{key} must be a number between {lo} and {hi}")


def _string(kwargs: dict, key: str, max_len: int = 1024) -> None:
    if key in kwargs and (not isinstance(kwargs[key], str) or len(kwargs[key]) > max_len):
        raise ValueError(f"kwargs.{key} must be a string of at most {max_len} characters")


@handler("echo")
def echo(**kwargs):
    """Return the kwargs unchanged."""
    return kwargs


@handler("sleep", validate=lambda a, kw: _number(kw, "seconds", 0, 86400))
def sleep(seconds):
    """Sleep cooperatively for ``seconds``."""
    import gevent
    gevent.sleep(seconds)
    return {"slept": seconds}


class HandlerFailed(Exception):
    """Raised by the ``fail`` and ``flaky`` handlers."""


@handler("fail", validate=lambda a, kw: _string(kw, "message"))
def fail(message="failed on purpose"):
    """Raise an error with ``message``."""
    raise HandlerFailed(message)


@handler("flaky", validate=lambda a, kw: _number(kw, "fail_times", 0, 1000))
def flaky(fail_times=1):
    """Fail while the attempt number is at most ``fail_times``, then return ``{"attempt": n}``."""
    attempt = current_job.attempt
    if attempt <= fail_times:
        raise HandlerFailed(f"attempt {attempt} of a flaky job fails on purpose (fail_times={fail_times})")
    return {"attempt": attempt}


def _check_url(args, kwargs, settings):
    """At submit: a plain http(s) URL whose host and port are on greenjobs.http.allowed_hosts (a 422 now, not a
    failed job later)."""
    check_url(kwargs.get("url"), "kwargs.url")
    try:
        check_allowed(kwargs["url"], settings.http_allowed_hosts)
    except PermissionError as exc:
        raise ValueError(f"kwargs.url {exc}") from None


class FetchFailed(Exception):
    """http.get could not complete its request; one message for every way a connection fails, so the job's
    error does not tell an open port from a closed one."""


@handler("http.get", timeout=30.0, validate=_check_url)
def http_get(url):
    """GET ``url`` (host must be on ``greenjobs.http.allowed_hosts``); return status, bytes and elapsed seconds.

    Redirects are not followed, so an allowed host cannot bounce a job to a host that is not.
    """
    check_allowed(url, current_job.settings.http_allowed_hosts)
    started = time.perf_counter()
    try:
        response = http_pool().request("GET", url, redirect=False, preload_content=False,
                                        timeout=current_job.job.timeout or 30.0)
    except (OSError, urllib3.exceptions.HTTPError):
        raise FetchFailed(f"GET {url} failed: no response") from None
    size = 0
    try:
        for chunk in response.stream(65536):
            size += len(chunk)
            if size > MAX_HTTP_BODY:
                raise ValueError(f"response body exceeds {MAX_HTTP_BODY} bytes")
    finally:
        response.release_conn()
    return {"status": response.status, "bytes": size, "elapsed": round(time.perf_counter() - started, 6)}


def _check_pbkdf2(args, kwargs):
    _number(kwargs, "iterations", 1, 50_000_000)
    if not isinstance(kwargs["iterations"], int):
        raise ValueError("kwargs.iterations must be an integer")
    _string(kwargs, "password")
    _string(kwargs, "salt")


@handler("cpu.pbkdf2", kind="cpu", timeout=300.0, validate=_check_pbkdf2)
def pbkdf2(iterations, password="x", salt="y"):
    """Return the hex of PBKDF2-HMAC-SHA256(password, salt, iterations)."""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()


@handler("cpu.spin", kind="cpu", timeout=300.0, validate=lambda a, kw: _number(kw, "seconds", 0, 3600))
def spin(seconds):
    """Burn the CPU for ``seconds``; return the loop count."""
    deadline = time.perf_counter() + seconds
    loops = 0
    while time.perf_counter() < deadline:
        loops += 1
    return {"spun": seconds, "loops": loops}
