"""Pyramid: ``config.include("greenjobs_client.pyramid")`` adds ``request.jobs``, one Client per app.

Settings (the app's ini): ``greenjobs_client.url`` (required), ``greenjobs_client.token``,
``greenjobs_client.timeout`` (s). The client is made once, at configuration time, kept on the
registry and shared by every request (and thread) of the app, so connections are reused::

    def main(global_config, **settings):
        with Configurator(settings=settings) as config:
            config.include("greenjobs_client.pyramid")
            ...

    @view_config(route_name="reports", request_method="POST", renderer="json")
    def build_report(request):
        job = request.jobs.submit("reports.build", customer_id=7)
        request.response.status_code = 202
        return {"job": job.id, "url": job.url}
"""
from __future__ import annotations

from greenjobs_client.client import Client

SETTINGS_PREFIX = "greenjobs_client."


def client_from_settings(settings: dict) -> Client:
    """A Client from ``greenjobs_client.*`` settings."""
    url = settings.get(SETTINGS_PREFIX + "url")
    if not url:
        raise ValueError("set greenjobs_client.url (e.g. http://127.0.0.1:6543) in the app's settings "
                         "to use greenjobs_client.pyramid")
    return Client(url, token=settings.get(SETTINGS_PREFIX + "token") or None,
                  timeout=float(settings.get(SETTINGS_PREFIX + "timeout", 10.0)))


def _jobs(request) -> Client:
    return request.registry.greenjobs_client


def includeme(config) -> None:
    """Pyramid include hook: one Client for the app, kept on the registry and shared as ``request.jobs``."""
    config.registry.greenjobs_client = client_from_settings(config.get_settings())
    config.add_request_method(_jobs, "jobs", reify=True)
