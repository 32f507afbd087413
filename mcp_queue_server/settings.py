"""Configuration: the one place that reads the environment (prefix ``MCP_QUEUE_``).

Build a :class:`Settings` once at start-up and pass it down; nothing else reads
``os.environ``.
"""

from __future__ import annotations

import os
import socket
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mcp_queue_server.limits import MAX_ATTEMPTS, NAME_PATTERN

#: URL schemes that select Redis Cluster, mapped to the scheme redis-py expects.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


class Role(StrEnum):
    """Which tool set the MCP server exposes."""

    PRODUCER = "producer"  #: enqueue, fanout, get_task, queue_stats
    WORKER = "worker"  #: read, ack, fail, extend, checkpoint, get_task
    ADMIN = "admin"  #: stats, DLQ tools, recover
    ALL = "all"  #: everything


def default_consumer_name() -> str:
    """A consumer name unique to this process: host, pid and a random suffix."""
    host = "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/mcp-queue-server``, else ``~/.local/share/mcp-queue-server``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mcp-queue-server"


class Settings(BaseSettings):
    """Every knob of the queue and the server. Env: ``MCP_QUEUE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MCP_QUEUE_", extra="ignore", frozen=True)

    # Where the queue lives.
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://, rediss:// or unix:// URL. Unset: start or join the embedded Redis in data_dir.",
    )
    data_dir: Path = Field(default_factory=default_data_dir, description="Embedded Redis: socket, AOF and lock.")
    key_prefix: str = Field(default="mcpq", pattern=NAME_PATTERN, description="Prefix of every Redis key.")
    consumer: str = Field(
        default_factory=default_consumer_name, pattern=NAME_PATTERN, description="This process's consumer name."
    )
    group: str = Field(default="workers", pattern=NAME_PATTERN, description="Consumer group on every stream.")

    # Queue policy (the design doc's QueueConfig).
    priority_threshold: int = Field(default=10, description="priority >= this goes to the high stream.")
    lease_ms: int = Field(default=60_000, ge=1, description="Default lease of a delivered task.")
    max_lease_ms: int = Field(default=3_600_000, ge=1, description="Upper bound of any lease or extension.")
    max_attempts: int = Field(
        default=3, ge=1, le=MAX_ATTEMPTS, description="Deliveries before a task is dead-lettered."
    )
    retry_backoff_ms: int = Field(default=5_000, ge=0, description="Base of the exponential retry backoff.")
    max_backoff_ms: int = Field(default=300_000, ge=0, description="Cap of the retry backoff.")
    result_ttl_s: int = Field(default=86_400, ge=1, description="How long completed tasks and results are kept.")
    checkpoint_ttl_s: int = Field(default=86_400, ge=1, description="Default checkpoint lifetime.")
    read_batch_size: int = Field(default=10, ge=1, le=1000, description="Default count of a read.")
    pending_batch_size: int = Field(default=100, ge=1, le=10_000, description="Tasks handled per recovery step.")
    max_read_count: int = Field(default=100, ge=1, le=10_000, description="Largest count one read may ask for.")
    max_block_ms: int = Field(default=20_000, ge=0, le=60_000, description="Longest a read may block.")
    max_payload_bytes: int = Field(default=65_536, ge=256, description="Largest JSON payload/result/checkpoint.")
    max_depth: int = Field(default=32, ge=2, le=256, description="Deepest JSON nesting accepted.")
    socket_timeout_s: float = Field(default=5.0, gt=0, description="Redis command timeout (fail fast when down).")
    wait_replicas: int = Field(
        default=0, ge=0, le=16, description="Confirm each enqueue on this many replicas (WAIT) before answering."
    )
    wait_timeout_ms: int = Field(default=500, ge=1, le=60_000, description="Longest an enqueue waits for replicas.")
    max_queue_length: int = Field(
        default=0,
        ge=0,
        description="Most waiting + delayed tasks a queue may hold; an enqueue, batch or fanout past it is "
        "refused whole with a retryable 'queue full' error. 0: unlimited.",
    )
    allow_eviction: bool = Field(
        default=False,
        description="Serve writes even when Redis's maxmemory-policy evicts keys (anything but noeviction), "
        "accepting that Redis may silently delete task records.",
    )
    embedded_maxmemory: str = Field(
        default="1gb",
        pattern=r"^(?i:[0-9]+(b|k|kb|m|mb|g|gb)?)$",
        description="maxmemory of the embedded Redis (noeviction: writes are refused when full, nothing is "
        "deleted), e.g. 512mb or 2gb; 0 = unlimited.",
    )
    wait_aof: bool = Field(
        default=False,
        description="Also confirm each enqueue is fsynced to the AOF (WAITAOF; Redis >= 7.2 or Valkey, appendonly on).",
    )

    # MCP server.
    role: Role = Field(default=Role.ALL, description="Tool set to expose: producer, worker, admin or all.")
    transport: Literal["stdio", "streamable-http", "sse"] = "stdio"
    host: str = Field(default="127.0.0.1", description="HTTP bind address.")
    port: int = Field(default=8000, ge=0, le=65_535, description="HTTP port.")
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65_535,
        description="stdio transport: serve Prometheus /metrics on this port at the HTTP bind address "
        "(the HTTP transports always serve /metrics).",
    )
    auth_token: SecretStr | None = Field(default=None, description="Bearer token required on HTTP transports.")
    auth_tokens_file: Path | None = Field(
        default=None,
        description="HTTP transports: a JSON file of named tokens with roles, "
        '{"<principal>": {"token": "<secret>", "role": "producer|worker|admin|all"}}; '
        "it must not be readable by group or others (chmod 600). Instead of auth_token.",
    )
    allowed_hosts: list[str] = Field(default_factory=list, description="Extra Host header values accepted on HTTP.")
    allowed_origins: list[str] = Field(default_factory=list, description="Extra Origin values accepted on HTTP.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def redis_url_value(self) -> str | None:
        """The Redis URL in clear text, for the connection only (never log it)."""
        return self.redis_url.get_secret_value() if self.redis_url else None
