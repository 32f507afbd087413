"""Connection handling shared by the queue's operations: clients, script calls, error mapping."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self

import anyio
from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mcp_queue_server.errors import InvalidInput, QueueError, QueueUnavailable
from mcp_queue_server.keys import QueueKeys
from mcp_queue_server.scripts import AsyncScript, register_all
from mcp_queue_server.settings import Settings

DEFAULT_QUEUE = "default"


@contextmanager
def guard() -> Iterator[None]:
    """Map Redis failures to queue errors. The message names no host or credentials."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, ConnectionError, TimeoutError) as exc:
        raise QueueUnavailable(
            f"queue store unavailable ({type(exc).__name__}); nothing was lost, retry in a few seconds"
        ) from None
    except redis_errors.ResponseError as exc:
        raise QueueError(f"queue store refused the operation: {str(exc)[:200]}") from None


def _ms_clock() -> int:
    return time.time_ns() // 1_000_000


def connect_redis(url: str, settings: Settings) -> Redis:
    """A client that fails fast: one immediate retry on a dropped connection (a pooled
    connection is stale after a Redis restart), none on a timeout (the caller should
    learn at once). Retrying is safe because every write is idempotent by task id:
    enqueue ids are fixed before the call, a repeated ack reports the stored outcome."""
    return Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis_errors.ConnectionError,)),
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=0,
    )


class QueueBase:
    """Clients, scripts and key names for one consumer name; operations build on it."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis | None = None,
        *,
        consumer: str | None = None,
        clock: Callable[[], int] = _ms_clock,
    ) -> None:
        self.settings = settings
        self.consumer = consumer or settings.consumer
        self._redis = redis
        self._blocking: Redis | None = None
        self._owns_redis = redis is None
        self._scripts: dict[str, AsyncScript] = {}
        self._keys: dict[str, QueueKeys] = {}
        self._touched: set[str] = set()
        self._now = clock

    # -- connection ------------------------------------------------------------------

    async def connect(self) -> Self:
        """Create the Redis clients and register the scripts (no round trip: Redis may be down)."""
        if self._redis is None:
            url = self.settings.redis_url_value()
            if url is None:
                raise InvalidInput("no Redis URL: set MCP_QUEUE_REDIS_URL or start the embedded Redis first")
            self._redis = connect_redis(url, self.settings)
        # Blocking waits get their own pool without a socket timeout (bounded by the caller).
        pool = self._redis.connection_pool
        self._blocking = Redis.from_pool(
            ConnectionPool(connection_class=pool.connection_class, **{**pool.connection_kwargs, "socket_timeout": None})
        )
        self._scripts = register_all(self._redis)
        return self

    async def disconnect(self, *, release: bool = True) -> None:
        """Close the clients; with ``release``, first hand every held task back (graceful shutdown).

        Raises:
            QueueUnavailable: Redis was down, so held tasks stay leased until their leases expire.
        """
        try:
            if release and self._redis is not None:
                with anyio.CancelScope(shield=True):
                    await self.release()
        finally:
            if self._blocking is not None:
                await self._blocking.aclose()
            if self._redis is not None and self._owns_redis:
                await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise QueueUnavailable("queue not connected: call connect() first")
        return self._redis

    def keys(self, queue: str) -> QueueKeys:
        found = self._keys.get(queue)
        if found is None:
            found = self._keys[queue] = QueueKeys.for_queue(self.settings.key_prefix, queue)
        return found

    async def _call(self, name: str, queue: str, *args: Any) -> Any:
        k = self.keys(queue)
        with guard():
            return await self._scripts[name](
                [k.high, k.low, k.delayed, k.leases, k.dlq, k.stats],
                [k.base, self.settings.group, self.consumer, self._now(), *args],
            )

    async def release(self, queue: str | None = None) -> int:
        """Hand every task this consumer holds back to its queue at once (not charged as an
        attempt) and leave the consumer group. ``queue`` None: every queue this instance read."""
        queues = [queue] if queue is not None else sorted(self._touched)
        released = 0
        for name in queues:
            more = 1
            while more:
                count, more = await self._call("release", name, self.settings.pending_batch_size, 1)
                released += count
        return released
