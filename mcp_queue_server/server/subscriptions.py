"""Resource subscriptions backed by Redis: a task's subscriber hears of it whichever process changed it.

The SDK serves ``subscriptions/listen`` (SEP-2575) over a pluggable ``SubscriptionBus``;
its default keeps events in process memory, so a client listening through server process A
would never hear of a task that process B finished. :class:`RedisSubscriptionBus` feeds the
bus from the queues' events streams (:mod:`mcp_queue_server.core.events`), which every script
that finishes a task writes to: while anyone listens, one tailer per known queue waits in
XREAD BLOCK on ``<base>events`` and publishes, for each entry,

* ``ResourceUpdated("task://<queue>/<task_id>")`` for every task it names (completed, failed);
* one ``ResourceUpdated("queue://<queue>/stats")`` (its totals changed).

Events the server publishes itself (``ctx.notify_*``) reach this process's listeners only.
Delivery follows the spec: fire-and-forget, no replay; a listener re-reads the resource.

Tailers start a little in the past (:data:`START_MARGIN_MS` before the first listener came),
so a task finished while the tailer was still starting is announced rather than lost (a
listener may hear of a change twice: it re-reads either way). Queues added to the registry
later are picked up within :data:`REGISTRY_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from mcp.server.subscriptions import ResourceUpdated, ServerEvent

from mcp_queue_server.errors import QueueError

if TYPE_CHECKING:
    from mcp_queue_server.core.queue import TaskQueue
    from mcp_queue_server.server.lifespan import ServerState

logger = logging.getLogger(__name__)

#: How far before the first listener the tailers start reading (covers their own start-up
#: and the skew between this host's clock and Redis's, which stamps the stream ids).
START_MARGIN_MS = 5_000
#: How often the tailers look for queues new to the registry.
REGISTRY_EVERY_S = 2.0
#: Longest one XREAD BLOCK of a tailer (below the socket timeout; see TaskQueue.read_events).
TAIL_BLOCK_MS = 2_000
#: Wait before trying again when the store is unreachable.
RETRY_S = 1.0


def task_uri(queue: str, task_id: str) -> str:
    return f"task://{queue}/{task_id}"


def stats_uri(queue: str) -> str:
    return f"queue://{queue}/stats"


class RedisSubscriptionBus:
    """A ``SubscriptionBus`` whose resource events come from Redis (see the module docstring).

    ``publish`` fans an event out to this process's listeners; ``subscribe`` registers one and,
    for the first, starts the tailers (stopped again when the last one leaves).
    """

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def publish(self, event: ServerEvent) -> None:
        self._deliver(event)
        await anyio.lowlevel.checkpoint()

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        token = object()
        self._listeners[token] = listener
        if self._watcher is None or self._watcher.done():
            since_ms = time.time_ns() // 1_000_000 - START_MARGIN_MS
            self._watcher = asyncio.get_running_loop().create_task(self._watch(since_ms))

        def unsubscribe() -> None:
            self._listeners.pop(token, None)
            if not self._listeners and self._watcher is not None:
                self._watcher.cancel()
                self._watcher = None

        return unsubscribe

    def _deliver(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # fan-out boundary: one bad listener must not starve the others
                logger.exception("subscription listener raised; continuing")

    async def _watch(self, since_ms: int) -> None:
        """Tail every known queue's events stream until cancelled (the last listener left)."""
        tailed: set[str] = set()
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    queue = await self._state.queue()
                    for name in await queue.known_queues():
                        if name not in tailed:
                            tailed.add(name)
                            tg.start_soon(self._tail, queue, name, f"{since_ms}-0")
                except QueueError as exc:
                    logger.warning("resource subscriptions cannot list the queues: %s", exc)
                # Queues new to the registry start where they were found (their whole stream is recent).
                since_ms = time.time_ns() // 1_000_000 - START_MARGIN_MS
                await anyio.sleep(REGISTRY_EVERY_S)

    async def _tail(self, queue: TaskQueue, name: str, after: str) -> None:
        while True:
            try:
                got = await queue.read_events(after, TAIL_BLOCK_MS, queue=name)
            except QueueError as exc:
                logger.warning("resource subscriptions of queue %s paused: %s", name, exc)
                await anyio.sleep(RETRY_S)
                continue
            for entry in got:
                after = entry.entry_id
                for task_id in entry.tasks:
                    self._deliver(ResourceUpdated(uri=task_uri(name, task_id)))
            if got:
                self._deliver(ResourceUpdated(uri=stats_uri(name)))
            await anyio.lowlevel.checkpoint()
