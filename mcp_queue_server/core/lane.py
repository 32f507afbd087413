"""The fast path for the queue's own commands on a standalone Redis.

redis-py's asyncio command layer (pool locks, observability hooks, retry wrapper, a
pure-Python packer, ``asyncio.wait_for`` per write) costs more than Redis itself: on the
2-core benchmark machine an awaited EVALSHA of the enqueue script ran at 2.8k/s through
``Redis.evalsha`` and 5.7k/s through this lane, and enqueue one at a time in
``python -m benchmarks.run --only enqueue`` went from 2.1k/s to 4.1k/s (plain redis-py XADD:
3.8k/s). The lane keeps redis-py's connections, so TLS, unix sockets, AUTH/ACL,
HELLO and SELECT behave exactly as configured, and skips only the layers above them:
hiredis packs the command, a plain list is the pool (one event loop, no lock needed), and one
``asyncio.timeout`` bounds the whole send-and-read.

Failure semantics match :func:`mcp_queue_server.core.connection.connect_redis`: a dropped connection is
re-sent once on a fresh connection, a timeout is not re-sent. redis-py disconnects a
connection on any error or cancellation mid-command, so a connection back in the list is
either clean or closed (and reconnects on its next use).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection

Command = tuple[Any, ...]


class Lane:
    """Dedicated connections for the queue's scripts, made like ``pool``'s own."""

    def __init__(self, pool: ConnectionPool, timeout_s: float) -> None:
        # The lane bounds each call itself; a socket timeout would add a timer per read.
        self._kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self._connection_class = pool.connection_class
        self._timeout_s = timeout_s
        self._free: list[AbstractConnection] = []
        self._all: list[AbstractConnection] = []

    def _take(self) -> AbstractConnection:
        if self._free:
            return self._free.pop()
        conn: AbstractConnection = self._connection_class(**self._kwargs)
        self._all.append(conn)
        return conn

    async def execute(self, *commands: Command, timeout_s: float | None = None) -> list[Any]:
        """Send ``commands`` in one write and return their replies in order; an error reply
        is returned as its ``ResponseError`` (the connection stays in step)."""
        packed = b"".join(hiredis.pack_command(c) for c in commands)
        limit = self._timeout_s if timeout_s is None else timeout_s
        for attempt in (1, 2):
            conn = self._take()
            try:
                async with asyncio.timeout(limit):
                    await conn.send_packed_command(packed, check_health=False)
                    return [await _reply(conn) for _ in commands]
            except redis_errors.ConnectionError:
                if attempt == 2:
                    raise
            finally:
                self._free.append(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    async def script(self, sha: str, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA, loading the script once if this Redis has not seen it (restart, failover)."""
        (reply,) = await self.execute(("EVALSHA", sha, len(keys), *keys, *args))
        if isinstance(reply, redis_errors.NoScriptError):
            await self.execute(("SCRIPT", "LOAD", source))
            (reply,) = await self.execute(("EVALSHA", sha, len(keys), *keys, *args))
        if isinstance(reply, redis_errors.ResponseError):
            raise reply
        return reply

    async def aclose(self) -> None:
        for conn in self._all:
            await conn.disconnect()
        self._all.clear()
        self._free.clear()


async def _reply(conn: AbstractConnection) -> Any:
    try:
        return await conn.read_response()
    except redis_errors.ResponseError as exc:  # a whole reply was read: the connection is in step
        return exc
