"""``python -m bench.slow_server PORT``: answers every GET after 100 ms (the W1b target server).

gevent.pywsgi with TCP_NODELAY on accepted sockets, so 1,000 concurrent keep-alive clients cost it
little next to the systems measured against it.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

DELAY = 0.1
BODY = b"ok" * 64


def app(environ, start_response):
    gevent.sleep(DELAY)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


class NoDelayHandler(WSGIHandler):
    """pywsgi writes headers and body in two sends: without TCP_NODELAY keep-alive stalls ~40 ms."""

    def __init__(self, sock, *args, **kw):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, *args, **kw)


def serve(wsgi_app, port: int) -> None:
    listener = gevent.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    WSGIServer(listener, wsgi_app, handler_class=NoDelayHandler, log=None, error_log=None).serve_forever()


if __name__ == "__main__":
    serve(app, int(sys.argv[1]))
