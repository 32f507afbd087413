"""HTTP beside the MCP endpoints: ``/metrics`` and ``/status``, and the Host and token rules they share.

The one home of two checks the MCP transports use too (``server/transports.py`` builds the
SDK's ``TransportSecuritySettings`` from :func:`allowed_hosts` and :func:`allowed_origins`, and
its token verifier calls :func:`token_matches`):

* the Host allowlist against DNS rebinding: localhost, the bind address and configured extras;
* the constant-time bearer-token comparison.

With a token configured, ``/metrics`` wants ``Authorization: Bearer`` (Prometheus sends it);
``/status`` takes that header or a session cookie a browser gets from the login form
(``POST /status/login``). The cookie is an HMAC of the token, never the token itself, and
only ever opens ``/status``.

With stdio there is no HTTP server to mount the routes on: :func:`serve_side` runs them on
their own port (``--metrics-port``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qs

import anyio
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from mcp_queue_server.observe.metrics import Metrics
from mcp_queue_server.observe.status_page import login_page, status_page
from mcp_queue_server.settings import Settings

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - names to recognise, not to bind

# -- Host and Origin allowlists ----------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """``host`` as written in a URL or Host header (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _own_hosts(settings: Settings) -> list[str]:
    hosts = list(LOCAL_HOSTS)
    if settings.host not in WILDCARD_HOSTS and not is_loopback(settings.host):
        hosts.append(url_host(settings.host))
    return hosts


def allowed_hosts(settings: Settings) -> list[str]:
    """Host header values accepted: localhost and the bind address on any port, plus the extras.

    Always a list, never "anything": bound to 0.0.0.0 the server would otherwise answer a
    DNS-rebound name from any web page the user visits.
    """
    return [h for host in _own_hosts(settings) for h in (host, f"{host}:*")] + settings.allowed_hosts


def allowed_origins(settings: Settings) -> list[str]:
    """Origin header values accepted: http:// on the same hosts as :func:`allowed_hosts`, plus the extras."""
    return [f"http://{host}{port}" for host in _own_hosts(settings) for port in ("", ":*")] + settings.allowed_origins


def host_allowed(host: str, allowed: list[str]) -> bool:
    """``host`` matches an entry of the allowlist (``name`` or ``name:*`` for any port)."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return host in allowed or f"{name}:*" in allowed


# -- the bearer token --------------------------------------------------------------------------


def token_matches(given: str, expected: str) -> bool:
    """``given`` is the configured token; compared in constant time (no timing oracle)."""
    return hmac.compare_digest(given.encode(), expected.encode())


#: The cookie a browser gets from the login form; it opens ``/status`` and nothing else.
SESSION_COOKIE = "mcp_queue_status"
_SESSION_MESSAGE = b"mcp-queue-server status session"
#: The login form's body is a token and nothing else: larger bodies are refused unread.
MAX_LOGIN_BODY = 4096
#: Status pages hold live data and the form: never cached by the browser or a proxy.
_NO_STORE = {"Cache-Control": "no-store"}


def session_value(token: str) -> str:
    """The session cookie's value for ``token``: HMAC-SHA256 keyed by the token (not the token).

    The same in every server process sharing the token, so a load balancer may switch
    between them; it changes when the token does, which logs every browser out.
    """
    return hmac.new(token.encode(), _SESSION_MESSAGE, hashlib.sha256).hexdigest()


def _host_refused(request: Request, allowed: list[str]) -> Response | None:
    # First, before any token: the Host allowlist (against DNS rebinding).
    if host_allowed(request.headers.get("host", ""), allowed):
        return None
    return Response("invalid Host header\n", status_code=421)


def route_tokens(settings: Settings, tokens: Sequence[str] | None = None) -> list[str] | None:
    """The tokens that open these routes: ``tokens`` when given (the server passes its admin
    principals' from the tokens file), else the one auth token; None: no token needed."""
    if tokens is not None:
        return list(tokens)
    return None if settings.auth_token is None else [settings.auth_token.get_secret_value()]


def _any_matches(given: str, secrets: Sequence[str]) -> bool:
    # Every secret is compared (constant time each), whichever matches.
    return [token_matches(given, secret) for secret in secrets].count(True) > 0


def authorized(request: Request, settings: Settings, *, session: bool, tokens: Sequence[str] | None = None) -> bool:
    """No token configured, or the request carries one as ``Authorization: Bearer``, or
    (``session``: the ``/status`` pages) a session cookie. Constant-time comparisons."""
    secrets = route_tokens(settings, tokens)
    if secrets is None:
        return True
    given = request.headers.get("authorization", "").removeprefix("Bearer ")
    if _any_matches(given, secrets):
        return True
    cookie = request.cookies.get(SESSION_COOKIE)
    return session and cookie is not None and _any_matches(cookie, [session_value(s) for s in secrets])


def _unauthorized() -> Response:
    return Response("unauthorized\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})


def _login_form(message: str | None = None) -> Response:
    # 401 as for any request without credentials; a browser shows the form in the body.
    headers = {"WWW-Authenticate": "Bearer", **_NO_STORE}
    return HTMLResponse(login_page(message), status_code=401, headers=headers)


async def _form_token(request: Request) -> str | None:
    """The ``token`` field of an urlencoded form body; None when the body is too large."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return None
    fields = parse_qs(body.decode(errors="replace"), max_num_fields=4)
    return (fields.get("token") or [""])[0]


# -- routes ------------------------------------------------------------------------------------


def routes(metrics: Metrics, tokens: Sequence[str] | None = None) -> list[Route]:
    """``GET /metrics``, ``GET /status`` (HTML that refreshes itself) and ``POST /status/login``.

    With an auth token configured ``/metrics`` needs ``Authorization: Bearer``; ``/status``
    takes that or the session cookie set by the login form, and shows the form otherwise.
    ``tokens``: the tokens that open them instead of ``settings.auth_token`` (see :func:`route_tokens`).
    """
    settings = metrics.settings
    secrets = route_tokens(settings, tokens)
    allowed = allowed_hosts(settings)

    async def scrape(request: Request) -> Response:
        refused = _host_refused(request, allowed)
        if refused is not None:
            return refused
        if not authorized(request, settings, session=False, tokens=secrets):
            return _unauthorized()
        return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def status(request: Request) -> Response:
        refused = _host_refused(request, allowed)
        if refused is not None:
            return refused
        if not authorized(request, settings, session=True, tokens=secrets):
            return _login_form()
        views = await metrics.status_view()
        page = status_page(views, metrics.store_up, settings.key_prefix)
        return HTMLResponse(page, headers=_NO_STORE)

    async def login(request: Request) -> Response:
        refused = _host_refused(request, allowed)
        if refused is not None:
            return refused
        if secrets is None:
            return RedirectResponse("/status", status_code=303)
        given = await _form_token(request)
        if given is None:
            return Response("request body too large\n", status_code=413)
        if not _any_matches(given, secrets):
            return _login_form("Wrong token: try again.")
        response = RedirectResponse("/status", status_code=303, headers=_NO_STORE)
        response.set_cookie(
            SESSION_COOKIE,
            session_value(given),
            path="/status",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    return [
        Route("/metrics", scrape, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/status/login", login, methods=["POST"]),
    ]


class _NoSignalServer(uvicorn.Server):
    """uvicorn without its signal handlers: beside stdio, the MCP server owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_side(metrics: Metrics, host: str, port: int, tokens: Sequence[str] | None = None) -> None:
    """Serve ``/metrics`` and ``/status`` on ``host:port`` until cancelled (stdio's ``--metrics-port``)."""
    config = uvicorn.Config(
        Starlette(routes=routes(metrics, tokens)),
        host=host,
        port=port,
        log_config=None,
        lifespan="off",
        access_log=False,
    )
    try:
        await _NoSignalServer(config).serve()
    finally:
        with anyio.CancelScope(shield=True):
            await metrics.aclose()
