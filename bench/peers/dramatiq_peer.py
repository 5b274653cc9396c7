"""Dramatiq 2: ``dramatiq-gevent -p 1 -t 1000`` for I/O, ``dramatiq -p`` CPU count ``-t 1`` for CPU.

Redis broker with the Results middleware on a Redis backend (how Dramatiq returns values to a
client); actors have ``max_retries=0`` so a failure shows instead of being retried for minutes.
"""
from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import ResultTimeout, Results
from dramatiq.results.backends import RedisBackend

from bench.peers import jobs
from bench.peers.base import CPUS, NotReady, Peer

broker = RedisBroker(url=jobs.REDIS_URL, namespace=jobs.NAMESPACE)
backend = RedisBackend(url=jobs.REDIS_URL, namespace=f"{jobs.NAMESPACE}-results")
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


def _actor(fn, name):
    return dramatiq.actor(fn, actor_name=name, store_results=True, max_retries=0)


ACTORS = {name: _actor(getattr(jobs, name), name) for name in ("sleep", "http_get", "pbkdf2", "echo")}


class DramatiqPeer(Peer):
    name = "dramatiq"

    def worker_commands(self, mode):
        if mode == "io":
            return [["dramatiq-gevent", "bench.peers.dramatiq_peer", "-p", "1", "-t", "1000"]]
        return [["dramatiq", "bench.peers.dramatiq_peer", "-p", str(CPUS), "-t", "1"]]

    def configuration(self, mode):
        workers = "dramatiq-gevent -p 1 -t 1000" if mode == "io" else f"dramatiq -p {CPUS} -t 1"
        return f"{workers}; Redis broker, Results middleware on Redis"

    def submit(self, job, **kwargs):
        return ACTORS[job].send_with_options(kwargs=kwargs)

    def result(self, handle, timeout=60.0):
        try:
            return handle.get_result(block=True, timeout=int(timeout * 1000))
        except ResultTimeout:
            raise NotReady(handle.message_id) from None


Peer = DramatiqPeer
