"""``greenjobs-worker --io config.ini``: run io jobs with no HTTP server, to scale them apart from the web tier.

io jobs wait in the ledger until some runtime with a free slot takes them (``JobStore.take``), so a
process that serves no requests can run them as well as a server can: this is that process.  It is
the server's runtime without the app — the same store, pool, leases, maintenance duties and cluster
watch, in the servers table as role ``io-worker`` — so everything a server promises about an io job
(fencing, adoption when it dies, cancel from any server) holds for the jobs it runs.  It starts no
cpu workers (``greenjobs-worker config.ini`` does); it does join the cpu dispatch, answering
workers' claims and recording their results like any server.  SIGTERM or SIGINT stops it the way
a server stops: running jobs get ``greenjobs.shutdown.grace`` seconds, the rest go back to the ledger.
"""
from __future__ import annotations


def run(ini: str) -> int:
    """Run the io runtime of ``ini`` until SIGTERM/SIGINT; 0 on a clean stop, 2 on a bad setting or ledger."""
    from gevent import monkey
    monkey.patch_all()                   # before anything imports socket, threading or ssl
    import logging
    import signal

    import gevent
    from gevent.event import Event

    from greenjobs.pool.cpu.worker import load_config
    from greenjobs.pool.errors import ConfigurationError, StoreUnavailable
    from greenjobs.pool.observe import signals
    from greenjobs.pool.runtime import Runtime

    log = logging.getLogger("greenjobs.pool.io.worker")
    try:
        settings, registry, middleware = load_config(ini)
        signals.connect_listed(settings.signals)
        runtime = Runtime(settings, registry, ini=None, role="io-worker", middleware=middleware).start()
    except (ConfigurationError, StoreUnavailable) as exc:
        print(f"greenjobs-worker: {exc}")
        return 2
    stop = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    log.info("io worker running io jobs from %s (pool of %d); no HTTP", runtime.store.where, settings.pool_size)
    stop.wait()
    log.info("io worker stopping")
    runtime.shutdown()
    return 0
