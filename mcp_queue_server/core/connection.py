"""Connection handling shared by the queue's operations: clients, script calls, error mapping."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self

import anyio
from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mcp_queue_server.core.keys import QueueKeys
from mcp_queue_server.core.lane import Command, Lane
from mcp_queue_server.core.scripts import AsyncScript, register_all, script_sha, script_source
from mcp_queue_server.errors import InvalidInput, QueueError, QueueUnavailable
from mcp_queue_server.settings import CLUSTER_SCHEMES, Settings

DEFAULT_QUEUE = "default"

#: A standalone or cluster client; both run the same scripts, since all keys of a queue share a slot.
Client = Redis | RedisCluster


@contextmanager
def guard() -> Iterator[None]:
    """Map Redis failures to queue errors. The message names no host or credentials."""
    try:
        yield
    except (
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        redis_errors.RedisClusterException,  # no reachable node, slots not covered
        redis_errors.ClusterDownError,
        redis_errors.TryAgainError,  # a slot is moving between masters
        ConnectionError,
        TimeoutError,
    ) as exc:
        raise QueueUnavailable(
            f"queue store unavailable ({type(exc).__name__}); nothing was lost, retry in a few seconds"
        ) from None
    except redis_errors.ResponseError as exc:
        raise QueueError(f"queue store refused the operation: {str(exc)[:200]}") from None


def unblocked(reply: object) -> bool:
    """An XREAD BLOCK ended by the server (failover, role change): a wake, not a failure."""
    return isinstance(reply, redis_errors.ResponseError) and str(reply).startswith("UNBLOCKED")


def request_id() -> str:
    """A fresh id for a request that must not run twice when the client re-sends it after a dropped connection."""
    return os.urandom(8).hex()


def _ms_clock() -> int:
    return time.time_ns() // 1_000_000


def connect_redis(url: str, settings: Settings) -> Client:
    """A client that fails fast: one immediate retry on a dropped connection (a pooled
    connection is stale after a Redis restart), none on a timeout (the caller should
    learn at once). Re-sending a script is safe: enqueue and fanout are idempotent by
    task id (fixed before the call), ack, extend, checkpoint and release by state, and
    read, fail, recover, replay and purge carry a request id whose first answer is kept.

    ``redis+cluster://host:port`` (or ``rediss+cluster://``) selects Redis Cluster.
    """
    retry = Retry(NoBackoff(), 1, supported_errors=(redis_errors.ConnectionError,))
    timeout = settings.socket_timeout_s
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        return RedisCluster.from_url(
            f"{CLUSTER_SCHEMES[scheme]}://{rest}", retry=retry, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return Redis.from_url(url, retry=retry, socket_timeout=timeout, socket_connect_timeout=timeout)


class QueueBase:
    """Clients, scripts and key names for one consumer name; operations build on it."""

    def __init__(
        self,
        settings: Settings,
        redis: Client | None = None,
        *,
        consumer: str | None = None,
        clock: Callable[[], int] = _ms_clock,
    ) -> None:
        self.settings = settings
        self.consumer = consumer or settings.consumer
        self._redis = redis
        self._owns_redis = redis is None
        self._scripts: dict[str, AsyncScript] = {}
        self._keys: dict[str, QueueKeys] = {}
        self._touched: set[str] = set()
        self._node_clients: dict[str, Redis] = {}
        self._lane: Lane | None = None
        self._now = clock

    # -- connection ------------------------------------------------------------------

    async def connect(self) -> Self:
        """Create the Redis clients and register the scripts (no round trip: Redis may be down)."""
        if self._redis is None:
            url = self.settings.redis_url_value()
            if url is None:
                raise InvalidInput("no Redis URL: set MCP_QUEUE_REDIS_URL or start the embedded Redis first")
            self._redis = connect_redis(url, self.settings)
        if isinstance(self._redis, Redis):
            self._lane = Lane(self._redis.connection_pool, self.settings.socket_timeout_s)
        else:  # a cluster: redis-py's scripts route each call to the slot's master
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
            if self._lane is not None:
                await self._lane.aclose()
            for node in self._node_clients.values():
                await node.aclose()
            if self._redis is not None and self._owns_redis:
                await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    @property
    def redis(self) -> Client:
        if self._redis is None:
            raise QueueUnavailable("queue not connected: call connect() first")
        return self._redis

    def keys(self, queue: str) -> QueueKeys:
        found = self._keys.get(queue)
        if found is None:
            found = self._keys[queue] = QueueKeys.for_queue(self.settings.key_prefix, queue)
        return found

    def _script_args(self, queue: str, args: tuple[Any, ...], now: int | None) -> tuple[list[str], list[Any]]:
        k = self.keys(queue)
        keys = [k.high, k.low, k.delayed, k.leases, k.dlq, k.stats]
        return keys, [k.base, self.settings.group, self.consumer, self._now() if now is None else now, *args]

    async def _call(self, name: str, queue: str, *args: Any) -> Any:
        keys, argv = self._script_args(queue, args, None)
        with guard():
            if self._lane is not None:
                return await self._lane.script(script_sha(name), script_source(name), keys, argv)
            return await self._scripts[name](keys, argv)

    def _script_command(self, name: str, queue: str, *args: Any, now: int) -> Command:
        """The EVALSHA of a script, to send through the lane behind another command."""
        keys, argv = self._script_args(queue, args, now)
        return ("EVALSHA", script_sha(name), len(keys), *keys, *argv)

    async def _block(self, xread: Command) -> None:
        """Wait in XREAD BLOCK: through the lane on a standalone Redis, else redis-py's client.
        A forced unblock (the node became a replica in a failover) ends the wait like an entry."""
        with guard():
            if self._lane is not None:
                (reply,) = await self._lane.execute(xread)
                if isinstance(reply, redis_errors.ResponseError) and not unblocked(reply):
                    raise reply
                return
            try:
                await self.redis.execute_command(*xread)
            except redis_errors.ResponseError as exc:
                if not unblocked(exc):
                    raise

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

    async def confirm_replicas(self, queue: str) -> int | None:
        """How many replicas have every write made so far to ``queue``'s node (None: not asked).

        WAIT counts the writes of its own connection, so a write to the queue's ``sync`` key
        goes first on the same connection: its offset is at least that of the caller's
        earlier writes. In a cluster that connection goes straight to the slot's master.
        With ``wait_aof`` it is WAITAOF, which also waits for the local AOF fsync.

        Raises:
            QueueError: WAITAOF asked of a server without it (Redis < 7.2) or without AOF.
        """
        s = self.settings
        if s.wait_replicas == 0 and not s.wait_aof:
            return None
        key = self.keys(queue).sync
        with guard():
            async with self._node_client(key).pipeline(transaction=False) as pipe:
                pipe.set(key, self._now(), px=60_000)
                if s.wait_aof:
                    pipe.execute_command("WAITAOF", 1, s.wait_replicas, s.wait_timeout_ms)
                else:
                    pipe.execute_command("WAIT", s.wait_replicas, s.wait_timeout_ms)
                _, confirmed = await pipe.execute()
        if s.wait_aof:
            local, replicas = confirmed
            if not int(local):
                raise QueueUnavailable("the enqueue is not yet fsynced to the AOF (WAITAOF timed out); retry it")
            return int(replicas)
        return int(confirmed)

    def _node_client(self, key: str) -> Redis:
        client = self.redis
        if isinstance(client, Redis):
            return client
        node = client.get_node_from_key(key)
        if node is None:
            raise QueueUnavailable("queue store unavailable (no cluster node serves this queue yet); retry shortly")
        found = self._node_clients.get(node.name)
        if found is None:
            pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
            found = self._node_clients[node.name] = Redis.from_pool(pool)
        return found
