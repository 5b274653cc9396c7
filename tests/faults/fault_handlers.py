"""Handlers for fault tests: every start and every completion is appended to ``<ini folder>/executions.log``,
or to the file ``$GREENJOBS_TEST_EXECUTIONS`` names (one log for several hosts, each with its own ini folder);
one short line per write, O_APPEND, so lines from the server and from worker processes never interleave."""
import os
import time

from greenjobs import current_job, handler


def _record(event: str) -> None:
    line = f"{current_job.id} {current_job.attempt} {event} {os.getpid()}\n".encode()
    path = os.environ.get("GREENJOBS_TEST_EXECUTIONS") or os.path.join(current_job.settings.here, "executions.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@handler("fault.io", timeout=120)
def fault_io(seconds=0.5):
    import gevent
    _record("start")
    gevent.sleep(seconds)
    _record("done")
    return {"slept": seconds}


@handler("fault.cpu", kind="cpu", timeout=120)
def fault_cpu(seconds=0.2):
    _record("start")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    _record("done")
    return {"spun": seconds}


@handler("fault.swallow", timeout=60)
def fault_swallow(seconds=30.0):
    """A badly written handler: a bare ``except:`` swallows the timeout (and any kill), then goes on."""
    import gevent
    _record("start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            gevent.sleep(0.05)
        except:  # noqa: E722 (the point of the test)
            pass
    _record("done")
    return {"swallowed": True}


@handler("fault.flaky", max_retries=3)
def fault_flaky(fail_times=2):
    """Fails while the attempt is at most ``fail_times``, then succeeds."""
    _record("start")
    if current_job.attempt <= fail_times:
        _record("failed")
        raise RuntimeError(f"attempt {current_job.attempt} fails on purpose")
    _record("done")
    return {"attempt": current_job.attempt}


@handler("fault.gate", kind="cpu", timeout=120)
def fault_gate(path, limit=60.0):
    """A cpu job that waits (in its worker) until ``path`` exists: running until the test says."""
    _record("start")
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    _record("done")
    return {"waited": True}
