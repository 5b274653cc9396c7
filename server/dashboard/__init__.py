"""The live web dashboard served at ``/``: one HTML page, one script, one stylesheet, no build step.

``config.include("server.dashboard")`` adds the ``dashboard`` route and the static view.  The
Pyramid wiring lives in :mod:`server.dashboard.views`, so importing this package imports nothing.
"""


def includeme(config) -> None:
    config.include("server.dashboard.views")
