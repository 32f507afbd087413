"""Entry point: ``mcp-queue-server`` / ``python -m mcp_queue_server``.

With no command (or ``serve``): builds the settings once (environment ``MCP_QUEUE_*``,
overridden by flags), builds the server, configures logging to stderr (stdout carries only
the protocol on stdio) and serves. Any other command (``stats``, ``worker``, ...) is the
operator CLI in :mod:`mcp_queue_server.cli.main`. The server modules (and ``mcp``) are imported
only to serve, so the commands, and the worker processes a pool restarts, start quickly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import anyio

from mcp_queue_server.cli import main as cli
from mcp_queue_server.cli.flags import FLAGS, SettingsError, add_setting_flags, settings_from
from mcp_queue_server.settings import Settings

logger = logging.getLogger("mcp_queue_server")

#: Exit status for a configuration the server refuses to run with.
EXIT_CONFIG = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mcp-queue-server",
        usage="%(prog)s [serve] [flags] | %(prog)s COMMAND [flags] ...",
        description="A durable task queue on Redis Streams, served to LLM agents over MCP. "
        "Every flag overrides its environment variable.",
        epilog="commands: serve (the default: the MCP server), stats, top, tasks get, dlq list|replay|purge, recover, "
        "enqueue, worker, demo; `mcp-queue-server COMMAND --help` for each. Exit codes: 0 ok, 1 operation "
        "failed, 2 usage or configuration error, 3 queue store unavailable.",
    )
    add_setting_flags(p)
    return p


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the environment, overridden by the flags given.

    Raises:
        SystemExit: invalid flags or settings (status 2, message on stderr).
    """
    from mcp_queue_server.server.transports import is_loopback

    p = parser()
    try:
        settings = settings_from(vars(p.parse_args(argv)))
    except SettingsError as exc:
        p.exit(EXIT_CONFIG, f"mcp-queue-server: {exc}\n")
    if settings.transport != "stdio" and not is_loopback(settings.host) and settings.auth_token is None:
        p.exit(
            EXIT_CONFIG,
            f"mcp-queue-server: refusing to serve HTTP on non-loopback address {settings.host!r} without "
            "authentication: set MCP_QUEUE_AUTH_TOKEN (or --auth-token), or bind 127.0.0.1\n",
        )
    return settings


def configure_logging(level: str) -> None:
    # force=True replaces the handler MCPServer installed; everything goes to stderr.
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    found = cli.find_command(args, FLAGS)
    if found is not None:
        index, command = found
        if command != "serve":
            sys.exit(cli.main(args))
        del args[index]
    serve(args)


def serve(argv: Sequence[str]) -> None:
    """Run the MCP server (``mcp-queue-server [serve] [flags]``)."""
    from mcp_queue_server.observe.metrics import Metrics, serve_stdio_with_metrics
    from mcp_queue_server.server.app import build_server
    from mcp_queue_server.server.transports import serve_http

    settings = load_settings(argv)
    metrics = Metrics(settings)
    server = build_server(settings, metrics)
    configure_logging(settings.log_level)
    logger.info("serving role %s over %s", settings.role.value, settings.transport)
    if settings.transport == "stdio":
        anyio.run(serve_stdio_with_metrics, server, settings, metrics)
    else:
        serve_http(server, settings, metrics.routes())


if __name__ == "__main__":
    main()
