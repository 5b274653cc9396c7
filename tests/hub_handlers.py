"""Handlers that block the event loop, for the hub guard's tests:
``greenjobs.handlers = greenjobs.handlers.builtin tests.hub_handlers``."""
from __future__ import annotations

import hashlib
import os
import time

from gevent import monkey

from greenjobs import handler

_unpatched_sleep = monkey.get_original("time", "sleep")


@handler("hub.spin", timeout=0.5)
def spin(seconds=1.5):
    """A pure-Python busy loop of ``seconds`` (never yields to the hub); returns this process's pid."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return os.getpid()


@handler("hub.sleep", timeout=0.5)
def unpatched_sleep(seconds=1.0):
    """The unpatched ``time.sleep``: blocks the whole hub for ``seconds``; returns the pid."""
    _unpatched_sleep(seconds)
    return os.getpid()


@handler("hub.pbkdf2", timeout=0.2)
def pbkdf2(iterations=2_000_000):
    """A blocking C call (hashlib.pbkdf2_hmac); returns the pid."""
    hashlib.pbkdf2_hmac("sha256", b"password", b"salt", iterations)
    return os.getpid()


@handler("hub.auto", kind="auto", timeout=5.0)
def auto(seconds=0.3):
    """kind="auto": the first block sends it to the cpu workers; returns the pid."""
    _unpatched_sleep(seconds)
    return os.getpid()


@handler("hub.ok")
def ok():
    """Never blocks; returns the pid."""
    return os.getpid()
