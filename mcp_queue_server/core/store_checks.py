"""What the queue store says about itself, and how its failures become queue errors.

:func:`guard` maps a Redis failure to a :class:`~mcp_queue_server.errors.QueueError` (a
configuration mistake, the store full, or just unavailable); :class:`StoreChecks`, a mixin
of :class:`~mcp_queue_server.core.connection.Connection`, reads the store's memory policy
and refuses writes while it may evict task records, and keeps the registry of queues.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster

from mcp_queue_server.core.keys import QueueKeys, registry_index_key, registry_key
from mcp_queue_server.core.models import StoreInfo
from mcp_queue_server.errors import QueueError, QueueUnavailable, StoreFull, StoreMisconfigured
from mcp_queue_server.settings import Settings

# The logger keeps connection's name: operators filter on it, and the warning is the same one.
logger = logging.getLogger("mcp_queue_server.core.connection")

#: A standalone or cluster client; both run the same scripts, since all keys of a queue share a slot.
Client = Redis | RedisCluster


#: What a configuration mistake looks like to the caller: the likely cause, never the URL.
_URL = "MCP_QUEUE_REDIS_URL"
_AUTH = (
    f"the queue store refused the credentials (wrong or missing user/password): check them in {_URL} "
    "(a Redis ACL user needs the rights listed in the README)"
)
_TLS = f"the TLS handshake with the queue store failed: check rediss:// vs redis:// and the certificate in {_URL}"
_HOST = f"the queue store's host name does not resolve: check the host in {_URL}"
_REFUSED = (
    f"queue store unavailable: nothing accepts connections at its address (Redis is down or restarting, or "
    f"the host, port or socket path in {_URL} is wrong); nothing was lost, retry in a few seconds if it was running"
)
#: getaddrinfo errors that mean "no such name" (EAI_AGAIN, a resolver hiccup, stays transient).
_NO_SUCH_HOST = {getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA", "EAI_FAIL") if hasattr(socket, name)}
_OOM = "command not allowed when used memory"
_FULL = (
    "the queue store is full (Redis reached maxmemory) and refused the write; nothing was written. Memory frees "
    "as workers ack or fail their tasks; an operator can purge the dead-letter queue (purge_dlq), shorten "
    "MCP_QUEUE_RESULT_TTL_S or raise maxmemory. Reads, acks, fails and purges still work"
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    for _ in range(8):  # redis-py wraps the socket error once or twice
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def store_error(exc: BaseException) -> QueueError:
    """The queue error for a failure to reach Redis: a configuration mistake (credentials, TLS,
    unknown host) is :class:`StoreMisconfigured`, not retryable; everything else (a refused or
    dropped connection, a timeout, a cluster in flux) is :class:`QueueUnavailable`. Decided by
    exception type and errno, never by echoing the error's text (it names the host)."""
    for cause in _causes(exc):
        if isinstance(cause, redis_errors.AuthenticationError | redis_errors.AuthenticationWrongNumberOfArgsError):
            return StoreMisconfigured(_AUTH)
        if isinstance(cause, ssl.SSLError):
            return StoreMisconfigured(_TLS)
        if isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_HOST:
            return StoreMisconfigured(_HOST)
        if isinstance(cause, ConnectionRefusedError | FileNotFoundError) or (
            isinstance(cause, OSError) and cause.errno in (errno.ECONNREFUSED, errno.ENOENT)
        ):
            return QueueUnavailable(_REFUSED)
    return QueueUnavailable(f"queue store unavailable ({type(exc).__name__}); nothing was lost, retry in a few seconds")


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
        raise store_error(exc) from None
    except redis_errors.AuthenticationWrongNumberOfArgsError:
        raise StoreMisconfigured(_AUTH) from None
    except redis_errors.ResponseError as exc:
        # Redis 6.2 wraps a script's OOM as "ERR Error running script ... -OOM ...", 7.x passes it on.
        if isinstance(exc, redis_errors.OutOfMemoryError) or _OOM in str(exc):
            raise StoreFull(_FULL) from None
        raise QueueError(f"queue store refused the operation: {str(exc)[:200]}") from None


def eviction_refusal(policy: str) -> str:
    return (
        f"the queue store's maxmemory-policy is {policy}: Redis may delete task records when memory runs out, "
        "so writes are refused. Fix: CONFIG SET maxmemory-policy noeviction (and in redis.conf), or accept the "
        "risk with MCP_QUEUE_ALLOW_EVICTION=true"
    )


def _str(value: Any) -> str | None:
    return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


def _num(value: Any) -> int | None:
    try:
        return None if value is None else int(_str(value) or "")
    except ValueError:
        return None


class StoreChecks:
    """The store checks of a :class:`~mcp_queue_server.core.connection.Connection`."""

    settings: Settings
    _registered: dict[str, float]  #: queue -> when this process last added it to the registry
    _writable: set[str]  #: queues whose node's memory policy was checked and allows writes
    _policy_unknown_logged: bool

    if TYPE_CHECKING:  # defined by Connection

        @property
        def redis(self) -> Client: ...

        def keys(self, queue: str) -> QueueKeys: ...

        def _node_client(self, key: str) -> Redis: ...

    async def known_queues(self) -> list[str]:
        """Every queue in the registry, sorted."""
        with guard():
            names = await self.redis.smembers(registry_key(self.settings.key_prefix))
        return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    async def queue_names_after(self, after: str | None, count: int) -> list[str]:
        """Up to ``count`` names of the registry after ``after`` (None: from the first), in name
        order: a range of its index, whatever the number of queues. An index whose size differs
        from the set's (an older version registered or forgot a queue, or a register and a forget
        crossed) is rebuilt from the set first."""
        prefix = self.settings.key_prefix
        low = "-" if after is None else "(" + after
        with guard():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.scard(registry_key(prefix))
                pipe.zcard(registry_index_key(prefix))
                pipe.zrangebylex(registry_index_key(prefix), low, "+", 0, count)
                in_set, in_index, names = await pipe.execute()
            if in_set != in_index:
                await self._reindex()
                names = await self.redis.zrangebylex(registry_index_key(prefix), low, "+", 0, count)
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    async def _reindex(self) -> None:
        """Make the registry's index hold the set's names, no more and no fewer (O(queues), rare)."""
        prefix = self.settings.key_prefix
        members = set(await self.known_queues())
        indexed = {_str(n) or "" for n in await self.redis.zrange(registry_index_key(prefix), 0, -1)}
        if members - indexed:
            await self.redis.zadd(registry_index_key(prefix), dict.fromkeys(members - indexed, 0))
        if indexed - members:
            await self.redis.zrem(registry_index_key(prefix), *(indexed - members))

    async def forget_queue(self, queue: str) -> bool:
        """Take ``queue`` out of the registry (its data stays); False: it was not there."""
        self._registered.pop(queue, None)
        with guard():
            removed = await self.redis.srem(registry_key(self.settings.key_prefix), queue)
            await self.redis.zrem(registry_index_key(self.settings.key_prefix), queue)
        return bool(removed)

    async def store_info(self, queue: str) -> StoreInfo:
        """The memory policy, limit and use of the node serving ``queue``: ``INFO memory``, or
        ``CONFIG GET`` when INFO is refused; None for what neither may read (an ACL without
        ``@dangerous`` refuses both)."""
        with guard():
            client: Client = self.redis
            if isinstance(client, RedisCluster):
                await client.initialize()  # learn the slots (a no-op once known)
                client = self._node_client(self.keys(queue).sync)
            try:
                info = await client.info("memory")
                return StoreInfo(
                    _str(info.get("maxmemory_policy")), _num(info.get("maxmemory")), _num(info.get("used_memory"))
                )
            except redis_errors.ResponseError:
                pass
            try:
                got = await client.config_get("maxmemory*")
            except redis_errors.ResponseError:
                return StoreInfo(None, None, None)
        conf = {_str(key): _str(value) for key, value in got.items()}
        return StoreInfo(conf.get("maxmemory-policy"), _num(conf.get("maxmemory")), None)

    async def _check_writable(self, queue: str) -> None:
        """Refuse writes while Redis may evict task records (any maxmemory-policy but
        noeviction), unless the settings accept the risk. Checked once per queue and
        process while it passes; while it refuses, every write checks again (a fixed
        policy takes effect at once)."""
        info = await self.store_info(queue)
        if info.maxmemory_policy is None:
            if not self._policy_unknown_logged:
                self._policy_unknown_logged = True
                logger.warning(
                    "cannot read the queue store's maxmemory-policy (INFO and CONFIG GET refused): make sure it "
                    "is noeviction, or Redis may delete task records when memory runs out"
                )
        elif info.evicting and not self.settings.allow_eviction:
            raise StoreMisconfigured(eviction_refusal(info.maxmemory_policy))
        self._writable.add(queue)
