"""Blocking: wait on a queue's streams in XREAD BLOCK, then run a script behind the wait.

A mixin of :class:`~mcp_queue_server.core.connection.Connection`; a read that finds nothing
waits here (see :meth:`BlockingCalls.block_then_script`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from redis import exceptions as redis_errors

from mcp_queue_server.core.keys import QueueKeys
from mcp_queue_server.core.lane import Lane
from mcp_queue_server.core.scripts import script_sha
from mcp_queue_server.core.store_checks import Client, guard
from mcp_queue_server.settings import Settings


def unblocked(reply: object) -> bool:
    """An XREAD BLOCK ended by the server (failover, role change): a wake, not a failure."""
    return isinstance(reply, redis_errors.ResponseError) and str(reply).startswith("UNBLOCKED")


class BlockingCalls:
    """The blocking waits of a :class:`~mcp_queue_server.core.connection.Connection`."""

    settings: Settings
    consumer: str
    lane: Lane | None

    if TYPE_CHECKING:  # defined by Connection

        @property
        def redis(self) -> Client: ...

        def keys(self, queue: str) -> QueueKeys: ...

        def clock_arg(self) -> str: ...

    async def block_then_script(
        self,
        queue: str,
        block_ms: int,
        after: tuple[Any, Any],
        name: str,
        args: Sequence[Any],
        *,
        on_cancel: Callable[[], Awaitable[None]],
    ) -> Any | None:
        """Wait up to ``block_ms`` in XREAD BLOCK for an entry added to ``queue``'s streams
        after the ids ``after``, then run script ``name``; returns its reply, or None when
        it did not run and the caller should run it afresh.

        Through the lane the script is sent behind the XREAD, so Redis runs it the moment
        the XREAD returns, with no round trip in between (it reads Redis's clock when it
        runs). If the caller is cancelled meanwhile, ``on_cancel`` runs shielded (the
        script may have acted). In a cluster the wait goes alone and None is returned. A
        forced unblock (the node became a replica in a failover) ends the wait like an
        entry; a script lost to it or to a restart (NOSCRIPT) returns None.
        """
        k = self.keys(queue)
        xread = ("XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", k.high, k.low, *after)
        lane = self.lane
        with guard():
            if lane is None:
                await self._block(xread)
                return None
            keys = k.script_keys
            behind = (
                "EVALSHA",
                script_sha(name),
                len(keys),
                *keys,
                k.base,
                self.settings.group,
                self.consumer,
                self.clock_arg(),
            )
            try:
                woke, reply = await lane.execute(
                    xread, (*behind, *args), timeout_s=block_ms / 1000 + self.settings.socket_timeout_s
                )
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await on_cancel()
                raise
            if isinstance(reply, redis_errors.NoScriptError) or (
                unblocked(woke) and isinstance(reply, redis_errors.ResponseError)
            ):
                return None  # Redis restarted or changed role
            for answer in (woke, reply):
                if isinstance(answer, redis_errors.ResponseError) and not unblocked(answer):
                    raise answer
            return reply

    async def _block(self, xread: tuple[Any, ...]) -> None:
        if self.lane is not None:
            (reply,) = await self.lane.execute(xread)
            if isinstance(reply, redis_errors.ResponseError) and not unblocked(reply):
                raise reply
            return
        try:
            await self.redis.execute_command(*xread)
        except redis_errors.ResponseError as exc:
            if not unblocked(exc):
                raise
