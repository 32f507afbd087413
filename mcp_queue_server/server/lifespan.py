"""The server's one queue per process, opened by the first session and closed by the last.

stdio and Streamable HTTP enter the MCP lifespan once per process, but the SSE transport
enters it once per connection; all of them must share one :class:`TaskQueue` (one consumer
name), or a closing SSE session would hand back tasks another session still holds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread

from mcp_queue_server.core.keys import DEFAULT_QUEUE
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.core.scheduling import Tick, fire_schedules_forever
from mcp_queue_server.errors import QueueError, QueueUnavailable
from mcp_queue_server.limits import HEARTBEAT_INTERVAL_S
from mcp_queue_server.settings import Role, Settings
from mcp_queue_server.store.open import Store

logger = logging.getLogger(__name__)

#: Longest the shutdown may take (release held tasks, leave the embedded Redis).
SHUTDOWN_TIMEOUT_S = 20.0


class ServerState:
    """What every tool reaches through ``ctx.request_context.lifespan_context``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._queue: TaskQueue | None = None
        self._store = Store(settings)
        self._problem: str | None = None
        self._users = 0
        self._lock = anyio.Lock()
        self._last_beat = -HEARTBEAT_INTERVAL_S
        #: The holder of each open MCP session on HTTP (see server/identity.py), by holder name.
        self._sessions: dict[str, TaskQueue] = {}
        self._ticking = False  #: a schedule ticker runs (one per process)
        self._ticker_ended = anyio.Event()

    @asynccontextmanager
    async def lifespan(self, _server: Any) -> AsyncIterator[ServerState]:
        async with self._lock:
            if self._users == 0:
                await self._open()
            self._users += 1
        try:
            # Each open lifespan (one per process; one per connection on SSE) beats while it
            # lasts; the beats are shared, so several lifespans send one per interval.
            async with anyio.create_task_group() as beats:
                beats.start_soon(self._heartbeat_periodically)
                beats.start_soon(self._fire_schedules)
                try:
                    yield self
                finally:
                    beats.cancel_scope.cancel()
        finally:
            # Shielded: SIGTERM and client disconnects arrive as cancellation, and the
            # held tasks must still go back to the queue.
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + SHUTDOWN_TIMEOUT_S
                async with self._lock:
                    self._users -= 1
                    if self._users == 0:
                        await self._close()

    async def queue(self) -> TaskQueue:
        """The connected queue; retries a failed start-up once per call.

        Raises:
            QueueUnavailable: the queue store could not be opened.
        """
        if self._queue is None:
            async with self._lock:
                if self._queue is None:
                    await self._open()
        if self._queue is None:
            raise QueueUnavailable(f"queue store unavailable: {self._problem}")
        return self._queue

    async def holder_queue(self, holder: str) -> TaskQueue:
        """The queue acting as ``holder`` (a stateless HTTP client's): same clients, own leases."""
        return (await self.queue()).for_consumer(holder)

    async def session_queue(self, holder: str) -> tuple[TaskQueue, bool]:
        """The queue of an MCP session's holder, and whether it was opened by this call; the
        session must call :meth:`end_session` when it ends."""
        base = await self.queue()
        found = self._sessions.get(holder)
        if found is not None:
            return found, False
        found = self._sessions[holder] = base.for_consumer(holder)
        logger.info("session holder %s opened", holder)
        return found, True

    async def end_session(self, holder: str) -> None:
        """Hand back every task the session's holder holds, at once and not charged as an attempt."""
        queue = self._sessions.pop(holder, None)
        if queue is None:
            return
        try:
            released = await queue.release()
        except QueueError as exc:
            logger.warning("session holder %s ended; its tasks return when their leases expire: %s", holder, exc)
        else:
            logger.info("session holder %s ended; %d held task(s) handed back", holder, released)

    def _heartbeat_queues(self) -> list[str]:
        """A server with the worker tools holds ``default`` (and every queue it read) while it
        runs, idle or not: it shows among the queue's consumers."""
        return [DEFAULT_QUEUE] if self.settings.role in (Role.WORKER, Role.ALL) else []

    async def _heartbeat_periodically(self) -> None:
        while True:
            queue = self._queue
            if queue is not None and anyio.current_time() - self._last_beat >= HEARTBEAT_INTERVAL_S * 0.9:
                self._last_beat = anyio.current_time()
                try:
                    await queue.heartbeat(self._heartbeat_queues())
                    for session in list(self._sessions.values()):
                        await session.heartbeat()  # the queues the session read, if any
                except QueueError as exc:
                    logger.debug("heartbeat skipped: %s", exc)
            await anyio.sleep(HEARTBEAT_INTERVAL_S)

    async def _fire_schedules(self) -> None:
        """Fire the due schedules of every known queue while the server runs (each slot once,
        whoever else fires it too). Several lifespans of one process (SSE) share one ticker: the
        others wait and one takes over when the ticking one ends."""
        while self._ticking:  # another lifespan of this process (SSE) ticks: take over when it ends
            await self._ticker_ended.wait()
        self._ticking, self._ticker_ended = True, anyio.Event()
        try:
            await fire_schedules_forever(self, self._schedule_queues)
        finally:
            self._ticking = False
            self._ticker_ended.set()

    async def fire_due_schedules(self, *, queue: str = DEFAULT_QUEUE) -> Tick:
        """The ticker's firing, through the queue once the store is open."""
        return await (await self.queue()).fire_due_schedules(queue=queue)

    async def _schedule_queues(self) -> list[str]:
        # Not self.queue(): a store that could not be opened is retried by tool calls, not every tick.
        if self._queue is None:
            return []
        return await self._queue.known_queues() or [DEFAULT_QUEUE]

    async def _open(self) -> None:
        try:
            # The server starts even when Redis is down or misconfigured: it says so once here,
            # and every tool call says so until it is fixed.
            self._queue = await self._store.queue()
            self._problem = None
        except QueueError as exc:
            self._problem = str(exc)
            logger.error("cannot open the queue store: %s", exc)  # noqa: TRY400 - the message says it all
        except (ValueError, OSError) as exc:
            # e.g. a malformed Redis URL: name the type only, the text could carry the URL.
            self._problem = f"cannot open the queue store ({type(exc).__name__}); check MCP_QUEUE_REDIS_URL"
            logger.error("%s", self._problem)  # noqa: TRY400
        else:
            try:
                info = await self._queue.check_store()
            except QueueError as exc:
                logger.error("queue store unreachable or misconfigured: %s", exc)  # noqa: TRY400 - the message says it all
            else:
                logger.info(
                    "queue store ready (consumer %s, role %s, maxmemory-policy %s)",
                    self.settings.consumer,
                    self.settings.role,
                    info.maxmemory_policy or "not readable",
                )

    async def _close(self) -> None:
        for holder in list(self._sessions):
            await self.end_session(holder)
        queue, self._queue = self._queue, None
        if queue is not None:
            try:
                await queue.disconnect(release=True)
                logger.info("queue closed; held tasks were handed back")
            except QueueUnavailable:
                logger.warning("queue store unreachable at shutdown: held tasks return when their leases expire")
        await self._store.close()
