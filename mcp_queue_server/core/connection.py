"""One queue client's link to Redis: clients, the clock, script calls, replicas.

Its blocking waits are the :mod:`~mcp_queue_server.core.blocking` mixin; the store checks
(memory policy, the registry) and the mapping of Redis failures to queue errors
(:func:`guard`) are :mod:`~mcp_queue_server.core.store_checks`.

:class:`Connection` hides which path a call takes: on a standalone Redis the queue's own
commands go through the lane (``lane.py``), in a cluster through redis-py's script
objects and clients, which route each call to its slot's master. The queue's operations
(``queue.py``, ``inspect.py``) only say which script to run with which arguments.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from typing import Any, Protocol

from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mcp_queue_server.core.blocking import BlockingCalls, unblocked
from mcp_queue_server.core.keys import QueueKeys, registry_index_key, registry_key
from mcp_queue_server.core.lane import Lane
from mcp_queue_server.core.scripts import AsyncScript, register_all, script_sha, script_source

# Re-exported (`X as X`): the queue, inspect, the server and tests import them from here.
from mcp_queue_server.core.store_checks import Client as Client
from mcp_queue_server.core.store_checks import StoreChecks
from mcp_queue_server.core.store_checks import eviction_refusal as eviction_refusal
from mcp_queue_server.core.store_checks import guard as guard
from mcp_queue_server.core.store_checks import store_error as store_error
from mcp_queue_server.errors import InvalidInput, QueueUnavailable
from mcp_queue_server.limits import REGISTRY_REFRESH_S
from mcp_queue_server.settings import CLUSTER_SCHEMES, Settings


def request_id() -> str:
    """A fresh id for a request that must not run twice when the client re-sends it after a dropped connection."""
    return os.urandom(8).hex()


class ScriptClock(Protocol):
    """A clock handed to :class:`Connection` in code by a test or a negative control, never
    by a setting: ``script_arg()`` is ARGV[4] of every script (see ``lua/_lib.lua``). Without
    one the scripts run on the Redis server's clock, unmoved."""

    def script_arg(self) -> str:
        """An offset in ms added to Redis's clock, or "@<ms>": that time instead of Redis's."""
        ...


class ClientWallClock:
    """Negative controls only (the chaos harness): the scripts run on this process's wall
    clock, as before issue 12, so a client whose clock is off takes valid leases or keeps
    expired ones. Nothing in the package uses it."""

    def script_arg(self) -> str:
        return f"@{time.time_ns() // 1_000_000}"


#: The clock of every Connection made without one: None (Redis's clock) unless a negative
#: control calls :func:`run_on_client_clock_for_negative_control` in its own process.
_default_clock: ScriptClock | None = None


def run_on_client_clock_for_negative_control() -> None:
    """Make every Connection of this process run its scripts on the process's wall clock
    (:class:`ClientWallClock`). For the chaos harness's negative control only."""
    global _default_clock
    _default_clock = ClientWallClock()


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


class Connection(StoreChecks, BlockingCalls):
    """The clients and scripts of one consumer name, and the key names of its queues."""

    #: A view made by :meth:`for_consumer`: it shares the clients and does not close them.
    _is_view: bool = False

    def __init__(
        self,
        settings: Settings,
        redis: Client | None = None,
        *,
        consumer: str | None = None,
        clock: ScriptClock | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer or settings.consumer
        self._clock = clock if clock is not None else _default_clock
        self._redis = redis
        self._owns_redis = redis is None
        self._scripts: dict[str, AsyncScript] = {}
        self._keys: dict[str, QueueKeys] = {}
        self._node_clients: dict[str, Redis] = {}
        self._registered: dict[str, float] = {}  #: queue -> when this process last added it to the registry
        self._writable: set[str] = set()  #: queues whose node's memory policy was checked and allows writes
        self._policy_unknown_logged = False
        self.lane: Lane | None = None  #: the fast path, on a standalone Redis once opened

    async def open(self) -> None:
        """Create the Redis clients and register the scripts (no round trip: Redis may be down)."""
        if self._redis is None:
            url = self.settings.redis_url_value()
            if url is None:
                raise InvalidInput("no Redis URL: set MCP_QUEUE_REDIS_URL or start the embedded Redis first")
            self._redis = connect_redis(url, self.settings)
        if isinstance(self._redis, Redis):
            self.lane = Lane(self._redis.connection_pool, self.settings.socket_timeout_s)
        else:  # a cluster: redis-py's scripts route each call to the slot's master
            self._scripts = register_all(self._redis)

    @property
    def opened(self) -> bool:
        return self._redis is not None

    def for_consumer(self, consumer: str) -> Connection:
        """This connection acting as ``consumer``: the same clients, pool, lane and caches under
        another consumer name (one holder per MCP session of a server process). Closing the
        view closes nothing; the connection it came from owns the clients."""
        view = copy.copy(self)
        view.consumer = consumer
        view._is_view = True
        return view

    async def close(self) -> None:
        if self._is_view:
            return  # a view from for_consumer(): the clients belong to the connection it came from
        if self.lane is not None:
            await self.lane.aclose()
        for node in self._node_clients.values():
            await node.aclose()
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()

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

    # -- clock -----------------------------------------------------------------------

    def clock_arg(self) -> str:
        """ARGV[4] of every script: "" (Redis's clock) unless a test clock was given in code."""
        return "" if self._clock is None else self._clock.script_arg()

    async def server_now(self, queue: str) -> int:
        """The queue's clock now (ms since the epoch): TIME of the master serving ``queue``
        (plus a test clock's offset), the clock its scripts decide by."""
        arg = self.clock_arg()
        if arg.startswith("@"):
            return int(arg[1:])
        with guard():
            if isinstance(self.redis, RedisCluster):
                await self.redis.initialize()  # learn the slots (a no-op once known)
            seconds, micros = await self._node_client(self.keys(queue).sync).time()
        return seconds * 1000 + micros // 1000 + int(arg or 0)

    # -- scripts ---------------------------------------------------------------------

    async def script(self, name: str, queue: str, args: Sequence[Any], *, register: bool = False) -> Any:
        """Run script ``name`` on ``queue`` with ``args`` (the ARGV after base, group, consumer, clock).

        ``register`` (enqueue, fanout): also add ``queue`` to the registry of queues. The
        registry is one set outside the queue's hash tag, which a queue's script may not
        write on a Redis Cluster, so the SADD goes as its own command: on a standalone
        Redis in the same write as the script (no extra round trip), in a cluster just
        before it. It is idempotent, so it is sent once per queue per process (again after
        ``REGISTRY_REFRESH_S``, in case an operator forgot the queue meanwhile), not per call.
        """
        if queue not in self._writable and name not in ("inspect_dlq", "list_tasks"):
            await self._check_writable(queue)
        k = self.keys(queue)
        argv = [k.base, self.settings.group, self.consumer, self.clock_arg(), *args]
        with guard():
            if register:
                seen = self._registered.get(queue)
                if seen is None or time.monotonic() - seen > REGISTRY_REFRESH_S:
                    return await self._script_and_register(name, queue, k, argv)
            if self.lane is not None:
                return await self.lane.script(script_sha(name), script_source(name), k.script_keys, argv)
            return await self._scripts[name](list(k.script_keys), argv)

    async def scripts(self, queue: str, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run several scripts on ``queue`` in one round trip, in order (each ``(name, args)`` as
        :meth:`script` takes them). Through the lane they go in one write, so Redis runs them
        back to back; in a cluster one after the other. A script's error reply is returned in
        its place, not raised, so the caller can undo what the others did (see
        :meth:`raise_reply`)."""
        if queue not in self._writable:
            await self._check_writable(queue)
        k = self.keys(queue)
        head = [k.base, self.settings.group, self.consumer, self.clock_arg()]
        keys = k.script_keys
        out: list[Any] = []
        with guard():
            if self.lane is None:
                for name, args in calls:
                    try:
                        out.append(await self._scripts[name](list(keys), [*head, *args]))
                    except redis_errors.ResponseError as exc:
                        out.append(exc)
                return out
            replies = await self.lane.execute(
                *(("EVALSHA", script_sha(name), len(keys), *keys, *head, *args) for name, args in calls)
            )
            for (name, args), reply in zip(calls, replies, strict=True):
                if isinstance(reply, redis_errors.NoScriptError):  # Redis restarted: this one did not run
                    try:
                        reply = await self.lane.script(script_sha(name), script_source(name), keys, [*head, *args])
                    except redis_errors.ResponseError as exc:
                        reply = exc
                out.append(reply)
        return out

    async def read_across(self, name: str, queues: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """Run the read-only script ``name`` once on each of ``queues`` (the same ``args``), in one
        round trip: one write through the lane, or a cluster pipeline (one round trip per master).
        Replies in order; an error reply is raised."""
        calls = [
            (self.keys(q).script_keys, [self.keys(q).base, self.settings.group, self.consumer, self.clock_arg(), *args])
            for q in queues
        ]
        sha = script_sha(name)
        with guard():
            if self.lane is not None:
                replies = await self.lane.execute(*(("EVALSHA", sha, len(keys), *keys, *argv) for keys, argv in calls))
                if any(isinstance(r, redis_errors.NoScriptError) for r in replies):  # Redis restarted: load, again
                    await self.lane.execute(("SCRIPT", "LOAD", script_source(name)))
                    replies = await self.lane.execute(
                        *(("EVALSHA", sha, len(keys), *keys, *argv) for keys, argv in calls)
                    )
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for keys, argv in calls:
                        pipe.evalsha(sha, len(keys), *keys, *argv)
                    replies = await pipe.execute(raise_on_error=False)
                for i, reply in enumerate(replies):
                    if isinstance(reply, redis_errors.NoScriptError):  # this master has not seen it: once per master
                        replies[i] = await self._scripts[name](list(calls[i][0]), calls[i][1])
            for reply in replies:
                if isinstance(reply, redis_errors.ResponseError):
                    raise reply
        return list(replies)

    @staticmethod
    def raise_reply(reply: Any) -> Any:
        """``reply`` of :meth:`scripts`, or its error raised as the queue error it maps to."""
        if isinstance(reply, redis_errors.ResponseError):
            with guard():
                raise reply
        return reply

    async def commands(self, queue: str, *commands: tuple[Any, ...], timeout_s: float | None = None) -> list[Any]:
        """Plain commands naming only ``queue``'s keys, in one round trip to its node, replies
        in order (error replies raised; a forced unblock of an XREAD BLOCK comes back None).
        ``timeout_s`` bounds a blocking one (default: the socket timeout)."""
        with guard():
            if self.lane is not None:
                replies = await self.lane.execute(*commands, timeout_s=timeout_s)
            else:
                if isinstance(self.redis, RedisCluster):
                    await self.redis.initialize()  # learn the slots (a no-op once known)
                async with self._node_client(self.keys(queue).sync).pipeline(transaction=False) as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    replies = await pipe.execute(raise_on_error=False)
            out: list[Any] = []
            for reply in replies:
                if unblocked(reply):
                    reply = None
                elif isinstance(reply, redis_errors.ResponseError):
                    raise reply
                out.append(reply)
            return out

    async def _script_and_register(self, name: str, queue: str, k: QueueKeys, argv: list[Any]) -> Any:
        prefix = self.settings.key_prefix
        sadd = ("SADD", registry_key(prefix), queue)
        zadd = ("ZADD", registry_index_key(prefix), 0, queue)
        if self.lane is not None:
            added, _, reply = await self.lane.execute(
                sadd, zadd, ("EVALSHA", script_sha(name), len(k.script_keys), *k.script_keys, *argv)
            )
            if isinstance(reply, redis_errors.NoScriptError):
                reply = await self.lane.script(script_sha(name), script_source(name), k.script_keys, argv)
            elif isinstance(reply, redis_errors.ResponseError):
                raise reply
        else:
            added = await self.redis.execute_command(*sadd)
            await self.redis.execute_command(*zadd)  # another slot than the set's, in a cluster
            reply = await self._scripts[name](list(k.script_keys), argv)
        if not isinstance(added, Exception):
            self._registered[queue] = time.monotonic()
        return reply

    # -- replicas --------------------------------------------------------------------

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
                # Any write will do (WAIT counts offsets): the value is never read, so no clock.
                pipe.set(key, self.consumer, px=60_000)
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
