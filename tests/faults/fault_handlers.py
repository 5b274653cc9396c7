"""Handlers for fault tests: every start and every completion is appended to ``<ini folder>/executions.log``
(one short line per write, O_APPEND, so lines from the server and from worker processes never interleave)."""
import os
import time

from handlers import current_job, handler


def _record(event: str) -> None:
    line = f"{current_job.id} {current_job.attempt} {event} {os.getpid()}\n".encode()
    fd = os.open(os.path.join(current_job.settings.here, "executions.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
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
