"""Handlers for the flow-control tests: ``greenjobs.handlers = greenjobs.handlers.builtin tests.flow_handlers``.

With ``$GREENJOBS_TEST_EXECUTIONS`` set, every start and end is appended to that file (one O_APPEND line:
``start|end job-id epoch-seconds pid``), so a test on several servers can check when jobs really ran."""
from __future__ import annotations

import os
import time

import gevent

from greenjobs import current_job, handler


def _record(what: str) -> None:
    path = os.environ.get("GREENJOBS_TEST_EXECUTIONS")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{what} {current_job.id} {time.time():.6f} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


@handler("flow.limited", rate_limit="5/s")
def limited(n=0):
    """Records its start; at most 5 start per second across the cluster."""
    _record("start")
    return n


@handler("flow.per_host", rate_limit="2/s", rate_key="{url.host}")
def per_host(url):
    """Records its start; 2 per second per host of ``url``."""
    _record("start")
    return url


@handler("flow.capped", max_running=2, timeout=120.0)
def capped(seconds=0.2):
    """At most 2 run at once across the cluster; records start and end around a nap."""
    _record("start")
    gevent.sleep(seconds)
    _record("end")
    return seconds


@handler("flow.cpu_capped", kind="cpu", max_running=1, timeout=60.0)
def cpu_capped(seconds=0.2):
    """A cpu job of which at most 1 runs at once across the cluster."""
    _record("start")
    time.sleep(seconds)
    _record("end")
    return seconds


@handler("flow.echo")
def echo(x=None):
    """Returns x (no limits)."""
    return x
