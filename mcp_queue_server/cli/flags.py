"""Command-line flags that mirror settings, shared by the server and the operator commands."""

from __future__ import annotations

import argparse
import enum
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import SettingsError as EnvParseError
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
    "--auth-tokens-file": ("auth_tokens_file", Path, "FILE"),
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
            type=_parser_for(field, kind),
            metavar=metavar,
            choices=CHOICES.get(field),
            action="append" if field.startswith("allowed_") else "store",
            default=argparse.SUPPRESS,
            help=f"{text}{shown} [env: MCP_QUEUE_{field.upper()}]".replace("%", "%%"),
        )


FLAG_OF_FIELD = {field: flag for flag, (field, _, _) in FLAGS.items()}
_KINDS: dict[Any, str] = {int: "a whole number", float: "a number", bool: "true or false", Path: "a path"}


def expected(field: str) -> str:
    """What ``field`` takes, in words: its kind, choices, limits or pattern."""
    info = Settings.model_fields[field]
    kind = info.annotation
    if isinstance(kind, types.UnionType):  # X | None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if field in CHOICES or typing.get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(CHOICES.get(field) or map(str, typing.get_args(kind)))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in kind)
    words = _KINDS.get(kind, "text")
    limits = {
        name: getattr(m, name) for m in info.metadata for name in ("ge", "gt", "le", "pattern") if hasattr(m, name)
    }
    if "ge" in limits and "le" in limits:
        return f"{words} from {limits['ge']} to {limits['le']}"
    parts = [words]
    if "ge" in limits:
        parts.append(f"of at least {limits['ge']}")
    if "gt" in limits:
        parts.append(f"above {limits['gt']}")
    if "le" in limits:
        parts.append(f"of at most {limits['le']}")
    if "pattern" in limits:
        parts.append(f"matching {limits['pattern']}")
    return " ".join(parts)


def _parser_for(field: str, kind: Any) -> Any:
    """``kind`` for argparse, refusing a value with what the setting takes (argparse names the flag)."""
    if kind not in (int, float):
        return kind

    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {expected(field)}") from None

    parse.__name__ = kind.__name__
    return parse


def _problem(error: ErrorDetails, flags: Mapping[str, Any]) -> str:
    """One invalid setting, named as the user gave it (the flag, else the variable), and what to use."""
    field = str(error["loc"][0]) if error["loc"] else ""
    if field not in Settings.model_fields:
        return f"invalid settings: {error['msg']}"
    info = Settings.model_fields[field]
    secret = info.annotation in (SecretStr, SecretStr | None)
    value = "(hidden)" if secret else repr(error.get("input"))
    shown = str(info.default).lower() if isinstance(info.default, bool) else info.default
    default = "" if info.default in (None, ...) or info.default_factory is not None else f" (default: {shown})"
    if field in flags:
        source, fix = FLAG_OF_FIELD.get(field, field), f"fix the flag or leave it out{default}"
        return f"invalid {source} {value}: expected {expected(field)}; {fix}"
    source = f"MCP_QUEUE_{field.upper()}"
    return f"invalid {source}={value}: expected {expected(field)}; fix the variable or unset it{default}"


def settings_from(flags: Mapping[str, Any]) -> Settings:
    """Settings from the environment, overridden by ``flags``.

    Raises:
        SettingsError: invalid settings, or a Redis URL that cannot be parsed (the
            message never echoes the URL: it may carry a password).
    """
    try:
        settings = Settings(**flags)
    except ValidationError as exc:
        raise SettingsError("; ".join(_problem(e, flags) for e in exc.errors())) from None
    except EnvParseError as exc:  # a list variable that is not JSON
        field = next((f for f in Settings.model_fields if f'"{f}"' in str(exc)), None)
        where = f"MCP_QUEUE_{field.upper()}" if field else "an MCP_QUEUE_* variable"
        raise SettingsError(f'invalid {where}: expected a JSON list, like ["a.example", "b.example"]') from None
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
