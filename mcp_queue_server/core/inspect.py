"""Looking at and repairing a queue: task status, statistics, dead letters, recovery.

A mixin of :class:`~mcp_queue_server.core.queue.TaskQueue`: it needs only the queue's
:class:`~mcp_queue_server.core.connection.Connection` (``_conn``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from mcp_queue_server.core import codec, codec_admin, events, reads
from mcp_queue_server.core.codec import Refusal, raise_for
from mcp_queue_server.core.connection import Connection, guard, request_id
from mcp_queue_server.core.keys import DEFAULT_QUEUE
from mcp_queue_server.core.models import (
    LISTABLE_STATES,
    TERMINAL_STATES,
    ConsumerInfo,
    DeadLetterPage,
    QueueStats,
    QueueStatsPage,
    RecoveryReport,
    StoreInfo,
    TaskInfo,
    TaskPage,
)
from mcp_queue_server.errors import InvalidInput, TaskNotFound
from mcp_queue_server.limits import (
    MAX_DLQ_PAGE,
    MAX_MIN_IDLE_MS,
    MIN_RECOVER_IDLE_MS,
    STATS_PAGE,
    check_cursor,
    check_int,
    check_list_cursor,
    check_queue_name,
    check_stats_cursor,
    check_task_id,
    check_task_type,
)


class _Picked(Protocol):
    @property
    def picked(self) -> int: ...


_Batch = TypeVar("_Batch", bound=_Picked)


class AdminOps:
    """Read-mostly operations; see :class:`~mcp_queue_server.core.queue.TaskQueue`."""

    _conn: Connection

    async def get_task(self, task_id: str, *, queue: str = DEFAULT_QUEUE, wait_ms: int = 0) -> TaskInfo:
        """Everything known about a task: status, attempt, result, error, checkpoint, lease, fanout.

        ``wait_ms`` > 0: see :meth:`wait_for_task`.

        Raises:
            TaskNotFound: no such task (never created, purged, or its record expired).
        """
        if wait_ms:
            return await self.wait_for_task(task_id, wait_ms, queue=queue)
        return (await self._task_and_last_event(check_task_id(task_id), queue))[0]

    async def wait_for_task(self, task_id: str, wait_ms: int, *, queue: str = DEFAULT_QUEUE) -> TaskInfo:
        """The task once it is completed or failed, or as it is after ``wait_ms`` (0 to the
        server's ``max_block_ms``), whichever comes first; as :meth:`get_task` otherwise.

        No polling: it waits in XREAD BLOCK on the queue's events stream (see
        :mod:`~mcp_queue_server.core.events`), which every script that finishes a task
        writes to, so a task finished by any process wakes it. The record is read again only
        when an event names the task.
        """
        conn = self._conn
        task_id = check_task_id(task_id)
        wait_ms = check_int("wait_ms", wait_ms, 0, conn.settings.max_block_ms)
        deadline = time.monotonic() + wait_ms / 1000
        info, after = await self._task_and_last_event(task_id, queue)
        k = conn.keys(queue)
        while info.status not in TERMINAL_STATES:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                break
            # Cut below the socket timeout, like a blocking read, so one client serves both.
            block_ms = max(int(min(left_s, conn.settings.socket_timeout_s * 0.8) * 1000), 1)
            (reply,) = await conn.commands(
                queue,
                events.xread_command(k, after, block_ms),
                timeout_s=block_ms / 1000 + conn.settings.socket_timeout_s,
            )
            got = events.entries(reply)
            if got:
                after = got[-1].entry_id
            if reply is None or any(task_id in e.tasks for e in got):  # named, or a slice ended: look again
                info = (await self._task_and_last_event(task_id, queue))[0]
        return info

    async def last_event_id(self, queue: str = DEFAULT_QUEUE) -> str:
        """The id of the newest entry of ``queue``'s events stream (``"0-0"``: none yet)."""
        (reply,) = await self._conn.commands(queue, events.last_id_command(self._conn.keys(queue)))
        return events.last_id(reply)

    async def read_events(self, after: str, block_ms: int, *, queue: str = DEFAULT_QUEUE) -> list[events.Finished]:
        """Entries of ``queue``'s events stream after ``after``, waiting up to ``block_ms``
        (below the socket timeout) for one; [] when none came."""
        conn = self._conn
        (reply,) = await conn.commands(
            queue,
            events.xread_command(conn.keys(queue), after, block_ms),
            timeout_s=block_ms / 1000 + conn.settings.socket_timeout_s,
        )
        return events.entries(reply)

    async def _task_and_last_event(self, task_id: str, queue: str) -> tuple[TaskInfo, str]:
        """The task's record, and the last id of the events stream taken just before it (so an
        event after that id is one the record may not show yet: no wake-up is lost)."""
        conn = self._conn
        k = conn.keys(queue)
        with guard():
            async with conn.redis.pipeline(transaction=False) as pipe:
                pipe.execute_command(*events.last_id_command(k))
                reads.task_commands(pipe, k, task_id)
                last, *replies = await pipe.execute()
        info = reads.task_info(task_id, queue, replies)
        if info is None:
            raise TaskNotFound(f"task {task_id} not found in queue {queue}: check the id and the queue name")
        if info.deadline_at is not None and info.status not in TERMINAL_STATES:
            # Only a task with a deadline costs the extra round trip for the queue's clock.
            info = reads.with_overdue(info, await conn.server_now(queue))
        return info, events.last_id(last)

    async def get_queue_stats(self, queue: str = DEFAULT_QUEUE) -> QueueStats:
        """Depths per stream, in flight, overdue, delayed, dead letters, consumers, oldest-task age, totals."""
        conn = self._conn
        k = conn.keys(queue)
        group = conn.settings.group
        now = await conn.server_now(queue)  # the queue's clock: overdue leases, the oldest age
        with guard():
            async with conn.redis.pipeline(transaction=False) as pipe:
                reads.stats_commands(pipe, k, group, now)
                replies = await pipe.execute(raise_on_error=False)
            stats, last_ids = reads.queue_stats(queue, replies, group, now)
            async with conn.redis.pipeline(transaction=False) as pipe:
                for stream, last in zip(k.streams, last_ids, strict=True):
                    pipe.xrange(stream, b"(" + last, "+", count=1)
                reads.limit_commands(pipe, k, [info.key for info in stats.limits], now)
                firsts, counts = _split(await pipe.execute(raise_on_error=False), 2)
        age = reads.oldest_age(now, firsts)
        return dataclasses.replace(stats, oldest_waiting_age_ms=age, limits=reads.limit_counts(stats.limits, counts))

    async def known_queues(self, limit: int | None = None) -> list[str]:
        """Every queue in the registry (added by its first enqueue, fanout or worker heartbeat), sorted;
        ``limit``: the first that many only, read from the registry's index (the cost of a page,
        not of every queue)."""
        if limit is not None:
            return await self._conn.queue_names_after(None, check_int("limit", limit, 1, MAX_DLQ_PAGE))
        return await self._conn.known_queues()

    async def queue_stats_page(self, cursor: str | None = None, count: int = STATS_PAGE) -> QueueStatsPage:
        """One page of :meth:`all_queue_stats`: up to ``count`` (at most ``STATS_PAGE``) known
        queues in name order, after ``cursor`` (``next_cursor`` of the page before; None: the
        first page). In name order, a walk sees every queue known from its start to its end
        exactly once, whatever is added or forgotten meanwhile (a queue added behind the cursor
        shows in the next walk). A page costs the same however many queues there are: a range of
        the registry's index, then one round trip of queue_stats.lua, one per queue.
        """
        count = check_int("count", count, 1, STATS_PAGE)
        after = None if cursor is None else check_stats_cursor(cursor)
        names = await self._conn.queue_names_after(after, count + 1)  # one more: is there a next page?
        if not names and after is None:
            names = [DEFAULT_QUEUE]
        chosen = names[:count]
        return QueueStatsPage(await self.stats_of(chosen), chosen[-1] if len(names) > count else None)

    async def all_queue_stats(self) -> list[QueueStats]:
        """The statistics of every known queue (``default`` when none is known yet), in name order."""
        return await self.stats_of(await self.known_queues() or [DEFAULT_QUEUE])

    async def stats_of(self, queues: Sequence[str]) -> list[QueueStats]:
        """The statistics of each of ``queues``, in their order: ``STATS_PAGE`` queues per round
        trip (queue_stats.lua on each), each the record :meth:`get_queue_stats` reads."""
        names = [check_queue_name(q) for q in queues]
        out: list[QueueStats] = []
        for start in range(0, len(names), STATS_PAGE):
            chunk = names[start : start + STATS_PAGE]
            replies = await self._conn.read_across("queue_stats", chunk, codec_admin.queue_stats_args())
            out += [codec_admin.queue_stats_reply(q, r) for q, r in zip(chunk, replies, strict=True)]
        return out

    async def forget_queue(self, queue: str) -> bool:
        """Take ``queue`` out of the registry; its tasks stay, and its next enqueue (or a
        producer's periodic re-registration) adds it again. False: it was not known."""
        return await self._conn.forget_queue(check_queue_name(queue))

    async def store_info(self, queue: str = DEFAULT_QUEUE) -> StoreInfo:
        """The store's maxmemory-policy, maxmemory and used memory (None: not readable)."""
        return await self._conn.store_info(check_queue_name(queue))

    async def get_consumer_info(self, queue: str = DEFAULT_QUEUE) -> list[ConsumerInfo]:
        """The consumers of the queue's group with their in-flight counts and idle times."""
        return (await self.get_queue_stats(queue)).consumers

    async def recover(self, min_idle_ms: int | None = None, *, queue: str = DEFAULT_QUEUE) -> RecoveryReport:
        """Requeue tasks whose lease expired (or, with ``min_idle_ms`` of at least
        ``MIN_RECOVER_IDLE_MS``, that nobody touched for that long, whatever their lease)
        and dead-letter those out of attempts."""
        idle = (
            None if min_idle_ms is None else check_int("min_idle_ms", min_idle_ms, MIN_RECOVER_IDLE_MS, MAX_MIN_IDLE_MS)
        )
        limit = self._conn.settings.pending_batch_size
        requeued: list[str] = []
        dead: list[str] = []
        while True:
            got = codec.recover_reply(
                await self._conn.script("recover", queue, codec.recover_args(idle, limit, request_id()))
            )
            requeued += got.requeued
            dead += got.dead_lettered
            if len(got.requeued) + len(got.dead_lettered) + len(got.cancelled) < limit:
                return RecoveryReport(requeued, dead)

    async def inspect_dlq(
        self, count: int = 10, cursor: str | None = None, *, newest_first: bool = True, queue: str = DEFAULT_QUEUE
    ) -> DeadLetterPage:
        """One page of dead-lettered tasks; pass ``next_cursor`` back to get the next page."""
        count = check_int("count", count, 1, MAX_DLQ_PAGE)
        if cursor is not None:
            check_cursor(cursor)
        reply = await self._conn.script("inspect_dlq", queue, codec_admin.inspect_dlq_args(count, cursor, newest_first))
        return codec_admin.inspect_dlq_reply(reply)

    async def list_tasks(
        self,
        state: str,
        task_type: str | None = None,
        count: int = 20,
        cursor: str | None = None,
        *,
        queue: str = DEFAULT_QUEUE,
    ) -> TaskPage:
        """One page of the tasks in ``state`` (queued, delayed, working, waiting_children, failed,
        cancelled), in the order of that state's index (queued: stream order, high priority
        first; delayed: by run-at; working: by lease deadline; waiting_children and cancelled:
        by when they got there; failed: the dead-letter queue, oldest first). Pass
        ``next_cursor`` back for the next page (None: the last one).

        Read-only, one script per page, so a page is consistent. Each page looks at ``count``
        index entries at most: with ``task_type`` a page may hold fewer tasks (even none) and
        still have a next one. Across pages, a task that moves meanwhile (a working task whose
        lease was renewed moves on in the leases index) may show twice or not at all.
        """
        if state not in LISTABLE_STATES:
            raise InvalidInput(f"state must be one of {', '.join(LISTABLE_STATES)}, got {state!r}")
        count = check_int("count", count, 1, MAX_DLQ_PAGE)
        position = None if cursor is None else check_list_cursor(state, cursor)
        wanted = None if task_type is None else check_task_type(task_type)
        reply = await self._conn.script("list_tasks", queue, codec_admin.list_args(state, count, wanted, position))
        return codec_admin.list_reply(state, reply)

    async def replay_dlq(self, task_ids: list[str] | None = None, *, queue: str = DEFAULT_QUEUE) -> list[str]:
        """Put dead tasks back in their stream with a fresh attempt budget (``None``: all of them).

        Raises:
            TaskNotFound / InvalidState: an id is unknown or not dead-lettered; nothing was replayed.
        """
        batches = await self._dlq_batches("replay", codec_admin.replay_reply, task_ids, queue)
        return [task_id for batch in batches for task_id in batch.task_ids]

    async def purge_dlq(self, task_ids: list[str] | None = None, *, queue: str = DEFAULT_QUEUE) -> int:
        """Delete dead tasks for good (``None``: all of them); returns how many.

        Raises:
            TaskNotFound / InvalidState: an id is unknown or not dead-lettered; nothing was purged.
        """
        batches = await self._dlq_batches("purge", codec_admin.purge_reply, task_ids, queue)
        await self._forget_if_empty(queue)
        return sum(batch.purged for batch in batches)

    async def _forget_if_empty(self, queue: str) -> None:
        """A queue with nothing left (no task waiting, delayed, in flight or dead, no live
        holder) leaves the registry; its next enqueue adds it again."""
        s = await self.get_queue_stats(queue)
        if not (s.high.length or s.low.length or s.delayed or s.dead_letter or s.consumers or s.limits):
            await self._conn.forget_queue(queue)

    async def _dlq_batches(
        self, script: str, decode: Callable[[Any], _Batch | Refusal], task_ids: list[str] | None, queue: str
    ) -> list[_Batch]:
        """Run ``script`` once on ``task_ids``, or (None) on the oldest dead tasks a batch per
        call until a batch comes back short."""
        limit = self._conn.settings.pending_batch_size
        ids: list[str] | None = None
        if task_ids is not None:
            if not task_ids:
                raise InvalidInput("task_ids must not be empty (or ask for all)")
            ids = [check_task_id(i) for i in task_ids]
        batches: list[_Batch] = []
        while True:
            got = decode(await self._conn.script(script, queue, codec_admin.dlq_args(request_id(), ids, limit)))
            if isinstance(got, Refusal):
                raise_for(got, got.task_id)
            batches.append(got)
            if ids is not None or got.picked < limit:
                return batches


def _split(replies: list[Any], at: int) -> tuple[list[Any], list[Any]]:
    return replies[:at], replies[at:]
