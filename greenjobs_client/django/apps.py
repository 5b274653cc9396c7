"""The outbox as a Django app: ``INSTALLED_APPS = [..., "greenjobs_client.django"]``, then ``migrate``."""
from __future__ import annotations

from django.apps import AppConfig


class GreenjobsConfig(AppConfig):
    """Label ``greenjobs`` (migrations, admin); one table, ``greenjobs_outbox``."""

    name = "greenjobs_client.django"
    label = "greenjobs"
    verbose_name = "greenjobs outbox"
    # fixed here, so the app's migration never depends on the project's DEFAULT_AUTO_FIELD
    default_auto_field = "django.db.models.BigAutoField"
