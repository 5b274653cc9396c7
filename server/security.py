"""Access control: bearer tokens with roles, a signed session cookie for the dashboard, CSRF for the cookie.

Off (everything permitted) when no tokens are configured and the server binds loopback only: the
development default.  A server that binds another address refuses to start without tokens, unless
``greenjobs.auth.insecure = true`` says that its network is trusted.  Token parse errors name the
entry by position and never echo a token, so a bad config.ini does not leak secrets into a log.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass

from pyramid.csrf import get_csrf_token, new_csrf_token
from pyramid.request import RequestLocalCache
from pyramid.security import NO_PERMISSION_REQUIRED, Allowed, Denied, forget, remember
from pyramid.session import SignedCookieSessionFactory
from pyramid.view import view_config

from greenjobs.pool.errors import ConfigurationError
from greenjobs.server.body import read_json
from greenjobs.server.problems import Problem

__all__ = ["GRANTS", "Identity", "Token", "TokenSecurityPolicy", "bind_hosts", "is_loopback", "parse_tokens"]

log = logging.getLogger(__name__)

#: What each role may do.  Views declare one permission each: ``read`` (GET of jobs, batches,
#: handlers, events, metrics), ``submit`` (POST /jobs, POST /jobs/batch), ``admin`` (cancel, retry).
GRANTS = {
    "read": frozenset({"read"}),
    "submit": frozenset({"submit"}),
    "admin": frozenset({"read", "submit", "admin"}),
}
COOKIE = "greenjobs_session"
CHALLENGE = 'Bearer realm="greenjobs"'
_MIN_TOKEN, _MIN_SECRET = 16, 32


@dataclass(frozen=True)
class Token:
    """One configured token: the SHA-256 of its text (never the text itself) and its roles."""

    digest: bytes
    roles: frozenset[str]
    position: int

    @property
    def permissions(self) -> frozenset[str]:
        """What the token's roles grant together (see GRANTS)."""
        return frozenset().union(*(GRANTS[role] for role in self.roles))


@dataclass(frozen=True)
class Identity:
    """Who sent a request: a token's id (an HMAC of its digest), its roles, and how it came."""

    id: str
    roles: frozenset[str]
    permissions: frozenset[str]
    via: str        # "bearer" or "session"
    #: Stable across restarts (derived from the token's digest, not from the per-start session secret):
    #: what scopes a principal's Idempotency-Keys, so one token can never reach another's jobs by key.
    principal: str = ""


def parse_tokens(entries) -> tuple[Token, ...]:
    """``TOKEN:ROLE[,ROLE]`` or ``sha256:HEX:ROLE[,ROLE]`` entries -> tokens.

    Raises:
        ConfigurationError: one line per bad entry, naming it by position (the token is never shown).
    """
    tokens, problems, seen = [], [], {}
    for n, entry in enumerate(entries, 1):
        where = f"greenjobs.auth.tokens entry {n}"
        secret, sep, role_text = entry.rpartition(":")
        if not sep or not secret or not role_text:
            problems.append(f"{where}: expected TOKEN:ROLE[,ROLE] or sha256:HEX:ROLE[,ROLE]")
            continue
        roles = frozenset(role_text.split(","))
        unknown = sorted(roles - set(GRANTS))
        if unknown:
            problems.append(f"{where}: unknown role(s) {', '.join(map(repr, unknown))}; roles are "
                            f"{', '.join(sorted(GRANTS))}")
            continue
        if secret.startswith("sha256:"):
            hexdigest = secret[len("sha256:"):].lower()
            if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
                problems.append(f"{where}: sha256: must be followed by 64 hex digits (the SHA-256 of the token)")
                continue
            digest = bytes.fromhex(hexdigest)
        else:
            if len(secret) < _MIN_TOKEN:
                log.warning("%s is only %d characters; a guessable token is no access control (make one with "
                            "python -c 'import secrets; print(secrets.token_urlsafe(32))')", where, len(secret))
            digest = hashlib.sha256(secret.encode()).digest()
        if digest in seen:
            problems.append(f"{where}: the same token as entry {seen[digest]}; list each token once")
            continue
        seen[digest] = n
        tokens.append(Token(digest, roles, n))
    if problems:
        raise ConfigurationError("invalid settings in the ini file:\n  " + "\n  ".join(problems))
    return tuple(tokens)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; the wildcard, other names and other addresses are not."""
    host = host.strip().strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_hosts(global_config: dict | None) -> list[str]:
    """The hosts every ``[server:*]`` section of the app's ini binds (any of them may be the one served).

    An app built without an ini (tests, an embedding program) binds nothing we can see: ``[]``.
    Raises ConfigurationError if the ini cannot be read.
    """
    ini = (global_config or {}).get("__file__")
    if not ini:
        return []
    import plaster
    defaults = {k: v for k, v in global_config.items() if isinstance(v, str)}
    try:
        loader = plaster.get_loader(ini, protocols=["wsgi"])
        sections = [s for s in loader.get_sections() if s.startswith("server:")]
        found = {s: loader.get_settings(s, defaults=defaults) for s in sections}
    except Exception as exc:
        raise ConfigurationError(f"cannot read the [server:*] sections of {ini} to check the bind address: {exc}")
    hosts = []
    for options in found.values():
        if options.get("listen"):       # waitress: "host:port host:port"
            hosts += [word.rpartition(":")[0] if ":" in word else word for word in options["listen"].split()]
        elif options.get("host"):
            hosts.append(options["host"])
        else:                           # no host: our runner binds loopback; waitress and others bind all
            ours = "greenjobs#gevent" in options.get("use", "") or "greenjobs.server.runner" in options.get("use", "")
            hosts.append("127.0.0.1" if ours else "0.0.0.0")
    return [h if h not in ("", "*") else "0.0.0.0" for h in hosts]


class TokenSecurityPolicy:
    """Pyramid's ISecurityPolicy: identity from ``Authorization: Bearer`` or the dashboard's session cookie.

    ``enabled`` False (no tokens) permits everything.  A request that sends an Authorization header is
    judged by it alone, so a bad header is never rescued by a cookie.  A signed cookie stays valid
    wherever it is copied, so sign-out also remembers the session's id until the cookie would have
    expired anyway (in memory: a restart forgets it, and with a random secret every cookie with it).
    """

    def __init__(self, tokens: tuple[Token, ...], session_secret: str, session_timeout: float):
        self.tokens = tokens
        self.enabled = bool(tokens)
        self.session_timeout = session_timeout
        self._revoked: dict[str, float] = {}      # session id -> monotonic time its cookie expires anyway
        self._key = hashlib.sha256(b"greenjobs.token-id." + session_secret.encode()).digest()
        self._by_id = {self.token_id(t): t for t in tokens}
        self._cache = RequestLocalCache(self._load_identity)

    def token_id(self, token: Token) -> str:
        """What the session cookie holds: opaque, and useless to guess a token from."""
        return hmac.new(self._key, token.digest, "sha256").hexdigest()[:32]

    def lookup(self, text: str) -> Token | None:
        """The configured token ``text`` is, compared in constant time with every entry."""
        digest = hashlib.sha256(text.encode()).digest()
        found = None
        for token in self.tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found

    def identity_of(self, token: Token, via: str) -> Identity:
        """The Identity of a request authenticated with ``token``; ``via`` is "bearer" or "session"."""
        principal = hashlib.sha256(b"greenjobs.principal." + token.digest).hexdigest()[:32]
        return Identity(self.token_id(token), token.roles, token.permissions, via, principal)

    def _load_identity(self, request) -> Identity | None:
        if not self.enabled:
            return None
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            token = self.lookup(credentials.strip()) if scheme.lower() == "bearer" and credentials.strip() else None
            return self.identity_of(token, "bearer") if token is not None else None
        if COOKIE not in request.cookies:
            return None
        session = request.session
        if session.get("sid") in self._revoked:
            return None
        token = self._by_id.get(session.get("token", ""))
        return self.identity_of(token, "session") if token is not None else None

    # -- ISecurityPolicy ----------------------------------------------------------------
    def identity(self, request) -> Identity | None:
        """The request's Identity, or None if anonymous; worked out once per request."""
        return self._cache.get_or_create(request)

    def authenticated_userid(self, request) -> str | None:
        """The token id of the request's identity, or None if anonymous."""
        identity = self.identity(request)
        return identity.id if identity is not None else None

    def permits(self, request, context, permission: str):
        """Allowed or Denied for ``permission``; a Denied says what to send or which role is needed."""
        if not self.enabled:
            return Allowed("access control is off")
        identity = self.identity(request)
        if identity is None:
            if "Authorization" in request.headers:
                return Denied("the Authorization header does not carry a valid token; "
                              "send 'Authorization: Bearer TOKEN'")
            if COOKIE in request.cookies:
                return Denied("the session has expired or was signed out; sign in again with POST /session")
            return Denied("send 'Authorization: Bearer TOKEN' (or sign in to the dashboard with POST /session)")
        if permission in identity.permissions:
            return Allowed(f"{permission} granted")
        granted_by = sorted(role for role, perms in GRANTS.items() if permission in perms)
        return Denied(f"{request.method} {request.path} needs the {permission!r} permission (role "
                      f"{' or '.join(granted_by)}); this token's role(s): {', '.join(sorted(identity.roles))}")

    def remember(self, request, userid: str, **kw) -> list:
        """Sign in: a fresh session (never one an attacker planted) holding the token id and a CSRF token."""
        request.session.invalidate()
        request.session["token"] = userid
        request.session["sid"] = secrets.token_urlsafe(16)
        new_csrf_token(request)
        self._cache.clear(request)
        return []

    def forget(self, request, **kw) -> list:
        """Sign out: empty the session and expire the cookie."""
        if COOKIE in request.cookies:
            sid = request.session.get("sid")
            if sid is not None:
                now = time.monotonic()
                self._revoked = {s: t for s, t in self._revoked.items() if t > now}
                self._revoked[sid] = now + self.session_timeout
            request.session.invalidate()

            def expire(request, response):   # after the session's own callback re-set the cookie
                response.unset_cookie(COOKIE, strict=False)
                response.delete_cookie(COOKIE, path="/")
            request.add_response_callback(expire)
        self._cache.clear(request)
        return []


def _cookie_authenticated(request) -> bool:
    """The CSRF check applies to cookie sign-ins only: a bearer token is never sent by a browser on its own."""
    identity = request.identity
    return identity is not None and identity.via == "session"


def _state(request, identity: Identity | None) -> dict:
    policy = request.registry.greenjobs_security
    if not policy.enabled:
        return {"auth": "off", "authenticated": False, "via": None, "roles": sorted(GRANTS),
                "permissions": sorted(GRANTS["admin"]), "csrf_token": None}
    return {"auth": "on", "authenticated": identity is not None, "via": identity and identity.via,
            "roles": sorted(identity.roles) if identity else [],
            "permissions": sorted(identity.permissions) if identity else [],
            "csrf_token": get_csrf_token(request) if identity is not None and identity.via == "session" else None}


@view_config(route_name="session", request_method="GET", renderer="json", permission=NO_PERMISSION_REQUIRED)
def session_state(request):
    """GET /session: whether access control is on, and the caller's roles, permissions and CSRF token."""
    return _state(request, request.identity)


class SignInLimiter:
    """Failed sign-ins per client address: past ``limit`` in ``window`` seconds, 429 until the oldest ages out.

    Kept in memory (per server process) and bounded: at most ``clients`` addresses are remembered.
    """

    def __init__(self, limit: int = 10, window: float = 60.0, clients: int = 10_000):
        self.limit, self.window, self.clients = limit, window, clients
        self._failures: dict[str, collections.deque] = {}

    def retry_after(self, client: str) -> int:
        """Seconds this client must wait before another attempt (0: it may try now)."""
        times = self._failures.get(client)
        if not times:
            return 0
        now = time.monotonic()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return 0
        return int(times[0] + self.window - now) + 1 if len(times) >= self.limit else 0

    def failed(self, client: str) -> int:
        """Count a failure; returns how many this client has in the window."""
        if client not in self._failures and len(self._failures) >= self.clients:
            self._failures.pop(next(iter(self._failures)))      # forget the oldest-seen client
        times = self._failures.setdefault(client, collections.deque())
        times.append(time.monotonic())
        return len(times)


@view_config(route_name="session", request_method="POST", renderer="json", permission=NO_PERMISSION_REQUIRED,
             require_csrf=False)
def sign_in(request):
    """Exchange a token for the session cookie (HttpOnly: page scripts never see it)."""
    policy = request.registry.greenjobs_security
    if not policy.enabled:
        raise Problem(409, "Access control is off", "no greenjobs.auth.tokens are configured: there is nothing to "
                                                    "sign in to, and every request is permitted")
    client = request.client_addr or "?"
    limiter = request.registry.greenjobs_sign_in_limiter
    wait = limiter.retry_after(client)
    if wait:
        raise Problem(429, "Too many failed sign-ins", f"too many wrong tokens from {client}; retry in {wait} s",
                      {"Retry-After": str(wait)})
    # JSON only: a cross-site HTML form cannot send application/json without a CORS preflight, so
    # another site cannot sign a browser in with the attacker's token (login CSRF)
    body = read_json(request, 4096, request.registry.greenjobs_settings.api_read_timeout)
    text = body.get("token") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text:
        raise Problem(400, "Missing token", 'send {"token": "..."} as JSON')
    token = policy.lookup(text)
    if token is None:
        count = limiter.failed(client)
        if count == 1 or count == limiter.limit:
            log.warning("failed dashboard sign-in from %s (%d in the last %d s)", client, count, limiter.window)
        raise Problem(401, "Unauthorized", "the token is not valid", {"WWW-Authenticate": CHALLENGE})
    remember(request, policy.token_id(token))
    log.info("dashboard sign-in by token %d (%s)", token.position, ",".join(sorted(token.roles)))
    return _state(request, policy.identity_of(token, "session"))


@view_config(route_name="session", request_method="DELETE", renderer="json", permission=NO_PERMISSION_REQUIRED)
def sign_out(request):
    """DELETE /session: end the dashboard session; its cookie is refused afterwards, even if replayed."""
    forget(request)
    return _state(request, None)


def includeme(config) -> None:
    """Validate the auth settings against the bind address, then install the policy, sessions and CSRF.

    Needs ``registry.greenjobs_settings`` (and ``greenjobs_global_config`` for the ini's bind address).
    Raises ConfigurationError: bad tokens, a short session secret, or a non-loopback bind with no tokens.
    """
    settings = config.registry.greenjobs_settings
    tokens = parse_tokens(settings.auth_tokens)
    exposed = sorted({h for h in bind_hosts(getattr(config.registry, "greenjobs_global_config", None))
                      if not is_loopback(h)})
    if exposed and not tokens:
        if not settings.auth_insecure:
            raise ConfigurationError(
                f"the server binds {', '.join(exposed)}, which is not loopback, and no greenjobs.auth.tokens are "
                f"configured, so anyone who can reach it could submit, cancel and read jobs. Configure tokens "
                f"(greenjobs.auth.tokens = TOKEN:admin), bind host = 127.0.0.1, or, on a trusted network only, "
                f"set greenjobs.auth.insecure = true")
        log.warning("access control is OFF on %s (greenjobs.auth.insecure = true)", ", ".join(exposed))
    secret = settings.auth_session_secret
    if secret is not None and len(secret) < _MIN_SECRET:
        raise ConfigurationError(f"greenjobs.auth.session_secret is {len(secret)} characters; use at least "
                                 f"{_MIN_SECRET} (python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    secret = secret or secrets.token_urlsafe(32)   # per start: sessions end at a restart
    secure = settings.auth_secure_cookie if settings.auth_secure_cookie is not None else bool(exposed)
    timeout = int(settings.auth_session_timeout)
    config.set_session_factory(SignedCookieSessionFactory(
        secret, cookie_name=COOKIE, salt="greenjobs.session.", httponly=True, samesite="Strict", secure=secure,
        timeout=timeout, reissue_time=max(1, timeout // 10)))
    policy = TokenSecurityPolicy(tokens, secret, timeout)
    config.registry.greenjobs_security = policy
    config.registry.greenjobs_sign_in_limiter = SignInLimiter()
    config.set_security_policy(policy)
    # a view that forgets its permission is admin-only, not public
    config.set_default_permission("admin")
    config.set_default_csrf_options(require_csrf=True, token=None, header="X-CSRF-Token",
                                    callback=_cookie_authenticated)
    config.scan(__name__)
    if tokens:
        log.info("access control on: %d token(s)", len(tokens))
