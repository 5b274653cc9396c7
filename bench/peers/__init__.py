"""The peers greenjobs is measured against, each in its own module, imported only when it runs.

``python -m bench.peers NAME …`` drives one peer in a fresh, unpatched interpreter (the way its
own clients run) and prints its measurements as JSON; ``bench.__main__`` starts one per peer.
"""
from __future__ import annotations

import importlib
import os

NAMES = ("celery", "dramatiq", "huey", "rq")
MODULES = {name: f"bench.peers.{name}_peer" for name in NAMES}
#: the broker each peer runs on here, and where it answers
BROKERS = {name: ("redis", "127.0.0.1", 6379) for name in NAMES}


def load(name: str, namespace: str, redis_url: str):
    """The Peer class of ``name``, its task module configured for this run's namespace and broker.

    The task module reads both from the environment at import, as its worker processes do.
    """
    os.environ.update(BENCH_NS=namespace, BENCH_REDIS=redis_url)
    return importlib.import_module(MODULES[name]).Peer
