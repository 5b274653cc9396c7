"""A Pyramid include used only by fault tests (``pyramid.includes = tests.faults.crash_probe``).

A request carrying ``X-Test-Crash: after-commit`` that the app answered with 202 kills the whole
server process (SIGKILL) after the view has committed the job and before a byte of the response is
written: the client sees a dropped connection for a job the server did accept.
"""
import os
import signal


def crash_tween_factory(handler, registry):
    def tween(request):
        response = handler(request)
        if request.headers.get("X-Test-Crash") == "after-commit" and response.status_int == 202:
            os.kill(os.getpid(), signal.SIGKILL)
        return response
    return tween


def includeme(config):
    config.add_tween("tests.faults.crash_probe.crash_tween_factory")
