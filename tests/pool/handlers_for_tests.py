"""Handlers that misbehave on purpose."""
import gevent

from greenjobs import current_job, handler

CLEANUPS = []


@handler("test.swallow_everything", timeout=0.2)
def swallow_everything(seconds=5):
    """A handler with a bare except around a long sleep: it swallows Timeout and GreenletExit."""
    for _ in range(3):
        try:
            gevent.sleep(seconds)
        except:  # noqa: E722  (that is the point)
            pass
    return "finished anyway"


@handler("test.cleanup")
def cleanup(seconds=30):
    try:
        gevent.sleep(seconds)
    finally:
        CLEANUPS.append(current_job.id)


@handler("test.not_json")
def not_json():
    return {"a": object()}


@handler("test.progress")
def progress():
    current_job.progress(0.5, "half")
    gevent.sleep(0.05)
    return current_job.id


@handler("test.inner_timeout")
def inner_timeout():
    with gevent.Timeout(0.01):
        gevent.sleep(1)


@handler("test.big_result_later")
def big_result_later():
    gevent.sleep(0.3)
    return "x" * 200_000


@handler("test.retry_bad_delay")
def retry_bad_delay():
    from greenjobs import Retry
    if current_job.attempt == 1:
        raise Retry("again", delay="soon")
    return "ok"
