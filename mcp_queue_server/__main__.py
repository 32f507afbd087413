"""Entry point: ``mcp-queue-server`` / ``python -m mcp_queue_server``.

With no command (or ``serve``): builds the settings once (environment ``MCP_QUEUE_*``,
overridden by flags), builds the server, configures logging to stderr (stdout carries only
the protocol on stdio) and serves. Any other command (``stats``, ``worker``, ...) is the
operator CLI in :mod:`mcp_queue_server.cli`. The server modules (and ``mcp``) are imported
only to serve, so the commands, and the worker processes a pool restarts, start quickly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from mcp_queue_server import cli
from mcp_queue_server.settings import Role, Settings

logger = logging.getLogger("mcp_queue_server")

#: Exit status for a configuration the server refuses to run with.
EXIT_CONFIG = 2

# flag -> (Settings field, argparse type, metavar); every flag mirrors MCP_QUEUE_<FIELD>.
FLAGS: dict[str, tuple[str, Any, str | None]] = {
    "--redis-url": ("redis_url", str, "URL"),
    "--data-dir": ("data_dir", Path, "DIR"),
    "--key-prefix": ("key_prefix", str, "NAME"),
    "--consumer": ("consumer", str, "NAME"),
    "--role": ("role", str, None),
    "--lease-ms": ("lease_ms", int, "MS"),
    "--max-attempts": ("max_attempts", int, "N"),
    "--retry-backoff-ms": ("retry_backoff_ms", int, "MS"),
    "--priority-threshold": ("priority_threshold", int, "N"),
    "--max-payload-bytes": ("max_payload_bytes", int, "BYTES"),
    "--max-depth": ("max_depth", int, "N"),
    "--transport": ("transport", str, None),
    "--host": ("host", str, "ADDR"),
    "--port": ("port", int, "PORT"),
    "--metrics-port": ("metrics_port", int, "PORT"),
    "--auth-token": ("auth_token", str, "TOKEN"),
    "--allowed-host": ("allowed_hosts", str, "HOST"),
    "--allowed-origin": ("allowed_origins", str, "ORIGIN"),
    "--log-level": ("log_level", str, None),
}
CHOICES = {
    "role": [r.value for r in Role],
    "transport": ["stdio", "streamable-http", "sse"],
    "log_level": ["DEBUG", "INFO", "WARNING", "ERROR"],
}
EXTRA_HELP = {
    "transport": "MCP transport: stdio for a client that spawns the server, HTTP for a shared one.",
    "auth_token": "Prefer the environment variable: flags are visible to other local users.",
    "allowed_hosts": "Repeatable; the environment variable takes a JSON list.",
    "allowed_origins": "Repeatable; the environment variable takes a JSON list.",
    "log_level": "Log level; logs go to stderr.",
}


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
    for flag, (field, kind, metavar) in FLAGS.items():
        info = Settings.model_fields[field]
        default = None if info.default_factory is not None else info.default
        shown = "" if default is None else f" (default: {default})"
        text = " ".join(filter(None, [info.description or "", EXTRA_HELP.get(field, "")]))
        p.add_argument(
            flag,
            dest=field,
            type=kind,
            metavar=metavar,
            choices=CHOICES.get(field),
            action="append" if field.startswith("allowed_") else "store",
            default=argparse.SUPPRESS,
            help=f"{text}{shown} [env: MCP_QUEUE_{field.upper()}]".replace("%", "%%"),
        )
    return p


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the environment, overridden by the flags given.

    Raises:
        SystemExit: invalid flags or settings (status 2, message on stderr).
    """
    from mcp_queue_server.transports import is_loopback

    p = parser()
    flags = vars(p.parse_args(argv))
    try:
        settings = Settings(**flags)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        p.exit(EXIT_CONFIG, f"mcp-queue-server: invalid settings: {problems}\n")
    if settings.redis_url is not None and not settings.redis_url.get_secret_value():
        # An empty MCP_QUEUE_REDIS_URL (common in client configs) means unset.
        settings = settings.model_copy(update={"redis_url": None})
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
    from mcp_queue_server.metrics import Metrics, serve_stdio_with_metrics
    from mcp_queue_server.server import build_server
    from mcp_queue_server.transports import serve_http

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
