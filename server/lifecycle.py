"""Events the server runner sends to the app (a Pyramid event, so the runner needs no app internals), and how
the app stops under a runner that sends none (waitress, gunicorn)."""
from __future__ import annotations

import atexit
import logging
import os
import signal

log = logging.getLogger(__name__)

#: Set by greenjobs' own server factory (``egg:greenjobs#gevent``), which sends ServerStopping itself.
OUR_RUNNER = False


class ServerStopping:
    """Sent by the runner after it stopped accepting connections; ``grace`` is seconds jobs may still run."""

    def __init__(self, grace: float | None = None):
        self.grace = grace


def stop_with_the_process(runtime) -> None:
    """Make sure ``runtime`` shuts down (running jobs handed back, workers stopped, the store flushed) however
    the process ends: at interpreter exit (gunicorn's workers exit so after their SIGTERM), and, under a runner
    that leaves SIGTERM to its default (waitress), on SIGTERM itself - then the signal is delivered again so
    the process ends as it would have."""
    atexit.register(_at_exit, runtime)
    if OUR_RUNNER or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return
    import gevent
    gevent.signal_handler(signal.SIGTERM, _on_sigterm, runtime)


def _at_exit(runtime) -> None:
    if runtime.accepting:
        log.info("the process exits: shutting the job runtime down")
        runtime.shutdown()


def _on_sigterm(runtime) -> None:
    log.info("SIGTERM: shutting the job runtime down (running jobs get greenjobs.shutdown.grace), then exiting")
    try:
        runtime.shutdown()
    finally:
        for handler in logging.getLogger().handlers:
            handler.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
