"""A worker's loops beside its reads: lease renewal, the batched acker, heartbeats,
recovery and the periodic summary; and how each task's outcome is recorded.

A mixin of :class:`~mcp_queue_server.worker.runtime.Worker`: it needs only the state the
worker keeps (declared below), and the runtime starts these loops in :meth:`Worker.run`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel

from mcp_queue_server.core.models import Task, TaskStatus
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.errors import (
    InvalidInput,
    InvalidState,
    NotLeaseHolder,
    QueueError,
    QueueUnavailable,
    TaskNotFound,
)
from mcp_queue_server.limits import HEARTBEAT_INTERVAL_S, MAX_ERROR_LENGTH
from mcp_queue_server.worker.context import EventKind, TaskContext, WorkerEvent

# The runtime's logger: a worker's lines are one stream, whichever module writes them.
logger = logging.getLogger("mcp_queue_server.worker.runtime")

_MAX_ERROR = MAX_ERROR_LENGTH  # fail() refuses longer errors: a handler's message is cut to fit
_OUTCOMES = ("acked", "fanned out", "failed-retry", "dead-lettered", "cancelled", "lease lost", "handed back")
_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # a brief Redis outage must not lose an ack
_ACK_BATCH = 500  # finished results per ack_many (one script call)


class WorkerLoops:
    """The loops and outcome bookkeeping of a :class:`~mcp_queue_server.worker.runtime.Worker`."""

    name: str
    queue_name: str
    lease_ms: int
    on_event: Callable[[WorkerEvent], None] | None
    processed: int
    failed: int
    running: dict[str, Task]
    _held: dict[str, Task]
    _leased_at: dict[str, float]
    _tally: dict[str, int]
    _contexts: dict[str, TaskContext]
    _acks: list[tuple[Task, Any]]
    _acks_ready: anyio.Event
    clock: Callable[[], float]

    async def _renew_leases(self, queue: TaskQueue) -> None:
        """One loop for every running handler: extend the leases due (a third of the lease
        since the last renewal or checkpoint) together, then sleep until the next is due."""
        interval = self.lease_ms / 3000
        while True:
            now = anyio.current_time()
            live = [ctx for ctx in self._contexts.values() if not ctx.lease_lost]
            due = [ctx for ctx in live if now >= ctx._renewed_at + interval]
            if due:
                async with anyio.create_task_group() as tg:
                    for ctx in due:
                        tg.start_soon(self._renew_one, ctx, interval)
            # The next due; a task started meanwhile is due a whole interval from now at the earliest.
            live = [ctx for ctx in self._contexts.values() if not ctx.lease_lost]
            await anyio.sleep_until(
                min((c._renewed_at + interval for c in live), default=anyio.current_time() + interval)
            )

    async def _renew_one(self, ctx: TaskContext, interval: float) -> None:
        try:
            await ctx.extend_lease()
        except (NotLeaseHolder, TaskNotFound, InvalidState):
            ctx.lease_lost = True
            if ctx._scope is not None:
                ctx._scope.cancel()
        except QueueUnavailable as exc:
            logger.warning("%s: could not renew the lease of %s: %s", self.name, ctx.task.task_id, exc)
            ctx._renewed_at += interval / 3  # try again soon, before the lease runs out

    async def _flush_acks(self, queue: TaskQueue) -> None:
        """Send the finished results: whatever finished while the last ack was in flight goes
        out in the next, one ``ack_many`` (group commit: no added wait when idle)."""
        while True:
            await self._acks_ready.wait()
            self._acks_ready = anyio.Event()
            await anyio.lowlevel.checkpoint()  # handlers finishing in this same tick join the batch
            acks, self._acks = self._acks, []
            if acks:
                with anyio.CancelScope(shield=True):  # sent acks must be accounted for, not handed back
                    await self._ack_batch(queue, acks)

    async def _ack_batch(self, queue: TaskQueue, acks: list[tuple[Task, Any]]) -> None:
        for start in range(0, len(acks), _ACK_BATCH):
            chunk = acks[start : start + _ACK_BATCH]
            try:
                items = [(t.task_id, r) for t, r in chunk]
                outcomes: list[Any] = await self._retrying(partial(queue.ack_many, items, queue=self.queue_name))
            except InvalidInput:  # some result cannot be stored: ack one by one to tell which
                for task, result in chunk:
                    await self._ack(queue, task, result)
                continue
            except QueueUnavailable as exc:
                for task, _ in chunk:
                    self._lost(task, f"could not ack ({exc}); the task will be delivered again when its lease expires")
                continue
            for (task, _), outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, QueueError):
                    self._lost(task, str(outcome))
                else:
                    self._acked(task, outcome.status)

    async def _ack(self, queue: TaskQueue, task: Task, result: Any) -> None:
        try:
            outcome = await self._retrying(lambda: queue.acknowledge(task.task_id, result, queue=self.queue_name))
        except InvalidInput as exc:
            await self._fail(queue, task, f"the handler's result cannot be stored: {exc}", retry=True)
            return
        except (NotLeaseHolder, TaskNotFound, InvalidState) as exc:
            self._lost(task, str(exc))
            return
        except QueueUnavailable as exc:
            self._lost(task, f"could not ack ({exc}); the task will be delivered again when its lease expires")
            return
        self._acked(task, outcome.status)

    def _acked(self, task: Task, status: str) -> None:
        self._held.pop(task.task_id, None)
        self.processed += 1
        self._finished(task, "acked")
        self._emit("acked", task, status)

    async def _fail(self, queue: TaskQueue, task: Task, error: str, *, retry: bool) -> None:
        try:
            outcome = await self._retrying(
                lambda: queue.fail(task.task_id, error[:_MAX_ERROR], retry=retry, queue=self.queue_name)
            )
        except (NotLeaseHolder, TaskNotFound, InvalidState) as exc:
            self._lost(task, str(exc))
            return
        except QueueUnavailable as exc:
            self._lost(task, f"could not fail it ({exc}); it will be delivered again when its lease expires")
            return
        self._held.pop(task.task_id, None)
        if outcome.status == TaskStatus.CANCELLED:  # its cancellation was requested: not a failure
            self._finished(task, "cancelled", error)
            self._emit("failed", task, f"cancelled: {error}")
            return
        self.failed += 1
        status = "dead-lettered" if outcome.retry_at is None else f"{outcome.status.value}, will retry"
        self._finished(task, "dead-lettered" if outcome.retry_at is None else "failed-retry", error)
        self._emit("failed", task, f"{status}: {error}")

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        # Retried only while the store is unreachable: ack and fail are idempotent by task id.
        for delay in (*_RETRY_DELAYS_S, None):
            try:
                return await call()
            except QueueUnavailable:
                if delay is None:
                    raise
                await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _lost(self, task: Task, why: str) -> None:
        self._held.pop(task.task_id, None)
        self._finished(task, "lease lost", why, level=logging.WARNING)
        self._emit("lease_lost", task, why)

    async def _heartbeat_periodically(self, queue: TaskQueue) -> None:
        """Show this worker as a holder of its queue even while it is busy or idle (reads say
        so too, but a long task means no read for a while)."""
        while True:
            try:
                await queue.heartbeat([self.queue_name])
            except QueueError as exc:
                logger.debug("%s: heartbeat skipped: %s", self.name, exc)
            await anyio.sleep(HEARTBEAT_INTERVAL_S)

    async def _recover_periodically(self, queue: TaskQueue, interval_s: float) -> None:
        while True:
            try:
                report = await queue.recover(queue=self.queue_name)
            except QueueError as exc:
                logger.warning("%s: recovery skipped: %s", self.name, exc)
            else:
                if report.requeued or report.dead_lettered:
                    logger.info(
                        "%s: recovered stuck tasks: %d requeued, %d dead-lettered",
                        self.name,
                        len(report.requeued),
                        len(report.dead_lettered),
                    )
            await anyio.sleep(interval_s)

    def _finished(self, task: Task, outcome: str, detail: str = "", *, level: int = logging.INFO) -> None:
        """The one log line of a task this worker is done with, and its count for the summary."""
        leased_at = self._leased_at.pop(task.task_id, None)
        took = 0.0 if leased_at is None else self.clock() - leased_at
        self._tally[outcome] += 1
        logger.log(
            level,
            "%s: task %s (type %s, attempt %d) %s in %.3f s%s",
            self.name,
            task.task_id,
            task.task_type,
            task.attempt,
            outcome,
            took,
            f": {detail}" if detail else "",
        )

    async def _summarise_periodically(self, interval_s: float) -> None:
        since = anyio.current_time()
        while True:
            await anyio.sleep(interval_s)
            now = anyio.current_time()
            tally, self._tally = self._tally, dict.fromkeys(_OUTCOMES, 0)
            done = tally["acked"] + tally["fanned out"]
            failed = tally["failed-retry"] + tally["dead-lettered"]
            elapsed = max(now - since, 1e-9)
            since = now
            logger.info(
                "%s: last %.3g s: %d done, %d failed (%d dead-lettered), %d lease lost, %.2f tasks/s; %d running",
                self.name,
                elapsed,
                done,
                failed,
                tally["dead-lettered"],
                tally["lease lost"],
                (done + failed) / elapsed,
                len(self.running),
            )

    def _emit(self, kind: EventKind, task: Task, detail: str = "") -> None:
        if self.on_event is not None:
            self.on_event(WorkerEvent(kind, self.name, task, detail))
