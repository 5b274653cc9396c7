"""Django in handlers: ``greenjobs.setup = greenjobs.handlers.frameworks.django:setup``.

- ``django.settings_module = mysite.settings`` in ``[app:main]`` (else ``$DJANGO_SETTINGS_MODULE``);
- ``django.setup()`` once per process (the server, every cpu worker), before the handler modules import models;
  the process's time zone is left as it was (Django sets ``TZ`` to ``TIME_ZONE``, which would move every log
  line's clock);
- after every job, in both pools, the job's database connections are closed (each io job's greenlet has its
  own, as each request's thread does in Django): without it every job leaves one open, until the database
  refuses more.  Like Celery's Django fix-up.
"""
from __future__ import annotations

import os
import time

from greenjobs.pool.errors import ConfigurationError


class CloseConnections:
    """Middleware: close the connections the job opened (the current greenlet's or thread's), after it ends."""

    def after_job(self, job, error) -> None:
        from django.db import connections
        connections.close_all()


def setup(settings):
    """Configure and set up Django in this process; returns the middleware that closes each job's connections."""
    module = settings.app.get("django.settings_module") or os.environ.get("DJANGO_SETTINGS_MODULE")
    if not module:
        raise ConfigurationError("greenjobs.handlers.frameworks.django: set django.settings_module = mysite.settings"
                                 " in [app:main] (or DJANGO_SETTINGS_MODULE)")
    os.environ["DJANGO_SETTINGS_MODULE"] = module
    import django
    zone = os.environ.get("TZ")
    django.setup()
    if os.environ.get("TZ") != zone:            # keep this process's clock (Django's TIME_ZONE is the app's)
        if zone is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = zone
        if hasattr(time, "tzset"):
            time.tzset()
    return CloseConnections()
