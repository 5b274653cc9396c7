"""Handlers used only by the browser tests: ``greenjobs.handlers = greenjobs.handlers.builtin tests.browser.browser_handlers``."""
from __future__ import annotations

from greenjobs import handler
from greenjobs.pool.context import current_job


@handler("browser.progress")
def progress(steps: int = 20, pause: float = 0.15):
    """Report progress ``steps`` times, ``pause`` seconds apart, so a page can watch the bar move."""
    import gevent
    for step in range(1, steps + 1):
        gevent.sleep(pause)
        current_job.progress(step / steps, f"step {step} of {steps}")
    return {"steps": steps}
