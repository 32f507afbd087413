"""Consuming a queue: leasing tasks, then acking, failing, renewing, checkpointing or
handing them back.

A mixin of :class:`~mcp_queue_server.core.queue.TaskQueue`, as
:mod:`~mcp_queue_server.core.inspect` is: it needs only the queue's
:class:`~mcp_queue_server.core.connection.Connection` (``_conn``), its ``settings`` and the
set of queues it read (``_touched``, so :meth:`ConsumeOps.release` knows what to hand back).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

import anyio

import mcp_queue_server.tracing as tracing
from mcp_queue_server.core import codec
from mcp_queue_server.core.codec import ReadReply, ReadRequest, Refusal, raise_for
from mcp_queue_server.core.connection import Connection, guard, request_id
from mcp_queue_server.core.key_limits import client_room
from mcp_queue_server.core.keys import DEFAULT_QUEUE
from mcp_queue_server.core.models import AckResult, FailResult, Lease, Task
from mcp_queue_server.core.scheduling import ScheduleOps
from mcp_queue_server.errors import InvalidInput, QueueError
from mcp_queue_server.limits import (
    MAX_CHECKPOINT_TTL_S,
    check_error,
    check_int,
    check_queue_name,
    check_task_id,
    dump_json,
)
from mcp_queue_server.settings import Settings


class ConsumeOps(ScheduleOps):
    """The consumer's side; see :class:`~mcp_queue_server.core.queue.TaskQueue`. Its reads fire
    due schedules too (throttled), hence the base class."""

    _conn: Connection
    settings: Settings
    consumer: str
    _touched: set[str]
    _deliveries: tracing.Deliveries

    async def release(self, queue: str | None = None) -> int:
        """Hand every task this consumer holds back to its queue at once (not charged as an
        attempt) and leave the consumer group. ``queue`` None: every queue this instance read."""
        queues = [queue] if queue is not None else sorted(self._touched)
        args = codec.release_args(self.settings.pending_batch_size, forget_consumer=True)
        released = 0
        for name in queues:
            more = True
            while more:
                count, more = codec.release_reply(await self._conn.script("release", name, args))
                released += count
        if len(self._deliveries):
            self._deliveries.finish_all(queues, self.consumer, "released")
        return released

    async def release_tasks(self, task_ids: Sequence[str], *, queue: str = DEFAULT_QUEUE) -> int:
        """Hand the given tasks back to ``queue`` at once (not charged as an attempt); ids this
        consumer does not hold are skipped. Returns how many were handed back."""
        check_queue_name(queue)
        ids = [check_task_id(task_id) for task_id in task_ids]
        if not ids:
            return 0
        released = await self._release_ids(queue, ids)
        for task_id in ids if len(self._deliveries) else ():
            self._deliveries.finish(queue, task_id, "released")
        return released

    async def read_messages(
        self,
        count: int | None = None,
        block_ms: int = 0,
        prefer_high_priority: bool = True,
        *,
        lease_ms: int | None = None,
        queue: str = DEFAULT_QUEUE,
    ) -> list[Task]:
        """Lease up to ``count`` tasks to this consumer (re-delivered expired ones first).

        ``block_ms`` = 0 returns at once; otherwise waits up to ``block_ms`` for a task.
        A read cancelled after tasks were leased hands them back before it unwinds.
        """
        s = self.settings
        count = check_int("count", s.read_batch_size if count is None else count, 1, s.max_read_count)
        block_ms = check_int("block_ms", block_ms, 0, s.max_block_ms)
        lease_ms = check_int("lease_ms", s.lease_ms if lease_ms is None else lease_ms, 1, s.max_lease_ms)
        check_queue_name(queue)
        self._touched.add(queue)
        await self._tick_schedules_from_read(queue)
        deadline = time.monotonic() + block_ms / 1000
        req = ReadRequest(count, lease_ms, int(prefer_high_priority), s.pending_batch_size)
        # "" unless the limits negative control counts each key's room here, once per call (stale by design).
        room = await client_room(self._conn, queue)
        return await self._until_tasks(queue, req, await self._fresh_read(queue, req, room), deadline, room)

    read_tasks = read_messages

    async def _until_tasks(
        self, queue: str, req: ReadRequest, got: ReadReply, deadline: float, room: str
    ) -> list[Task]:
        """The tasks of read ``got``, else wait for some (until ``deadline``, monotonic) and read again."""
        while True:
            if got.tasks:
                await self._checkpoint_or_release(queue, got.tasks)
                if tracing.enabled():
                    self._deliveries.delivered(queue, got.tasks, got.traces, self.consumer, req.lease_ms)
                return got.tasks
            wait_s = deadline - time.monotonic()
            if wait_s <= 0:
                return []
            if got.next_wake_ms != -1:  # a delayed task falls due or a lease expires first
                wait_s = min(wait_s, max(got.next_wake_ms - got.now_used, 1) / 1000)
            got = await self._wait_then_read(queue, req, got, wait_s, room)

    async def _wait_then_read(
        self, queue: str, req: ReadRequest, last: ReadReply, wait_s: float, room: str = ""
    ) -> ReadReply:
        """Wait for an entry added after the ``last`` read, then read again.

        The read is sent behind the wait when it can be (see
        :meth:`Connection.block_then_script`). A read cancelled while waiting hands back
        whatever that read may have leased. Waits are cut below the socket timeout, so one
        client serves blocking and plain calls.
        """
        block_ms = max(int(min(wait_s, self.settings.socket_timeout_s * 0.8) * 1000), 1)
        rid = request_id()
        reply = await self._conn.block_then_script(
            queue,
            block_ms,
            last.last_ids,
            "read",
            codec.read_args(req, rid, client_room=room),
            on_cancel=functools.partial(self._hand_back, queue, req, rid),
        )
        if reply is None:
            return await self._fresh_read(queue, req, room)
        return codec.read_reply(reply, queue)

    async def _fresh_read(self, queue: str, req: ReadRequest, room: str = "") -> ReadReply:
        # Shielded: once sent, its reply (and the tasks it leased) must reach the caller.
        with anyio.CancelScope(shield=True):
            reply = await self._conn.script("read", queue, codec.read_args(req, request_id(), client_room=room))
        return codec.read_reply(reply, queue)

    async def _hand_back(self, queue: str, req: ReadRequest, rid: str) -> None:
        """Release the tasks a read with request id ``rid`` leased, if it ran at all."""
        try:
            reply = await self._conn.script("read", queue, codec.read_args(req, rid, recall_only=True))
            ids = [t.task_id for t in codec.read_reply(reply, queue).tasks]
            if ids:
                await self._release_ids(queue, ids)
        except QueueError:
            pass  # Redis is gone: the leases expire and the tasks are delivered again

    async def _release_ids(self, queue: str, task_ids: list[str]) -> int:
        args = codec.release_args(len(task_ids), forget_consumer=False, task_ids=task_ids)
        return codec.release_reply(await self._conn.script("release", queue, args)).released

    async def _checkpoint_or_release(self, queue: str, tasks: list[Task]) -> None:
        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._release_ids(queue, [t.task_id for t in tasks])
            raise

    async def acknowledge(self, task_id: str, result: Any = None, *, queue: str = DEFAULT_QUEUE) -> AckResult:
        """Complete a task this consumer holds, storing ``result``. Acking twice reports
        ``already_completed``; acking a task leased to another raises NotLeaseHolder."""
        outcome = (await self.ack_many([(task_id, result)], queue=queue))[0]
        if isinstance(outcome, QueueError):
            raise outcome
        return outcome

    ack = acknowledge

    async def ack_many(
        self, items: Iterable[str | tuple[str, Any]], *, queue: str = DEFAULT_QUEUE
    ) -> list[AckResult | QueueError]:
        """Ack many tasks in one round trip; each gets its own outcome (result or error)."""
        ids, args = self._ack_args(items)
        if tracing.enabled():
            return await self._traced_ack(queue, ids, args)
        return _ack_outcomes(ids, await self._conn.script("ack", queue, args))

    async def _traced_ack(self, queue: str, ids: list[str], args: list[Any]) -> list[AckResult | QueueError]:
        with tracing.settling("ack", queue, ids, await self._traces_of(queue, ids)) as spans:
            outcomes = _ack_outcomes(ids, await self._conn.script("ack", queue, args))
            _say_acked(spans, outcomes)
        self._acked(queue, ids, outcomes)
        return outcomes

    def _acked(self, queue: str, ids: list[str], outcomes: list[AckResult | QueueError]) -> None:
        """End the acked tasks' delivery spans (after their ack spans: children end first)."""
        for task_id, got in zip(ids, outcomes, strict=True):
            if isinstance(got, QueueError):
                self._deliveries.finish(queue, task_id, "ack_refused", str(got))
            else:
                self._deliveries.finish(queue, task_id, got.status)

    def in_trace(self, task: Task) -> AbstractContextManager[Any]:
        """Run a block inside ``task``'s delivery span when tracing (the worker runs its handler
        so: the handler's own spans and fanouts join the task's trace); else does nothing."""
        return tracing.active(self._deliveries.span(task.queue, task.task_id))

    async def _trace_of(self, queue: str, task_id: str) -> tracing.Context | None:
        return (await self._traces_of(queue, [task_id]))[task_id]

    async def _traces_of(self, queue: str, ids: Sequence[str]) -> dict[str, tracing.Context | None]:
        """Each task's trace: its delivery span open here, else the context it stored (one
        round trip for those, only when tracing is on)."""
        found = {task_id: self._deliveries.context(queue, task_id) for task_id in ids}
        missing = [task_id for task_id, ctx in found.items() if ctx is None]
        if missing:
            k = self._conn.keys(queue)
            with guard():
                async with self._conn.redis.pipeline(transaction=False) as pipe:
                    for task_id in missing:
                        pipe.hget(k.task(task_id), codec.TRACE_FIELD)
                    stored = await pipe.execute()
            found.update(zip(missing, map(tracing.context_of, stored), strict=True))
        return found

    async def ack_and_read(
        self,
        items: Iterable[str | tuple[str, Any]],
        read_next: int,
        *,
        lease_ms: int | None = None,
        prefer_high_priority: bool = True,
        block_ms: int = 0,
        queue: str = DEFAULT_QUEUE,
    ) -> AckedAndRead:
        """Ack like :meth:`ack_many`, then lease up to ``read_next`` new tasks, in one round
        trip: the two scripts go in one write and Redis runs them back to back. ``read_next`` 0
        only acks. When that read finds nothing and ``block_ms`` > 0, wait for tasks as
        :meth:`read_messages` does (a consumer's loop then costs one call per task: no empty
        read before its wait). If the ack fails as a whole (the store refused), what the read
        leased is handed back before the error is raised."""
        deadline = time.monotonic() + block_ms / 1000
        ids, args = self._ack_args(items)
        s = self.settings
        traced = tracing.enabled()
        if read_next == 0:
            if traced:
                return AckedAndRead(await self._traced_ack(queue, ids, args), [])
            return AckedAndRead(_ack_outcomes(ids, await self._conn.script("ack", queue, args)), [])
        count = check_int("read_next", read_next, 0, s.max_read_count)
        block_ms = check_int("block_ms", block_ms, 0, s.max_block_ms)
        lease_ms = check_int("lease_ms", s.lease_ms if lease_ms is None else lease_ms, 1, s.max_lease_ms)
        check_queue_name(queue)
        self._touched.add(queue)
        req = ReadRequest(count, lease_ms, int(prefer_high_priority), s.pending_batch_size)
        parents = await self._traces_of(queue, ids) if traced else {}
        with tracing.settling("ack", queue, ids, parents) if traced else tracing.NOT_SETTLING as spans:
            # Shielded: once sent, the leased tasks must reach the caller (or be handed back).
            with anyio.CancelScope(shield=True):
                room = await client_room(self._conn, queue)
                read_args = codec.read_args(req, request_id(), client_room=room)
                acked, read = await self._conn.scripts(queue, [("ack", args), ("read", read_args)])
                got = None if isinstance(read, Exception) else codec.read_reply(read, queue)
                tasks = [] if got is None else got.tasks
                if isinstance(acked, Exception) and tasks:
                    await self._release_ids(queue, [t.task_id for t in tasks])
            outcomes = _ack_outcomes(ids, self._conn.raise_reply(acked))
            _say_acked(spans, outcomes)
        if traced:
            self._acked(queue, ids, outcomes)
        self._conn.raise_reply(read)
        if got is None:
            return AckedAndRead(outcomes, [])
        return AckedAndRead(outcomes, await self._until_tasks(queue, req, got, deadline, room))

    def _ack_args(self, items: Iterable[str | tuple[str, Any]]) -> tuple[list[str], list[Any]]:
        limit = self.settings.max_payload_bytes
        ids: list[str] = []
        results: list[str] = []
        for item in items:
            task_id, result = (item, None) if isinstance(item, str) else item
            ids.append(check_task_id(task_id))
            results.append("null" if result is None else dump_json("result", result, limit))
        if not ids:
            raise InvalidInput("no task ids to ack")
        return ids, codec.ack_args(self.settings.result_ttl_s, ids, results)

    async def fail(self, task_id: str, error: str, *, retry: bool = True, queue: str = DEFAULT_QUEUE) -> FailResult:
        """Give up a held task with ``error``: retried after a backoff until max attempts,
        then dead-lettered (or dead-lettered at once with ``retry=False``)."""
        check_error(error)
        s = self.settings
        args = codec.fail_args(check_task_id(task_id), error, retry, s.retry_backoff_ms, s.max_backoff_ms, request_id())
        if not tracing.enabled():
            return _failed(task_id, codec.fail_reply(await self._conn.script("fail", queue, args)))
        with tracing.settling("fail", queue, [task_id], await self._traces_of(queue, [task_id])) as (span,):
            try:
                done = _failed(task_id, codec.fail_reply(await self._conn.script("fail", queue, args)))
            except QueueError as exc:
                self._deliveries.finish(queue, task_id, "fail_refused", str(exc))
                raise
            tracing.outcome(span, done.status, error, attempt=done.attempt, retry_at=done.retry_at)
        self._deliveries.finish(queue, task_id, done.status, error)
        return done

    async def extend_lease(self, task_id: str, lease_ms: int | None = None, *, queue: str = DEFAULT_QUEUE) -> int:
        """Extend a held task's lease to now + ``lease_ms``; returns the new deadline (ms)."""
        return (await self.renew_lease(task_id, lease_ms, queue=queue)).lease_expires_at

    async def renew_lease(self, task_id: str, lease_ms: int | None = None, *, queue: str = DEFAULT_QUEUE) -> Lease:
        """:meth:`extend_lease`, also telling whether the task's cancellation was requested
        (then stop, and fail or release it: it ends cancelled)."""
        s = self.settings
        lease = check_int("lease_ms", s.lease_ms if lease_ms is None else lease_ms, 1, s.max_lease_ms)
        got = codec.extend_reply(
            await self._conn.script("extend", queue, codec.extend_args(check_task_id(task_id), lease))
        )
        if isinstance(got, Refusal):
            try:
                raise_for(got, task_id)
            except QueueError as exc:  # the lease is gone: so is this delivery
                if len(self._deliveries):
                    self._deliveries.finish(queue, task_id, "lease_lost", str(exc))
                raise
        if len(self._deliveries):
            self._deliveries.event(queue, task_id, "lease renewed", lease_expires_at=got.lease_until)
        return Lease(task_id, got.lease_until, got.cancel_requested)

    # -- checkpoints -----------------------------------------------------------------

    async def checkpoint(
        self, task_id: str, data: dict[str, Any], ttl_seconds: int | None = None, *, queue: str = DEFAULT_QUEUE
    ) -> int | None:
        """Save a task's progress (replacing the last checkpoint). When this consumer holds
        the task, its lease is renewed and the new deadline returned; else None."""
        if not isinstance(data, dict):
            raise InvalidInput("checkpoint data must be a JSON object")
        ttl = self.settings.checkpoint_ttl_s if ttl_seconds is None else ttl_seconds
        ttl = check_int("ttl_seconds", ttl, 1, MAX_CHECKPOINT_TTL_S)
        body = dump_json("checkpoint data", data, self.settings.max_payload_bytes)
        return await self._checkpoint(task_id, body, ttl, queue)

    async def delete_checkpoint(self, task_id: str, *, queue: str = DEFAULT_QUEUE) -> None:
        """Delete a task's checkpoint (refused while another worker holds the task)."""
        await self._checkpoint(task_id, "", 1, queue)

    async def checkpoint_lease(
        self, task_id: str, data: dict[str, Any], ttl_seconds: int | None = None, *, queue: str = DEFAULT_QUEUE
    ) -> Lease | None:
        """:meth:`checkpoint`, also telling whether the task's cancellation was requested
        (None: this consumer does not hold the task)."""
        if not isinstance(data, dict):
            raise InvalidInput("checkpoint data must be a JSON object")
        ttl = self.settings.checkpoint_ttl_s if ttl_seconds is None else ttl_seconds
        ttl = check_int("ttl_seconds", ttl, 1, MAX_CHECKPOINT_TTL_S)
        body = dump_json("checkpoint data", data, self.settings.max_payload_bytes)
        got = await self._checkpointed(task_id, body, ttl, queue)
        return None if got.lease_until is None else Lease(task_id, got.lease_until, got.cancel_requested)

    async def _checkpoint(self, task_id: str, body: str, ttl: int, queue: str) -> int | None:
        return (await self._checkpointed(task_id, body, ttl, queue)).lease_until

    async def _checkpointed(self, task_id: str, body: str, ttl: int, queue: str) -> codec.Checkpointed:
        args = codec.checkpoint_args(check_task_id(task_id), body, ttl)
        got = codec.checkpoint_reply(await self._conn.script("checkpoint", queue, args))
        if isinstance(got, Refusal):
            raise_for(got, task_id)
        if tracing.enabled():
            await self._trace_checkpoint(queue, task_id, len(body), got.lease_until)
        return got

    async def _trace_checkpoint(self, queue: str, task_id: str, size: int, lease_until: int | None) -> None:
        """An event on the task's delivery span; held elsewhere, a span of its own in the task's trace."""
        event = {"bytes": size, "deleted": size == 0 or None, "lease_expires_at": lease_until}
        if not self._deliveries.event(queue, task_id, "checkpoint", **event):
            with tracing.settling("checkpoint", queue, [task_id], await self._traces_of(queue, [task_id])) as spans:
                tracing.event(spans[0], "checkpoint", **event)

    async def get_checkpoint(self, task_id: str, *, queue: str = DEFAULT_QUEUE) -> dict[str, Any] | None:
        """The latest checkpoint of a task, or None."""
        key = self._conn.keys(queue).checkpoint(check_task_id(task_id))
        with guard():
            raw = await self._conn.redis.get(key)
        return None if raw is None else dict(json.loads(raw))


class AckedAndRead(NamedTuple):
    """What :meth:`ConsumeOps.ack_and_read` did: each ack's outcome, then the tasks it leased."""

    outcomes: list[AckResult | QueueError]
    tasks: list[Task]


def _say_acked(spans: list[tracing.Span], outcomes: list[AckResult | QueueError]) -> None:
    for span, got in zip(spans, outcomes, strict=False):  # no spans: not traced
        if isinstance(got, QueueError):
            tracing.outcome(span, "refused", str(got))
        else:
            tracing.outcome(span, got.status)


def _failed(task_id: str, got: codec.Failed | Refusal) -> FailResult:
    if isinstance(got, Refusal):
        raise_for(got, task_id)
    return FailResult(task_id, got.status, got.attempt, got.retry_at, got.fanout)


def _ack_outcomes(ids: list[str], reply: Any) -> list[AckResult | QueueError]:
    out: list[AckResult | QueueError] = []
    for task_id, got in zip(ids, codec.ack_reply(reply), strict=True):
        if isinstance(got, Refusal):
            try:
                raise_for(got, task_id)
            except QueueError as exc:
                out.append(exc)
        else:
            out.append(AckResult(task_id, "already_completed" if got.already else "acked", got.fanout))
    return out
