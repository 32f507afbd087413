"""Command-line flags that mirror settings, shared by the server and the operator commands."""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from redis.asyncio.connection import parse_url

from mcp_queue_server.settings import CLUSTER_SCHEMES, Role, Settings

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


#: The settings every operator command shares with the server.
STORE_FIELDS = frozenset(
    {
        "redis_url",
        "data_dir",
        "key_prefix",
        "consumer",
        "lease_ms",
        "max_attempts",
        "retry_backoff_ms",
        "priority_threshold",
        "max_payload_bytes",
        "max_depth",
        "log_level",
    }
)


class SettingsError(ValueError):
    """The flags and environment give settings that cannot be used; the message says why."""


def add_setting_flags(target: Any, fields: Collection[str] | None = None) -> None:
    """Add the flags of ``fields`` (default: all) to a parser or argument group."""
    for flag, (field, kind, metavar) in FLAGS.items():
        if fields is not None and field not in fields:
            continue
        info = Settings.model_fields[field]
        default = None if info.default_factory is not None else info.default
        shown = "" if default is None else f" (default: {default})"
        text = " ".join(filter(None, [info.description or "", EXTRA_HELP.get(field, "")]))
        target.add_argument(
            flag,
            dest=field,
            type=kind,
            metavar=metavar,
            choices=CHOICES.get(field),
            action="append" if field.startswith("allowed_") else "store",
            default=argparse.SUPPRESS,
            help=f"{text}{shown} [env: MCP_QUEUE_{field.upper()}]".replace("%", "%%"),
        )


def settings_from(flags: Mapping[str, Any]) -> Settings:
    """Settings from the environment, overridden by ``flags``.

    Raises:
        SettingsError: invalid settings, or a Redis URL that cannot be parsed (the
            message never echoes the URL: it may carry a password).
    """
    try:
        settings = Settings(**flags)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from None
    url = settings.redis_url_value()
    if settings.redis_url is not None and not url:
        # An empty MCP_QUEUE_REDIS_URL (common in client configs) means unset: embedded Redis.
        return settings.model_copy(update={"redis_url": None})
    if url:
        scheme, sep, rest = url.partition("://")
        try:
            parse_url(f"{CLUSTER_SCHEMES.get(scheme, scheme)}{sep}{rest}")
        except ValueError:
            raise SettingsError(
                "invalid Redis URL: use redis://, rediss://, unix:// or redis+cluster:// (MCP_QUEUE_REDIS_URL)"
            ) from None
    return settings
