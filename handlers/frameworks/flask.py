"""Flask in handlers: ``greenjobs.setup = greenjobs.handlers.frameworks.flask:setup`` and
``flask.app = myapp:create_app`` (an app object, or a factory called with no arguments) in ``[app:main]``.

Every job runs inside the app's application context (``current_app``, ``g``, extensions such as
Flask-SQLAlchemy), pushed in the job's greenlet or worker thread and popped after it, so nothing of one job's
``g`` reaches the next.
"""
from __future__ import annotations

from contextvars import ContextVar

from greenjobs.pool.hooks import app_object


class AppContext:
    """Middleware: one application context around each job (kept in a ContextVar: each job's greenlet or
    thread has its own)."""

    def __init__(self, app):
        self.app = app
        self._pushed: ContextVar = ContextVar("greenjobs_flask_context", default=None)

    def before_job(self, job) -> None:
        context = self.app.app_context()
        context.push()
        self._pushed.set(context)

    def after_job(self, job, error) -> None:
        context = self._pushed.get()
        if context is not None:
            self._pushed.set(None)
            context.pop(error)


def setup(settings):
    """Load the Flask app named by ``flask.app``; returns the middleware that pushes its context per job."""
    app = app_object(settings, "flask.app", __name__, "myapp:app (or myapp:create_app)")
    if not hasattr(app, "app_context"):
        app = app()                              # a factory
    return AppContext(app)
