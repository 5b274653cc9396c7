"""``python -m bench.hello pywsgi|waitress|pyramid PORT``: the W6 hello-world ceilings.

The same client that submits W3's jobs drives these, so the submit path reads as a fraction of
what the HTTP server (and Pyramid on it) allows on this machine.
"""
from __future__ import annotations

import sys

BODY = b'{"hello": "world"}'


def app(environ, start_response):
    """A bare WSGI hello world that reads the request body like a submit would."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def pyramid_app():
    """A hello-world Pyramid app: one route, one view returning JSON from the request body."""
    from pyramid.config import Configurator

    def hello(request):
        return {"hello": request.json_body if request.body else "world"}

    with Configurator() as config:
        config.add_route("hello", "/")
        config.add_view(hello, route_name="hello", renderer="json")
        return config.make_wsgi_app()


def main(kind: str, port: int) -> None:
    if kind == "waitress":
        from gevent import monkey
        monkey.patch_all()           # as greenjobs runs under waitress: its threads become greenlets
        import waitress
        waitress.serve(app, host="127.0.0.1", port=port, threads=64, _quiet=True)
        return
    from gevent import monkey
    monkey.patch_all()
    from bench.slow_server import serve
    serve(pyramid_app() if kind == "pyramid" else app, port)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
