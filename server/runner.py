"""``[server:main] use = egg:greenjobs#gevent``: serve the app with gevent.pywsgi.

pserve loads this entry point before the app, so the *factory function* below is the earliest
point we control: it monkey-patches there (not at import, which would break ``pserve --reload``;
and ``server/__init__.py`` stays empty so nothing imports Pyramid's thread-locals first).
"""
from __future__ import annotations

from greenjobs.pool.errors import ConfigurationError
from greenjobs.pool.settings import Setting, as_bool, as_float, as_int, as_str, parse

#: Keys of the [server:main] section (not prefixed: they belong to the server, as with waitress).
TABLE = (
    Setting("host", as_str, "127.0.0.1", "address to bind; loopback unless you mean it"),
    Setting("port", as_int(0, 65535), 6543, "TCP port"),
    Setting("max_connections", as_int(1, 1_000_000), 20_000,
            "open connections at once (long-polls included); more wait in the kernel backlog"),
    Setting("backlog", as_int(1, 65535), 2048, "listen backlog"),
    Setting("idle_timeout", as_float(0.1, 86400.0), 75.0, "seconds a keep-alive connection may sit idle"),
    Setting("header_timeout", as_float(0.1, 3600.0), 15.0, "seconds a client has to send a request's headers"),
    Setting("max_header_bytes", as_int(1024, 1 << 20), 65536, "largest request header block"),
    Setting("stop_timeout", as_float(0.0, 3600.0), 15.0, "seconds in-flight requests get on SIGTERM"),
    Setting("nodelay", as_bool, True, "TCP_NODELAY on accepted sockets (avoids a 40 ms Nagle stall per response)"),
)


def with_command_line(global_conf: dict, kw: dict, section: str = "server:main") -> tuple[dict, list[str]]:
    """The server settings with ``pserve config.ini var=value`` applied, and the keys such a variable tried, in
    vain, to set.

    PasteDeploy interpolates ``port = %(http_port)s`` with the ini's own [DEFAULT] (6543), not with the
    command line's ``http_port=7000``, and drops a section key that a command-line variable names
    (``port=7000``).  So the section is read again as written: a ``%(var)s`` value is interpolated with the
    command line's variables, and a key written in the section that the command line also names is reported."""
    import configparser
    path = global_conf.get("__file__")
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    if not path or not parser.read(path) or not parser.has_section(section):
        return kw, []
    written = {k: v for k, v in parser.items(section, raw=True)
               if k not in parser.defaults() and (k in kw or k in {s.key for s in TABLE})}
    values, shadowed = dict(kw), []
    given = {k for k in global_conf if k not in parser.defaults() and k not in ("here", "__file__")}
    for key, raw in written.items():
        if key in given and f"%({key})s" not in raw:
            shadowed.append(key)        # ``port=7000``, with ``port = 6543`` (or ``%(http_port)s``) written
        if "%(" in raw:
            try:
                values[key] = raw % {**parser.defaults(), **global_conf}
            except (KeyError, ValueError, TypeError):
                pass                    # left as PasteDeploy made it
        else:
            values[key] = raw
    return values, sorted(shadowed)


def gevent_server_factory(global_conf, **kw):
    """paste.server_factory: validate the server settings, patch, return ``serve(app)``."""
    kw, shadowed = with_command_line(global_conf, kw)
    unknown = sorted(set(kw) - {s.key for s in TABLE})
    try:
        if unknown:
            raise ConfigurationError(f"[server:main]: unknown setting(s) {', '.join(unknown)}; "
                                     f"known: {', '.join(s.key for s in TABLE)}")
        if shadowed:
            key = shadowed[0]
            raise ConfigurationError(f"{key}={global_conf[key]} on the command line does not change [server:main]"
                                     f" {key} (the ini sets it): use the ini's variable instead, e.g. "
                                     f"`pserve config.ini http_port=NNNN` for the port")
        options = parse([TABLE], kw)
    except ConfigurationError as exc:
        raise SystemExit(f"greenjobs: {exc}") from None
    from greenjobs.server import lifecycle
    from greenjobs.server.app import ensure_patched
    ensure_patched()
    lifecycle.OUR_RUNNER = True             # our runner sends ServerStopping on SIGTERM itself

    def serve(app) -> None:
        from greenjobs.server.httpserver import serve_forever
        serve_forever(app, options)

    return serve
