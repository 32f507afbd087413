"""Looking at and repairing a queue: task status, statistics, dead letters, recovery."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from mcp_queue_server.core import codec
from mcp_queue_server.core.connection import DEFAULT_QUEUE, QueueBase, guard, request_id
from mcp_queue_server.core.models import ConsumerInfo, DeadLetterPage, QueueStats, RecoveryReport, TaskInfo
from mcp_queue_server.core.scripts import OK, raise_for, text
from mcp_queue_server.errors import InvalidInput, TaskNotFound
from mcp_queue_server.limits import check_int, check_task_id

_CURSOR_CHARS = frozenset("0123456789-")


class AdminOps(QueueBase):
    """Read-mostly operations; see :class:`~mcp_queue_server.core.queue.TaskQueue`."""

    async def get_task(self, task_id: str, *, queue: str = DEFAULT_QUEUE) -> TaskInfo:
        """Everything known about a task: status, attempt, result, error, checkpoint, lease, fanout.

        Raises:
            TaskNotFound: no such task (never created, purged, or its record expired).
        """
        k = self.keys(queue)
        task_id = check_task_id(task_id)
        with guard():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(k.task(task_id))
                pipe.get(k.checkpoint(task_id))
                pipe.hgetall(k.fanout(task_id))
                pipe.hgetall(k.fanout_results(task_id))
                raw, ckpt, fo, fr = await pipe.execute()
        if not raw:
            raise TaskNotFound(f"task {task_id} not found in queue {queue}: check the id and the queue name")
        return codec.task_info(task_id, queue, raw, ckpt, fo, fr)

    async def get_queue_stats(self, queue: str = DEFAULT_QUEUE) -> QueueStats:
        """Depths per stream, in flight, delayed, dead letters, consumers, oldest-task age, totals."""
        k = self.keys(queue)
        group = self.settings.group
        with guard():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xlen(k.high)
                pipe.xlen(k.low)
                pipe.xpending(k.high, group)
                pipe.xpending(k.low, group)
                pipe.xinfo_groups(k.high)
                pipe.xinfo_groups(k.low)
                pipe.xinfo_consumers(k.high, group)
                pipe.xinfo_consumers(k.low, group)
                pipe.zcard(k.delayed)
                pipe.xlen(k.dlq)
                pipe.hgetall(k.stats)
                replies = await pipe.execute(raise_on_error=False)
            stats, last_ids = codec.queue_stats(queue, self._now(), replies, group)
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, last in zip(k.streams, last_ids, strict=True):
                    pipe.xrange(stream, b"(" + last, "+", count=1)
                firsts = await pipe.execute(raise_on_error=False)
        age = codec.oldest_age(self._now(), firsts)
        return dataclasses.replace(stats, oldest_waiting_age_ms=age)

    async def get_consumer_info(self, queue: str = DEFAULT_QUEUE) -> list[ConsumerInfo]:
        """The consumers of the queue's group with their in-flight counts and idle times."""
        return (await self.get_queue_stats(queue)).consumers

    async def recover(self, min_idle_ms: int | None = None, *, queue: str = DEFAULT_QUEUE) -> RecoveryReport:
        """Requeue tasks whose lease expired (or, with ``min_idle_ms``, that nobody touched
        for that long, whatever their lease) and dead-letter those out of attempts."""
        idle = "" if min_idle_ms is None else check_int("min_idle_ms", min_idle_ms, 0, 30 * 86_400_000)
        limit = self.settings.pending_batch_size
        requeued: list[str] = []
        dead: list[str] = []
        while True:
            again, gone = await self._call("recover", queue, idle, limit, request_id())
            requeued += [text(i) for i in again]
            dead += [text(i) for i in gone]
            if len(again) + len(gone) < limit:
                return RecoveryReport(requeued, dead)

    get_pending_tasks = recover

    async def inspect_dlq(
        self, count: int = 10, cursor: str | None = None, *, newest_first: bool = True, queue: str = DEFAULT_QUEUE
    ) -> DeadLetterPage:
        """One page of dead-lettered tasks; pass ``next_cursor`` back to get the next page."""
        count = check_int("count", count, 1, 1000)
        if cursor is not None and (not cursor or len(cursor) > 41 or not set(cursor) <= _CURSOR_CHARS):
            raise InvalidInput("cursor must be a next_cursor value returned by an earlier inspect_dlq call")
        reply = await self._call("inspect_dlq", queue, count, cursor or "", int(newest_first))
        nxt = text(reply[0]) or None
        return DeadLetterPage(tasks=[codec.dead_task(row) for row in reply[1:]], next_cursor=nxt)

    async def replay_dlq(self, task_ids: list[str] | None = None, *, queue: str = DEFAULT_QUEUE) -> list[str]:
        """Put dead tasks back in their stream with a fresh attempt budget (``None``: all of them).

        Raises:
            TaskNotFound / InvalidState: an id is unknown or not dead-lettered; nothing was replayed.
        """
        replayed: list[str] = []
        async for reply in self._dlq_batches("replay", task_ids, queue):
            replayed += [text(i) for i in reply[1]]
        return replayed

    async def purge_dlq(self, task_ids: list[str] | None = None, *, queue: str = DEFAULT_QUEUE) -> int:
        """Delete dead tasks for good (``None``: all of them); returns how many.

        Raises:
            TaskNotFound / InvalidState: an id is unknown or not dead-lettered; nothing was purged.
        """
        purged = 0
        async for reply in self._dlq_batches("purge", task_ids, queue):
            purged += int(reply[1])
        return purged

    async def _dlq_batches(self, script: str, task_ids: list[str] | None, queue: str) -> AsyncIterator[Any]:
        limit = self.settings.pending_batch_size
        if task_ids is not None:
            if not task_ids:
                raise InvalidInput("task_ids must not be empty (or ask for all)")
            ids = [check_task_id(i) for i in task_ids]
            reply = await self._call(script, queue, request_id(), len(ids), *ids)
            if reply[0] != OK:
                raise_for(reply[0], reply, text(reply[1]))
            yield reply
            return
        while True:
            reply = await self._call(script, queue, request_id(), 0, limit)
            yield reply
            if int(reply[2]) < limit:
                return
