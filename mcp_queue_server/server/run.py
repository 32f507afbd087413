"""Run the MCP server for ``settings`` on its transport, with metrics and the /status page."""

from __future__ import annotations

import errno
import logging
import signal
import socket
from types import FrameType

import anyio

from mcp_queue_server.logs import configure_logging
from mcp_queue_server.observe.http import routes
from mcp_queue_server.observe.metrics import Metrics
from mcp_queue_server.server.app import build_server
from mcp_queue_server.server.identity import TokensFileError, load_principals
from mcp_queue_server.server.transports import serve_http, serve_stdio_with_metrics
from mcp_queue_server.settings import Role, Settings

logger = logging.getLogger("mcp_queue_server")


class StartRefused(Exception):
    """A configuration error found before serving (exit status 2); the message, one line, says what to do."""


class PortUnavailable(StartRefused):
    """The server cannot listen on its configured port (a configuration error); the message says what to do."""


class _Terminated(Exception):
    """SIGTERM arrived outside uvicorn's own handling (uvicorn re-raises it once it has shut down)."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def run(settings: Settings) -> signal.Signals | None:
    """Serve until stdin closes (stdio) or SIGTERM/SIGINT arrives; held tasks go back at exit.

    Returns the signal that stopped the server (None: stdin closed), so the caller can exit
    130 after Ctrl-C and 0 after SIGTERM, both once the held tasks were handed back.

    Raises:
        PortUnavailable: the HTTP port (or the stdio transport's metrics port) is taken or not allowed.
        StartRefused: the auth token settings cannot be used (e.g. a tokens file open to others).
    """
    try:
        tokens = load_principals(settings)
    except TokensFileError as exc:
        raise StartRefused(str(exc)) from None
    # /metrics and /status: the admin (and all) principals' tokens with a tokens file.
    admin_tokens = (
        [token for token, p in tokens.items() if p.role in (Role.ADMIN, Role.ALL)]
        if settings.auth_tokens_file is not None
        else None
    )
    if settings.transport == "stdio":
        if settings.metrics_port:
            check_port(settings.host, settings.metrics_port, "--metrics-port or MCP_QUEUE_METRICS_PORT")
    elif settings.port:
        check_port(settings.host, settings.port, "--port or MCP_QUEUE_PORT")
    metrics = Metrics(settings)
    server = build_server(settings, metrics)
    configure_logging(settings.log_level)  # after build_server: MCPServer configures the root logger
    logger.info("serving role %s over %s", settings.role.value, settings.transport)
    if settings.transport == "stdio":
        return anyio.run(serve_stdio_with_metrics, server, settings, metrics, admin_tokens)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again: SIGINT's
    # default handler turns it into KeyboardInterrupt, and this handler turns SIGTERM into _Terminated.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        serve_http(server, settings, routes(metrics, admin_tokens))
    except KeyboardInterrupt:
        return signal.SIGINT
    except _Terminated:
        return signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    return None


def check_port(host: str, port: int, setting: str) -> None:
    """Fail early, with what to do, when ``port`` cannot be listened on at ``host``.

    uvicorn would find out only after connecting to the queue store, and exit with its own
    status 3, which the command line means as "queue store unavailable".

    Raises:
        PortUnavailable: the port is in use or not allowed.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # an unknown host: the server's own bind reports it
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    why = "is already in use (another server running?): stop what holds it, or choose another port"
                elif exc.errno == errno.EACCES:
                    why = "is not allowed for this user: choose a port above 1023"
                else:
                    continue  # e.g. no IPv6 here: the server's own bind reports real problems
                raise PortUnavailable(f"cannot listen on {host} port {port}: the port {why} with {setting}") from None
