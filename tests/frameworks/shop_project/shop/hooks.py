"""Setup hooks of the shop project: greenjobs' Django adapter, and a log line per process that ran it."""
import os

from greenjobs.handlers.frameworks import django as adapter


def _record():
    path = os.environ.get("SHOP_SETUP_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{os.getpid()}\n")


def setup(settings):
    """The adapter: Django set up once per process, each job's connections closed after it."""
    _record()
    return adapter.setup(settings)


def setup_without_closing(settings):
    """What a handler module calling django.setup() itself amounts to: no connection is ever closed."""
    _record()
    adapter.setup(settings)
    return None
