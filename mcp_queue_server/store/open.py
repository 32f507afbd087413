"""Opening the queue store: the embedded Redis when no URL is set, else the URL's Redis.

The one place that turns settings into a connected :class:`TaskQueue`; the server, the
worker runtime, the operator commands and the metrics all open the store through it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from pydantic import SecretStr

from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.errors import QueueUnavailable
from mcp_queue_server.settings import Settings
from mcp_queue_server.store.embedded import EmbeddedRedis

logger = logging.getLogger(__name__)


class Store:
    """The store behind ``settings``: joins the embedded Redis (when no URL is set) on
    :meth:`open` and leaves it on :meth:`close`; queues opened on it share that membership."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._embedded: EmbeddedRedis | None = None

    async def url_settings(self, *, join: bool = True) -> Settings:
        """``settings`` with a Redis URL: the configured one, or the embedded Redis's.

        With ``join`` false the embedded Redis is only addressed, not started or joined (a
        reader such as the metrics must neither start it nor keep it running).

        Raises:
            QueueUnavailable: the embedded Redis could not be started or joined.
        """
        if self.settings.redis_url is not None:
            return self.settings
        if not join:
            url = EmbeddedRedis(self.settings.data_dir).url
        else:
            if self._embedded is None:
                self._embedded = EmbeddedRedis(self.settings.data_dir, maxmemory=self.settings.embedded_maxmemory)
            url = await anyio.to_thread.run_sync(self._embedded.start_or_join)
        return self.settings.model_copy(update={"redis_url": SecretStr(url)})

    async def queue(self, *, consumer: str | None = None, join: bool = True) -> TaskQueue:
        """A connected queue (no round trip: Redis may be down; calls then say so)."""
        return await TaskQueue(await self.url_settings(join=join), consumer=consumer).connect()

    async def close(self) -> None:
        """Leave the embedded Redis (the last user to leave shuts it down; data stays on disk)."""
        embedded, self._embedded = self._embedded, None
        if embedded is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(embedded.leave)


@asynccontextmanager
async def open_queue(
    settings: Settings, *, consumer: str | None = None, release: bool = True
) -> AsyncIterator[TaskQueue]:
    """A connected :class:`TaskQueue` for ``settings``; with no Redis URL it starts or joins
    the embedded Redis in ``settings.data_dir`` and leaves it at the end. With ``release``
    the tasks this consumer still holds are handed back on exit (graceful shutdown)::

        async with open_queue(Settings()) as queue:
            await queue.enqueue("summarise", {"doc": 42})

    Raises:
        QueueUnavailable: the embedded Redis could not be started or joined.
    """
    store = Store(settings)
    try:
        queue = await store.queue(consumer=consumer)
        try:
            yield queue
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await queue.disconnect(release=release)
                except QueueUnavailable:
                    logger.warning("queue store unreachable at exit: held tasks return when their leases expire")
    finally:
        await store.close()
