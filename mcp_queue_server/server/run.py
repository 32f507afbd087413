"""Run the MCP server for ``settings`` on its transport, with metrics and the /status page."""

from __future__ import annotations

import logging

import anyio

from mcp_queue_server.logs import configure_logging
from mcp_queue_server.observe.http import routes
from mcp_queue_server.observe.metrics import Metrics
from mcp_queue_server.server.app import build_server
from mcp_queue_server.server.transports import serve_http, serve_stdio_with_metrics
from mcp_queue_server.settings import Settings

logger = logging.getLogger("mcp_queue_server")


def run(settings: Settings) -> None:
    """Serve until stdin closes (stdio) or SIGTERM/SIGINT arrives; held tasks go back at exit."""
    metrics = Metrics(settings)
    server = build_server(settings, metrics)
    configure_logging(settings.log_level)  # after build_server: MCPServer configures the root logger
    logger.info("serving role %s over %s", settings.role.value, settings.transport)
    if settings.transport == "stdio":
        anyio.run(serve_stdio_with_metrics, server, settings, metrics)
    else:
        serve_http(server, settings, routes(metrics))
