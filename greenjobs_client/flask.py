"""Flask: ``Greenjobs(app)`` or ``jobs.init_app(app)`` puts one configured Client on the app.

Config keys: ``GREENJOBS_URL`` (required), ``GREENJOBS_TOKEN``, ``GREENJOBS_TIMEOUT`` (s). The
client lives in ``app.extensions["greenjobs"]``; in a view, ``jobs.client`` (or ``jobs.submit``)
finds the current app's::

    jobs = Greenjobs()

    def create_app():
        app = Flask(__name__)
        app.config["GREENJOBS_URL"] = "http://127.0.0.1:6543"
        jobs.init_app(app)
        return app

    @bp.post("/reports")
    def build_report():
        job = jobs.submit("reports.build", customer_id=7)
        return {"job": job.id, "url": job.url}, 202, {"Location": job.url}
"""
from __future__ import annotations

from typing import Any

from flask import Flask, current_app

from greenjobs_client.client import Client
from greenjobs_client.handles import JobHandle

EXTENSION = "greenjobs"


class Greenjobs:
    """The Flask extension; one instance may serve several apps (the app factory pattern)."""

    def __init__(self, app: Flask | None = None, **client_options: Any):
        """``client_options`` go to every Client this extension makes (``retries``, ``wait_chunk``, ...)."""
        self.client_options = client_options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Make the app's Client from its GREENJOBS_* config; RuntimeError if GREENJOBS_URL is unset."""
        url = app.config.get("GREENJOBS_URL")
        if not url:
            raise RuntimeError("set app.config['GREENJOBS_URL'] (e.g. 'http://127.0.0.1:6543') before "
                               "init_app, so the greenjobs extension knows its server")
        app.extensions[EXTENSION] = Client(url, token=app.config.get("GREENJOBS_TOKEN"),
                                           timeout=float(app.config.get("GREENJOBS_TIMEOUT", 10.0)),
                                           **self.client_options)

    @property
    def client(self) -> Client:
        """The current app's client (needs an app context, as in a view)."""
        try:
            return current_app.extensions[EXTENSION]
        except KeyError:
            raise RuntimeError("the greenjobs extension was not initialised on this app; call "
                               "Greenjobs(app) or jobs.init_app(app)") from None

    def submit(self, handler: str, /, *args: Any, **kwargs: Any) -> JobHandle:
        """``Client.submit`` on the current app's client."""
        return self.client.submit(handler, *args, **kwargs)

    def submit_with(self, handler: str, /, *args: Any, **options: Any) -> JobHandle:
        """``Client.submit_with`` on the current app's client."""
        return self.client.submit_with(handler, *args, **options)
