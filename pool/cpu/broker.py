"""Broker wiring shared by the server and the CPU workers: URLs, queue names, connections.

Queues (all on the default exchange, routed by name, durable, priority 0-9):
- ``{ns}.jobs.{queue}``: cpu jobs, one queue per handler ``queue`` (default ``cpu``);
- ``{ns}.control``: worker -> server (claims, results, progress);
- ``{ns}.reply.{worker}``: server -> one worker (answers to its claims);
- ``{ns}.dead``: what no one could decode (dead-lettered, never deserialised).
"""
from __future__ import annotations


import contextlib

from kombu import Connection, Queue

from greenjobs.pool.cpu import embedded

ACCEPT = ["json"]          # never pickle: every consumer accepts JSON only


def queue_names(registry) -> list[str]:
    """The job queues of the registry's cpu handlers (``cpu`` when there are none): what workers consume."""
    return sorted({h.queue for h in registry if h.kind == "cpu"}) or ["cpu"]


def one_commit(conn):
    """A context for publishing many messages at once: one transaction on the embedded broker, nothing on AMQP."""
    transport = conn.transport
    return transport.one_commit() if isinstance(transport, embedded.Transport) else contextlib.nullcontext()


def connect(settings, durable: bool = False) -> Connection:
    """A kombu Connection for ``greenjobs.broker.url`` with timeouts, confirms and heartbeats set.

    On the embedded broker, ``durable`` connections commit as the store does (the server's publisher:
    the outbox flag is cleared after its commit, so that commit must survive what the store survives).
    Every other commit there (acks, claims, results, replies) uses NORMAL: one lost in a power cut is
    repaired by a redelivery the claims make harmless, or by the sweep of expired cpu leases.
    """
    url = settings.broker_url
    if url.startswith(embedded.ALIAS + "://"):
        embedded.register()
        # A message reservation lasts longer than any job may run (a dead owner on this host is
        # detected at once, from its pid and start time).
        return Connection(url, transport_options={
            "polling_interval": settings.broker_polling_interval,
            "synchronous": settings.store_synchronous.upper() if durable else "NORMAL",
            "visibility_timeout": settings.job_max_timeout + 3600,
        })
    return Connection(url, connect_timeout=settings.broker_connect_timeout, heartbeat=settings.broker_heartbeat,
                      transport_options={"confirm_publish": True})


def dead_queue(settings) -> Queue:
    """``{ns}.dead``: where undecodable messages go, never deserialised."""
    return Queue(f"{settings.broker_namespace}.dead", routing_key=f"{settings.broker_namespace}.dead", durable=True)


def _dead_letter(settings) -> dict:
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{settings.broker_namespace}.dead"}


def job_queue(settings, name: str) -> Queue:
    """``{ns}.jobs.{name}``: cpu jobs of one handler queue, priorities 0-9, dead-lettered when undecodable."""
    full = f"{settings.broker_namespace}.jobs.{name}"
    return Queue(full, routing_key=full, durable=True, max_priority=10,
                 queue_arguments={"x-max-priority": 10, **_dead_letter(settings)})


def control_queue(settings) -> Queue:
    """``{ns}.control``: worker -> server messages (claims, results, progress)."""
    full = f"{settings.broker_namespace}.control"
    return Queue(full, routing_key=full, durable=True, queue_arguments=_dead_letter(settings))


def reply_queue(settings, worker: str) -> Queue:
    """``{ns}.reply.{worker}``: the server's answers to one worker's claims (transient)."""
    safe = worker.replace(":", "_")
    full = f"{settings.broker_namespace}.reply.{safe}"
    # auto-deleted on RabbitMQ when the worker goes; on the embedded broker it is a few rows
    return Queue(full, routing_key=full, durable=False, auto_delete=True, queue_arguments=_dead_letter(settings))
