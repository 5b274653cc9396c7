"""The live web dashboard served at ``/``: one HTML page, one script, one stylesheet, no build step.

``config.include("greenjobs.server.dashboard")`` adds the ``dashboard`` route and the static view.  The
Pyramid wiring lives in :mod:`greenjobs.server.dashboard.views`, so importing this package imports nothing.
"""


def includeme(config) -> None:
    """Pyramid include hook: defer to the views module, so importing this package imports no Pyramid."""
    config.include("greenjobs.server.dashboard.views")
