"""Celery 5: gevent pool (``-P gevent -c 1000``) for I/O, prefork (``-c`` CPU count) for CPU.

Broker and result backend are both Redis: Celery 5.x's gevent pool on AMQP with broker heartbeats
on waits ~100 ms per message, and the Redis transport has no such heartbeat. Everything else is
Celery's default (prefetch multiplier 4, fair scheduling, mingle and gossip on).
"""
from __future__ import annotations

from celery import Celery, group
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import ResultSet

from bench.peers import jobs
from bench.peers.base import CPUS, NotReady, Peer

# kombu takes no pool options in the URL: the same limits as the other peers' URLs, as settings
_url = jobs.REDIS_URL.split("?")[0]
app = Celery("gjbench", broker=_url, backend=_url)
app.conf.update(
    broker_transport_options={"max_connections": 5000, "socket_timeout": 30},
    redis_max_connections=5000,
    redis_socket_timeout=30,
    task_default_queue=jobs.NAMESPACE,
    result_expires=3600,
    # result keys carry the run's namespace, so the harness can delete them afterwards
    result_backend_transport_options={"global_keyprefix": f"{jobs.NAMESPACE}:"},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

TASKS = {
    "sleep": app.task(name="bench.sleep")(jobs.sleep),
    "http_get": app.task(name="bench.http_get")(jobs.http_get),
    "pbkdf2": app.task(name="bench.pbkdf2")(jobs.pbkdf2),
    "echo": app.task(name="bench.echo")(jobs.echo),
}


class CeleryPeer(Peer):
    name = "celery"
    has_batch = True

    def worker_commands(self, mode):
        pool = ["-P", "gevent", "-c", "1000"] if mode == "io" else ["-P", "prefork", "-c", str(CPUS)]
        return [["celery", "-A", "bench.peers.celery_peer", "worker", *pool, "-Q", self.namespace,
                 "-l", "WARNING", "-n", f"{self.namespace}@%h"]]

    def configuration(self, mode):
        pool = "-P gevent -c 1000" if mode == "io" else f"-P prefork -c {CPUS}"
        return f"{pool}; Redis broker + result backend (no AMQP heartbeats); group() for batch"

    def submit(self, job, **kwargs):
        return TASKS[job].apply_async(kwargs=kwargs)

    def submit_many(self, job, kwargs_list):
        return group(TASKS[job].s(**kw) for kw in kwargs_list).apply_async().results

    def result(self, handle, timeout=60.0):
        try:
            return handle.get(timeout=timeout, interval=0.005)
        except CeleryTimeout:
            raise NotReady(handle.id) from None

    def wait_all(self, handles, timeout=1200.0):
        ResultSet(handles).join_native(timeout=timeout, interval=0.005)


Peer = CeleryPeer
