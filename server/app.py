"""``[app:main] use = egg:greenjobs``: the paste app factory.

This module imports nothing from Pyramid at the top.  With ``egg:greenjobs#gevent`` the server
factory has already patched; under another runner (``egg:waitress#main``) nothing has, so we
patch here, inside the factory function and before Pyramid creates its thread-locals.
"""
from __future__ import annotations


def ensure_patched() -> None:
    """Monkey-patch with gevent unless a server factory already did, before Pyramid makes its thread-locals."""
    from gevent import monkey
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


def main(global_config, **raw_settings):
    """paste.app_factory: a bad setting stops start-up with one line per bad key, not a traceback."""
    ensure_patched()
    from greenjobs.pool.errors import ConfigurationError, StoreUnavailable
    from greenjobs.server.lifecycle import stop_with_the_process
    from greenjobs.server.wsgi import make_app
    try:
        app = make_app(global_config, **raw_settings)
    except (ConfigurationError, StoreUnavailable) as exc:   # a bad setting, a ledger that cannot open
        raise SystemExit(f"greenjobs: {exc}") from None
    runtime = app.registry.greenjobs_runtime
    if runtime.accepting:       # (not under Pyramid's tools) - and whatever runner serves it, it stops with it
        stop_with_the_process(runtime)
    return app
