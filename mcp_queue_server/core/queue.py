"""The queue core: a durable task queue on Redis Streams. Imports nothing from ``mcp``.

TaskQueue's lifecycle, producing and cancelling live here; consuming is the
:mod:`~mcp_queue_server.core.consume` mixin, looking and repairing the
:mod:`~mcp_queue_server.core.inspect` one.

Every state change is one Lua script (see ``lua/``); these modules validate input,
serialise JSON once, have :mod:`~mcp_queue_server.core.codec` build the script's
arguments and decode its reply, and run it through the held
:class:`~mcp_queue_server.core.connection.Connection`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from typing import Any, Self

import anyio

import mcp_queue_server.tracing as tracing
from mcp_queue_server.core import codec, codec_admin
from mcp_queue_server.core.codec import ChildRow, NewRow, Refusal, raise_for
from mcp_queue_server.core.connection import Client, Connection, ScriptClock, eviction_refusal
from mcp_queue_server.core.consume import AckedAndRead as AckedAndRead  # re-exported: its old home
from mcp_queue_server.core.consume import ConsumeOps
from mcp_queue_server.core.inspect import AdminOps
from mcp_queue_server.core.key_limits import LimitOps
from mcp_queue_server.core.keys import DEFAULT_QUEUE, QueueKeys
from mcp_queue_server.core.models import (
    CancelResult,
    EnqueueResult,
    FanoutResult,
    NewTask,
    StoreInfo,
)
from mcp_queue_server.core.sagas import SagaOps
from mcp_queue_server.core.scripts import Code
from mcp_queue_server.errors import InvalidInput, QueueError, QueueFull, StoreMisconfigured
from mcp_queue_server.limits import (
    MAX_ATTEMPTS,
    MAX_DEADLINE_MS,
    MAX_DELAY_MS,
    MAX_SUBTASKS,
    PRIORITY_RANGE,
    check_error,
    check_int,
    check_limit_key,
    check_queue_name,
    check_task_id,
    check_task_type,
    dump_json,
)
from mcp_queue_server.settings import Settings

_LOW_PRIORITY, _HIGH_PRIORITY = PRIORITY_RANGE


class TaskQueue(ConsumeOps, AdminOps, LimitOps, SagaOps):
    """A task queue on one Redis (or Redis Cluster), for one consumer name.

    Every method takes ``queue`` (an allowlisted name, default ``"default"``). Methods
    raise :class:`~mcp_queue_server.errors.QueueError` subclasses only.

    Time is the Redis server's: leases, delays, backoff and expiry are decided inside the
    scripts by TIME of the queue's master, so the clocks of clients do not matter. Only a
    test passes ``clock`` (a :class:`~mcp_queue_server.core.connection.ScriptClock`, in
    code) to move that time by hand.
    """

    def __init__(
        self,
        settings: Settings,
        redis: Client | None = None,
        *,
        consumer: str | None = None,
        clock: ScriptClock | None = None,
    ) -> None:
        self._conn = Connection(settings, redis, consumer=consumer, clock=clock)
        self.settings = settings
        self.consumer = self._conn.consumer
        self._touched: set[str] = set()  # queues this instance read: release() hands their tasks back
        self._deliveries = tracing.Deliveries()  # shared with for_consumer() views: one per process
        self._schedules_seen: dict[str, float] = {}  # queue -> when a read last looked for due schedules

    # -- connection ------------------------------------------------------------------

    async def connect(self) -> Self:
        """Create the Redis clients and register the scripts (no round trip: Redis may be down)."""
        await self._conn.open()
        return self

    async def disconnect(self, *, release: bool = True) -> None:
        """Close the clients; with ``release``, first hand every held task back (graceful shutdown).

        Raises:
            QueueUnavailable: Redis was down, so held tasks stay leased until their leases expire.
        """
        try:
            if release and self._conn.opened:
                with anyio.CancelScope(shield=True):
                    await self.release()
        finally:
            await self._conn.close()

    def for_consumer(self, consumer: str) -> TaskQueue:
        """This queue acting as another consumer (a holder of its own) over the same clients,
        pool and lane: what it reads it holds, and only it may ack, fail, extend or checkpoint.
        Its :meth:`release` hands back only its own tasks; disconnecting it closes nothing.
        ``consumer`` is any non-empty string Redis takes as a consumer name."""
        if not isinstance(consumer, str) or not consumer:
            raise InvalidInput("a consumer name must be a non-empty string")
        view = copy.copy(self)
        view._conn = self._conn.for_consumer(consumer)
        view.consumer = consumer
        view._touched = set()
        view._schedules_seen = {}
        return view

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    @property
    def redis(self) -> Client:
        return self._conn.redis

    def keys(self, queue: str) -> QueueKeys:
        return self._conn.keys(queue)

    async def server_now(self, queue: str = DEFAULT_QUEUE) -> int:
        """The queue's clock now (ms since the epoch): Redis's TIME on the queue's master."""
        return await self._conn.server_now(queue)

    async def confirm_replicas(self, queue: str) -> int | None:
        """How many replicas have every write made so far to ``queue``'s node (None: not asked);
        see :meth:`Connection.confirm_replicas`."""
        return await self._conn.confirm_replicas(queue)

    async def heartbeat(self, queues: Iterable[str] = ()) -> None:
        """Say this consumer is alive on ``queues`` and every queue it read (a read says so
        too): it shows as a holder in the stats until ``HOLDER_STALE_MS`` after the last one.
        The worker runtime and the server call it every ``HEARTBEAT_INTERVAL_S``."""
        for name in sorted({*queues, *self._touched}):
            # Registered too: a worker waiting on a queue nobody enqueued into yet still shows.
            await self._conn.script("heartbeat", check_queue_name(name), codec.heartbeat_args(), register=True)

    async def check_store(self, queue: str = DEFAULT_QUEUE) -> StoreInfo:
        """One round trip to the store at start-up: reachable, credentials right, memory
        policy safe. Returns what it said about its memory.

        Raises:
            QueueUnavailable: Redis is unreachable (down, or a wrong address).
            StoreMisconfigured: wrong credentials, TLS or host name; or an evicting
                maxmemory-policy while ``allow_eviction`` is off.
        """
        info = await self.store_info(queue)
        if info.evicting and not self.settings.allow_eviction:
            raise StoreMisconfigured(eviction_refusal(info.maxmemory_policy or ""))
        return info

    # -- producing -------------------------------------------------------------------

    async def enqueue(
        self,
        task_type: str,
        payload: dict[str, Any],
        *,
        priority: int = 0,
        task_id: str | None = None,
        delay_ms: int = 0,
        max_attempts: int | None = None,
        deadline_ms: int | None = None,
        limit_key: str | None = None,
        queue: str = DEFAULT_QUEUE,
    ) -> EnqueueResult:
        """Enqueue one task. A ``task_id`` that exists already creates nothing (``duplicate``).
        ``deadline_ms``: it should finish within that many ms of now (delay included); past it,
        unfinished, it counts as overdue (stats, get_task) but runs all the same. ``limit_key``: the
        task obeys that key's limit (see :meth:`set_limit`)."""
        new = NewTask(task_type, payload, priority, task_id, delay_ms, max_attempts, deadline_ms, limit_key)
        return (await self.enqueue_batch([new], queue=queue))[0]

    async def enqueue_batch(self, tasks: Sequence[NewTask], *, queue: str = DEFAULT_QUEUE) -> list[EnqueueResult]:
        """Enqueue many tasks in one round trip; each is routed by its priority."""
        if not tasks:
            raise InvalidInput("tasks must not be empty")
        with tracing.sending("enqueue", queue) as sent:
            # Fresh ids from one getrandom call for the batch: a call costs microseconds on a VM.
            fresh = os.urandom(16 * len(tasks)).hex()
            rows = [
                NewRow(
                    fresh[32 * i : 32 * i + 32] if t.task_id is None else check_task_id(t.task_id),
                    *self._task_fields(t),
                    check_int("delay_ms", t.delay_ms, 0, MAX_DELAY_MS),
                    _max_attempts(t.max_attempts),
                    _deadline(t.deadline_ms),
                    sent.carrier,
                    _limit_key(t.limit_key),
                )
                for i, t in enumerate(tasks)
            ]
            if len({row.task_id for row in rows}) != len(rows):
                raise InvalidInput("task ids in one batch must be distinct")
            s = self.settings
            args = codec.enqueue_args(s.priority_threshold, s.max_attempts, rows, s.max_queue_length)
            reply = codec.enqueue_reply(await self._conn.script("enqueue", queue, args, register=True))
            if isinstance(reply, codec.Full):
                raise self._full(queue, reply, len(rows))
            if sent.carrier:
                sent.tasks([r.task_id for r in rows], duplicates=sum(got.duplicate for got in reply))
        replicas = await self._conn.confirm_replicas(queue)
        return [
            EnqueueResult(row.task_id, got.duplicate, got.status, queue, replicas)
            for row, got in zip(rows, reply, strict=True)
        ]

    def _full(self, queue: str, full: codec.Full, adding: int) -> QueueFull:
        limit = self.settings.max_queue_length
        return QueueFull(
            f"queue {queue} is full: {full.length} tasks wait (limit {limit}, MCP_QUEUE_MAX_QUEUE_LENGTH), so "
            f"none of the {adding} new task(s) was enqueued; retry once workers have taken some",
            full.length,
        )

    def _new_id(self, task_id: str | None) -> str:
        # 128 random bits as 32 hex characters, like uuid4().hex at a fraction of its cost.
        return os.urandom(16).hex() if task_id is None else check_task_id(task_id)

    def _task_fields(self, t: NewTask) -> tuple[str, int, str]:
        """Type, priority and payload JSON, checked."""
        if not isinstance(t.payload, dict):
            raise InvalidInput("payload must be a JSON object")
        return (
            check_task_type(t.task_type),
            check_int("priority", t.priority, _LOW_PRIORITY, _HIGH_PRIORITY),
            dump_json("payload", t.payload, self.settings.max_payload_bytes),
        )

    def _child_row(self, t: NewTask, trace: str) -> ChildRow:
        """A subtask or continuation: no delay (they run when their turn comes)."""
        task_id = self._new_id(t.task_id)
        if t.delay_ms:
            raise InvalidInput("subtasks and on_complete run as soon as they can: delay_ms must be 0")
        return ChildRow(
            task_id,
            *self._task_fields(t),
            _max_attempts(t.max_attempts),
            _deadline(t.deadline_ms),
            trace,
            _limit_key(t.limit_key),
        )

    async def fanout(
        self,
        parent_task_id: str,
        subtasks: Sequence[NewTask],
        parent_task_data: dict[str, Any] | None = None,
        *,
        on_complete: NewTask | None = None,
        fail_parent_on_child_failure: bool = True,
        queue: str = DEFAULT_QUEUE,
    ) -> FanoutResult:
        """Enqueue ``subtasks`` as children of ``parent_task_id``, all at once.

        The parent waits (``waiting_children``) until every child is acked; then its
        result is the map child id -> result, and ``on_complete`` (if given) is enqueued
        once with ``payload["fanout"] = {parent_task_id, results, parent_task_data}``.
        A dead-lettered child fails the parent unless ``fail_parent_on_child_failure``
        is false, in which case it counts as done with an error result. A parent held
        by the caller leaves its stream and waits. Repeating a fanout returns the first
        one's children.
        """
        parent = check_task_id(parent_task_id)
        if not 1 <= len(subtasks) <= MAX_SUBTASKS:
            raise InvalidInput(f"a fanout takes 1 to {MAX_SUBTASKS} subtasks, got {len(subtasks)}")
        s = self.settings
        data = (
            None if parent_task_data is None else dump_json("parent_task_data", parent_task_data, s.max_payload_bytes)
        )
        if on_complete is not None:
            if "fanout" in on_complete.payload:
                raise InvalidInput('on_complete.payload must not have a "fanout" key: the results go there')
            if on_complete.deadline_ms is not None:
                raise InvalidInput("on_complete takes no deadline_ms: give the subtasks (or the parent) deadlines")
        # Traced, the fanout continues the parent's trace: its delivery here, else what it stored.
        parent_ctx = await self._trace_of(queue, parent) if tracing.enabled() else None
        with tracing.sending("fanout", queue, parent_ctx) as sent:
            continuation = None if on_complete is None else self._child_row(on_complete, sent.carrier)
            children = [self._child_row(t, sent.carrier) for t in subtasks]
            args = codec.fanout_args(
                s.priority_threshold,
                s.max_attempts,
                parent,
                data,
                fail_parent_on_child_failure,
                s.result_ttl_s,
                continuation,
                children,
                s.max_queue_length,
                sent.carrier,
            )
            got = codec.fanout_reply(await self._conn.script("fanout", queue, args, register=True))
            if isinstance(got, codec.Full):
                raise self._full(queue, got, len(children))
            if isinstance(got, Refusal):
                raise_for(got, parent)
            if sent.carrier:
                sent.tasks(got.child_ids, parent_task_id=parent, duplicate=got.duplicate)
                self._deliveries.finish(queue, parent, "fanned_out")
        replicas = await self._conn.confirm_replicas(queue)
        return FanoutResult(parent, got.child_ids, got.duplicate, got.continuation_id, replicas)

    # -- cancelling ------------------------------------------------------------------

    async def cancel(self, task_id: str, reason: str | None = None, *, queue: str = DEFAULT_QUEUE) -> CancelResult:
        """Cancel a task: queued or delayed, at once (status ``cancelled``); working, on request
        (``cancel_requested``: its worker learns it when renewing the lease; the task ends
        cancelled when the worker fails or releases it or the lease expires, and an ack still
        completes it); a fanout parent waiting for its children, at once with its unfinished
        children, and its on_complete task is never enqueued. Repeating it changes nothing
        (``changed`` false). The reason is kept as the task's error.

        Raises:
            TaskNotFound: no such task. InvalidState: it is completed or failed already.
        """
        (got,) = await self._cancel([task_id], reason, queue)
        if isinstance(got, Refusal):
            raise_for(got, task_id)
        return got

    async def cancel_many(
        self, task_ids: Sequence[str], reason: str | None = None, *, queue: str = DEFAULT_QUEUE
    ) -> list[CancelResult]:
        """:meth:`cancel` for many tasks in one script; a task that cannot be cancelled gets its
        current status (completed, failed, not_found) and ``error`` instead of failing the call."""
        got = await self._cancel(task_ids, reason, queue)
        return [_refused_cancel(i, r) if isinstance(r, Refusal) else r for i, r in zip(task_ids, got, strict=True)]

    async def _cancel(self, task_ids: Sequence[str], reason: str | None, queue: str) -> list[CancelResult | Refusal]:
        ids = [check_task_id(i) for i in task_ids]
        if not ids:
            raise InvalidInput("no task ids to cancel")
        why = "cancelled" if reason is None else check_error(reason)
        args = codec_admin.cancel_args(self.settings.result_ttl_s, why, ids)
        return codec_admin.cancel_reply(ids, await self._conn.script("cancel", queue, args))

    async def fanout_complete(
        self, parent_task_id: str, subtask_id: str, result: Any = None, *, queue: str = DEFAULT_QUEUE
    ) -> dict[str, Any] | None:
        """Ack a fanout child (the design doc's name); returns the parent's aggregated
        results (child id -> result) when this ack finished the parent, else None."""
        acked = await self.acknowledge(subtask_id, result, queue=queue)
        if acked.fanout is None or acked.fanout.parent_task_id != parent_task_id:
            raise InvalidInput(f"task {subtask_id} is not a subtask of {parent_task_id}")
        if not acked.fanout.finished_parent:
            return None
        info = await self.get_task(parent_task_id, queue=queue)
        return info.fanout.results if info.fanout else None


def _refused_cancel(task_id: str, why: Refusal) -> CancelResult:
    try:
        raise_for(why, task_id)
    except QueueError as exc:
        status = why.state if why.code in (Code.ALREADY, Code.BAD_STATE) else "not_found"
        return CancelResult(task_id, status, False, str(exc))


def _limit_key(value: str | None) -> str:
    """A task's limit key, or "" for none."""
    return "" if value is None else check_limit_key(value)


def _max_attempts(value: int | None) -> int | str:
    """A task's own attempt limit, or "" for the queue's default."""
    return "" if value is None else check_int("max_attempts", value, 1, MAX_ATTEMPTS)


def _deadline(value: int | None) -> int | str:
    """A task's deadline_ms (from its enqueue), or "" for none."""
    return "" if value is None else check_int("deadline_ms", value, 1, MAX_DEADLINE_MS)


#: The design document's name for the queue.
RedisStreamQueue = TaskQueue
