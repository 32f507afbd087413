"""HTTP beside the MCP endpoints: ``/metrics`` and ``/status``, and the Host and token rules they share.

The one home of two checks the MCP transports use too (``server/transports.py`` builds the
SDK's ``TransportSecuritySettings`` from :func:`allowed_hosts` and :func:`allowed_origins`, and
its token verifier calls :func:`token_matches`):

* the Host allowlist against DNS rebinding: localhost, the bind address and configured extras;
* the constant-time bearer-token comparison.

With stdio there is no HTTP server to mount the routes on: :func:`serve_side` runs them on
their own port (``--metrics-port``).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
from collections.abc import Iterator

import anyio
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from mcp_queue_server.observe.metrics import Metrics
from mcp_queue_server.observe.status_page import status_page
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


def _refused(request: Request, settings: Settings, allowed: list[str]) -> Response | None:
    # The MCP endpoints' rules: the Host allowlist (against DNS rebinding), then the token.
    if not host_allowed(request.headers.get("host", ""), allowed):
        return Response("invalid Host header\n", status_code=421)
    token = settings.auth_token
    if token is None:
        return None
    given = request.headers.get("authorization", "").removeprefix("Bearer ")
    if token_matches(given, token.get_secret_value()):
        return None
    return Response("unauthorized\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})


# -- routes ------------------------------------------------------------------------------------


def routes(metrics: Metrics) -> list[Route]:
    """``GET /metrics`` and ``GET /status`` (HTML that refreshes itself); with an auth token
    configured both need ``Authorization: Bearer``."""
    settings = metrics.settings
    allowed = allowed_hosts(settings)

    async def scrape(request: Request) -> Response:
        refused = _refused(request, settings, allowed)
        return refused or Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def status(request: Request) -> Response:
        refused = _refused(request, settings, allowed)
        if refused is not None:
            return refused
        await metrics.refresh()
        return HTMLResponse(status_page(metrics.snapshot, metrics.store_up, settings.key_prefix))

    return [Route("/metrics", scrape, methods=["GET"]), Route("/status", status, methods=["GET"])]


class _NoSignalServer(uvicorn.Server):
    """uvicorn without its signal handlers: beside stdio, the MCP server owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_side(metrics: Metrics, host: str, port: int) -> None:
    """Serve ``/metrics`` and ``/status`` on ``host:port`` until cancelled (stdio's ``--metrics-port``)."""
    config = uvicorn.Config(
        Starlette(routes=routes(metrics)), host=host, port=port, log_config=None, lifespan="off", access_log=False
    )
    try:
        await _NoSignalServer(config).serve()
    finally:
        with anyio.CancelScope(shield=True):
            await metrics.aclose()
