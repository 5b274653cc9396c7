"""SQLAlchemy in handlers: a session per job, removed after it.

``greenjobs.setup = greenjobs.handlers.frameworks.sqlalchemy:setup`` and ``sqlalchemy.session = myapp.db:Session``
(a ``scoped_session``) in ``[app:main]``.  Handlers use the scoped session as usual; after each job, in its
own greenlet or worker thread, ``Session.remove()`` closes that job's session (rolling back what it did not
commit) and returns its connection to the pool.  Give the scoped session ``scopefunc=greenlet.getcurrent`` (or
rely on gevent's patched threading): each io job then has its own session.
"""
from __future__ import annotations

from greenjobs.pool.errors import ConfigurationError
from greenjobs.pool.hooks import app_object


class RemoveSession:
    """Middleware: ``Session.remove()`` after every job."""

    def __init__(self, session):
        self.session = session

    def after_job(self, job, error) -> None:
        self.session.remove()


def setup(settings):
    """Find the scoped session named by ``sqlalchemy.session``; returns the middleware that removes it per job."""
    session = app_object(settings, "sqlalchemy.session", __name__, "myapp.db:Session (a scoped_session)")
    if not hasattr(session, "remove"):
        raise ConfigurationError(f"sqlalchemy.session: {settings.app['sqlalchemy.session']!r} is not a"
                                 " scoped_session (it has no remove())")
    return RemoveSession(session)
