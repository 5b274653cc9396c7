"""gevent.pywsgi with the limits it lacks: a connection cap, header and idle timeouts, a header
size limit, TCP_NODELAY, and a graceful stop on SIGTERM/SIGINT.  Imported only after patching.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import socket

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from greenjobs.server.lifecycle import ServerStopping

log = logging.getLogger(__name__)
access_log = logging.getLogger("greenjobs.server.access")
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


#: A field name is an RFC 9110 token: no whitespace (before the colon it is a smuggling vector), no separators.
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: What a field value may not hold (RFC 9110 §5.5): control characters other than HTAB, a bare CR among them
#: (parsers that split lines on it would see another field, a smuggling vector).
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Most header fields a request may carry (http.client's limit).
MAX_FIELDS = 100


class RequestHeaders:
    """A request's header fields: what pywsgi asks of its ``MessageClass`` (``get``, ``getheader``,
    ``typeheader``, ``headers``, ``status``, ``del``), plus ``get_all`` for the framing check.

    Read by :func:`read_headers` with a line split, not http.client's email parser (~56 → ~6 µs a request
    here, paid by every request)."""

    __slots__ = ("_fields", "_by_name", "status")

    def __init__(self, fields: list[tuple[str, str]]):
        self._fields = fields
        self._by_name: dict[str, list[str]] = {}
        for name, value in fields:
            self._by_name.setdefault(name.lower(), []).append(value)
        self.status = ""                # pywsgi refuses a request whose headers set a status

    def get(self, name: str, default=None):
        values = self._by_name.get(name.lower())
        return values[0] if values else default

    getheader = get

    def get_all(self, name: str) -> list[str] | None:
        return self._by_name.get(name.lower())

    def __delitem__(self, name: str) -> None:
        lowered = name.lower()
        self._by_name.pop(lowered, None)
        self._fields = [(k, v) for k, v in self._fields if k.lower() != lowered]

    @property
    def typeheader(self) -> str | None:
        return self.get("content-type")

    @property
    def headers(self):
        """Each field as ``"Name: value\r\n"`` (how pywsgi builds the environ's ``HTTP_*`` keys)."""
        return [f"{name}: {value}\r\n" for name, value in self._fields]


def read_headers(rfile, max_bytes: int) -> RequestHeaders:
    """Read a request's header fields up to the blank line; ValueError (a 400 that closes) for more than
    ``max_bytes``, more than MAX_FIELDS fields, a line that is not ``token: value`` ended by CRLF (a bare LF
    or CR is read as a line end by some parsers and not by others), a block cut short by the end of the
    stream, a value with a control character, or an obs-fold continuation line (RFC 9112 §5.2 allows
    refusing it; folding is another smuggling vector)."""
    fields = []
    left = max_bytes
    while True:
        line = rfile.readline(left + 2)         # (+2: the blank line ending them is not counted)
        if line == b"\r\n":
            return RequestHeaders(fields)
        left -= len(line)
        if left < 0:
            raise ValueError(f"request headers exceed {max_bytes} bytes")
        if not line.endswith(b"\r\n"):
            raise ValueError("request headers cut short, or a line not ended by CRLF" if not line.endswith(b"\n")
                             else f"a header line ended by a bare LF: {line[:80]!r}")
        if len(fields) == MAX_FIELDS:
            raise ValueError(f"more than {MAX_FIELDS} header fields")
        name, colon, value = line[:-2].decode("latin-1").partition(":")
        value = value.strip(" \t")
        if not colon or not _FIELD_NAME.fullmatch(name) or _BAD_VALUE.search(value):
            raise ValueError(f"malformed header line {line[:80]!r}")
        fields.append((name, value))


def check_framing(headers) -> None:
    """Refuse (ValueError: a 400 that closes) a request whose body length is ambiguous, the stuff of
    request smuggling behind a proxy: Content-Length with Transfer-Encoding, two Content-Lengths, a
    Transfer-Encoding other than chunked, or a Content-Length that is not plain digits."""
    lengths = headers.get_all("Content-Length") or []
    encodings = headers.get_all("Transfer-Encoding") or []
    if len(lengths) > 1:
        raise ValueError("more than one Content-Length header")
    if encodings and lengths:
        raise ValueError("both Content-Length and Transfer-Encoding")
    # the values as read (read_headers trims only spaces and tabs): str.strip() would also drop \xa0 and \x85,
    # which a proxy in front does not
    if len(encodings) > 1 or (encodings and encodings[0].lower() != "chunked"):
        raise ValueError("the only Transfer-Encoding accepted is chunked")
    if lengths and not (lengths[0].isascii() and lengths[0].isdigit()):
        raise ValueError("Content-Length is not a number")


class _BoundedInput:
    """pywsgi's request body, whose ``_discard`` (run after the response, to read what the application left)
    is bounded: a client that announced more than it sends (a 408) or a large body refused unread (a 413)
    would otherwise hold the connection, and a ``max_connections`` slot, forever."""

    #: What is read of an unread body after the response (so the client sees the answer before the close,
    #: not a reset): at most this many bytes, for at most ``header_timeout`` seconds.
    LINGER_BYTES = 4 << 20

    def __init__(self, body, handler):
        self._body, self._handler = body, handler
        self.read, self.readline, self.readlines = body.read, body.readline, body.readlines

    def __iter__(self):
        return iter(self._body)

    def _discard(self) -> None:
        handler, body = self._handler, self._body
        if not body.chunked_input and body.position >= (body.content_length or 0):
            return                                  # all read: the connection stays in step
        drained, done = 0, False
        with gevent.Timeout(handler.header_timeout, False):
            try:
                while drained < self.LINGER_BYTES:
                    data = body.read(65536)
                    if not data:
                        done = True
                        break
                    drained += len(data)
            except (OSError, ValueError):            # cut short or badly chunked: nothing more to read
                pass
        if not done:
            handler.close_connection = True        # the rest is too slow or too large to read: close


class LimitedHandler(WSGIHandler):
    """Closes connections that idle too long or dribble their headers (slowloris)."""

    idle_timeout = 75.0
    header_timeout = 15.0
    max_header_bytes = 65536

    def MessageClass(self, rfile, *args):
        """The header fields (:func:`read_headers`, within ``max_header_bytes``), then the framing check (before
        pywsgi drops a Content-Length beside chunked)."""
        headers = read_headers(rfile, self.max_header_bytes)
        check_framing(headers)
        return headers

    served = 0             # request lines read on this connection

    def read_requestline(self):
        """Wait for the next request line: ``header_timeout`` s on a new connection (one that sends nothing
        must not hold a slot for long), ``idle_timeout`` s between kept-alive requests; "" closes."""
        if self.server.stopping:
            return ""      # stopping: no new request on a kept-alive connection
        idle = self.server.idle
        me = gevent.getcurrent()
        idle.add(me)       # waiting for a request: safe to close at once on shutdown
        try:
            with gevent.Timeout(self.idle_timeout if self.served else self.header_timeout, False):
                line = super().read_requestline()
                self.served += 1
                return line
            return ""      # idle or silent connection: close it quietly
        finally:
            idle.discard(me)

    def read_request(self, raw_requestline):
        """Read the headers within ``header_timeout`` s (and ``max_header_bytes``); ValueError (a 400) if not."""
        with gevent.Timeout(self.header_timeout, False):
            return super().read_request(raw_requestline)
        raise ValueError(f"request headers not received within {self.header_timeout} s")

    def get_environ(self):
        """The WSGI environ plus ``greenjobs.socket``, so long-lived responses can bound their writes."""
        environ = super().get_environ()
        # long-lived responses (GET /events) bound how long a write may wait for a client that
        # stopped reading, by setting a timeout on the connection's socket
        environ["greenjobs.socket"] = self.socket
        if environ.get("wsgi.input") is self.wsgi_input:
            self.wsgi_input = environ["wsgi.input"] = _BoundedInput(self.wsgi_input, self)
        return environ

    def _handle_client_error(self, ex):
        # pywsgi's hook for unparseable requests.  A hostile or broken client is not a server
        # error: one INFO line, no traceback, and a 400 that closes the connection.
        log.info("bad request from %s: %s", self.client_address, getattr(ex, "formatted_message", None) or ex)
        return ("400", BAD_REQUEST)

    def log_request(self):
        """One access-log line per request, formatted only when greenjobs.server.access logs INFO."""
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(self.format_request())


class Server(WSGIServer):
    """WSGIServer with LimitedHandler, TCP_NODELAY and a set of idle connections to close on a graceful stop."""

    handler_class = LimitedHandler
    nodelay = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.idle: set = set()          # connection greenlets waiting for their next request
        self.stopping = False

    def close_idle(self) -> None:
        """Close keep-alive connections that are between requests; busy ones finish first."""
        self.stopping = True
        for greenlet in list(self.idle):
            greenlet.kill(block=False)

    def handle(self, sock, address):
        """Set TCP_NODELAY (so small answers are not held back by Nagle), then serve the connection."""
        if self.nodelay:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        super().handle(sock, address)


def raise_open_files_limit(wanted: int) -> int | None:
    """Long-polls are connections: lift the soft limit on open files toward ``wanted`` (up to the hard one).
    Returns the soft limit in force afterwards (None: unlimited or unknown)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("raised the open-files limit from %s to %s", soft, target)
            soft = target
        return None if soft == resource.RLIM_INFINITY else soft
    except (ImportError, ValueError, OSError) as exc:
        log.warning("could not raise the open-files limit: %s", exc)
        return None


#: File descriptors kept for what is not a client connection (store, broker, workers, outbound HTTP).
RESERVED_FDS = 512


def fit_connections(wanted: int, open_files: int | None) -> int:
    """``max_connections``, lowered (with a warning) so the open-files limit can hold it: past that limit
    accept() fails with EMFILE and the server stops answering even /health."""
    if open_files is None or wanted + RESERVED_FDS <= open_files:
        return wanted
    fitted = max(1, open_files - RESERVED_FDS)
    log.warning("max_connections = %d does not fit the open-files limit (%d); serving at most %d connections "
                "(raise the limit with ulimit -n or systemd's LimitNOFILE)", wanted, open_files, fitted)
    return fitted


#: Seconds jobs and requests get when ``pserve --reload`` restarts the server (hupper waits 1 s, then kills).
RELOAD_GRACE = 0.3


def reloading() -> bool:
    """Whether this server runs under ``pserve --reload``'s reloader (hupper)."""
    try:
        import hupper
    except ImportError:
        return False
    return hupper.is_active()


def serve_forever(app, options) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then stop accepting and give in-flight requests ``stop_timeout`` s."""
    max_connections = fit_connections(options.max_connections, raise_open_files_limit(options.max_connections + 1024))
    handler = type("Handler", (LimitedHandler,), {"idle_timeout": options.idle_timeout,
                                                  "header_timeout": options.header_timeout,
                                                  "max_header_bytes": options.max_header_bytes})
    server = Server((options.host, options.port), app, spawn=Pool(max_connections),
                    handler_class=handler, backlog=options.backlog, log=None, error_log=log)
    server.nodelay = options.nodelay
    server.stop_timeout = options.stop_timeout
    stopping: list = []
    stopped = gevent.event.Event()

    def stop(signum):
        if stopping:
            return
        stopping.append(signum)
        # under ``pserve --reload`` (hupper), the reloader kills us 1 s after its SIGTERM: hand jobs back at once
        grace = RELOAD_GRACE if reloading() else None
        timeout = min(options.stop_timeout, RELOAD_GRACE) if grace is not None else options.stop_timeout
        log.info("signal %s: stopping (in-flight requests get %s s%s)", signum, timeout,
                 "; reloading: running jobs are handed back" if grace is not None else "")
        try:
            # Stop accepting first, so the port is free; jobs get their grace while requests finish.
            server.close()
            server.close_idle()
            registry = getattr(app, "registry", None)
            if registry is not None:
                registry.notify(ServerStopping(grace))
            server.stop(timeout=timeout)
        finally:
            stopped.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop, signum)
    server.init_socket()
    print(f"greenjobs serving on http://{options.host}:{server.server_port}", flush=True)
    server.serve_forever()
    if stopping:
        stopped.wait()      # serve_forever returns as soon as the listener closes; the stop is not done yet
        if reloading():     # all is handed back and the store closed: exit before hupper's 1 s runs out
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(0)
