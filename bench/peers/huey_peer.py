"""Huey: ``huey_consumer -k greenlet -w 1000`` for I/O, ``-k process -w`` CPU count for CPU.

RedisHuey with ``notify_result=True`` so a waiting client is woken by BLPOP rather than polling
with backoff (Huey's default, which adds tens of ms to every round trip).
"""
from __future__ import annotations

from huey import RedisHuey
from huey.exceptions import ResultTimeout

from bench.peers import jobs
from bench.peers.base import CPUS, NotReady, Peer

huey = RedisHuey(jobs.NAMESPACE, url=jobs.REDIS_URL, notify_result=True)

TASKS = {name: huey.task(name=name)(getattr(jobs, name)) for name in ("sleep", "http_get", "pbkdf2", "echo")}


class HueyPeer(Peer):
    name = "huey"

    def worker_commands(self, mode):
        if mode == "io":
            # Huey's docs: greenlet workers need the consumer process monkey-patched first
            return [["python", "-m", "bench.peers.huey_gevent", "bench.peers.huey_peer.huey",
                     "-k", "greenlet", "-w", "1000", "-q"]]
        return [["huey_consumer", "bench.peers.huey_peer.huey", "-k", "process", "-w", str(CPUS), "-q"]]

    def configuration(self, mode):
        workers = "-k greenlet -w 1000 (gevent-patched)" if mode == "io" else f"-k process -w {CPUS}"
        return f"huey_consumer {workers}; RedisHuey, notify_result=True"

    def submit(self, job, **kwargs):
        return TASKS[job](**kwargs)

    def result(self, handle, timeout=60.0):
        try:
            return handle.get(blocking=True, timeout=timeout)
        except ResultTimeout:
            raise NotReady(handle.id) from None


Peer = HueyPeer
