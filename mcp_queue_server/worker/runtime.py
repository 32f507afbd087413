"""The worker runtime: run async handlers over a queue (the design doc's consumer loop, done once).

A :class:`Worker` leases tasks up to its ``concurrency`` (each read asks for as many as
there are free slots, at most ``max_read_count``), runs the handler registered for each
task type (one runner per slot runs them in turn: no task started per task), renews the leases of
running handlers (one loop for the worker: every third of the lease, those due in one pass),
lets the handler checkpoint through its :class:`TaskContext`, acks the results (finished
results go out together, one ``ack_many`` per round trip, each task's outcome still its
own), and fails the task with the exception text when the handler raises (retries, backoff
and dead-lettering are the core's). It also runs the design doc's recovery worker (``recover()`` every
``recover_interval_s``).

Stopping: :meth:`Worker.stop` stops reading, gives running handlers ``grace_period_s``
to finish, then cancels them and hands their tasks back at once (``release()``, not
charged as an attempt). Cancelling :meth:`Worker.run` does the same without the grace
period. :meth:`Worker.serve` maps SIGTERM/SIGINT to ``stop()`` (a second signal: no grace).
:meth:`Worker.kill` stops as a crash would: nothing is acked or handed back, so the
held tasks come back only when their leases expire (for crash-recovery demos and tests).

Task types: a worker runs only the types it has handlers for (or every type with ``"*"``).
A task of another type it reads is handed back at once, not charged as an attempt, for a
worker that handles it; when a read brought only such tasks, the worker waits a little
before reading again (``foreign_backoff_s`` at most), so it neither spins on a queue of
other workers' tasks nor keeps them from those workers. Give each set of types its own
queue (``queue_name``) where you can: then no worker reads tasks it cannot run.

Logs: one INFO line per finished task (``task ID (type T, attempt N) OUTCOME in S s``, the
outcome one of acked, failed-retry, dead-lettered, fanned out, handed back; lease lost is a
WARNING), and every ``summary_interval_s`` an INFO summary of the interval (tasks acked and
failed, the rate, tasks running).

Here: the worker, its reads and its shutdown. The loops beside the reads (renewal, acks,
heartbeats, recovery, summaries) are :mod:`~mcp_queue_server.worker.loops`; the handler's
:class:`TaskContext` is :mod:`~mcp_queue_server.worker.context`.

A worker owns its consumer name: give each worker its own (the default is unique per process
and worker), because handing back releases every task the consumer holds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from mcp_queue_server.core.keys import DEFAULT_QUEUE
from mcp_queue_server.core.models import Task
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.core.scheduling import fire_schedules_forever
from mcp_queue_server.errors import InvalidInput, NotLeaseHolder, QueueError, QueueUnavailable
from mcp_queue_server.settings import Settings, default_consumer_name
from mcp_queue_server.store.open import open_queue
from mcp_queue_server.worker.context import ANY_TYPE, EventKind, Handler, PermanentFailure, TaskContext, WorkerEvent
from mcp_queue_server.worker.loops import _OUTCOMES, _RETRY_DELAYS_S, WorkerLoops

logger = logging.getLogger(__name__)

#: Also the public names of the context module, re-exported: their home before the split.
__all__ = ["ANY_TYPE", "EventKind", "Handler", "PermanentFailure", "TaskContext", "Worker", "WorkerEvent"]


class Worker(WorkerLoops):
    """Runs handlers for the tasks of one queue; see the module docstring.

    ``queue`` is a connected :class:`TaskQueue` (the caller closes it) or :class:`Settings`
    (the worker opens and closes its own, joining the embedded Redis when there is no URL).
    ``handlers`` maps task type -> ``async def handler(task, ctx) -> result``; the key
    ``"*"`` catches every other type. A task of a type with no handler is handed back
    (see the module docstring), never failed.
    """

    def __init__(
        self,
        queue: TaskQueue | Settings,
        handlers: Mapping[str, Handler],
        *,
        queue_name: str = DEFAULT_QUEUE,
        concurrency: int = 1,
        name: str | None = None,
        lease_ms: int | None = None,
        block_ms: int = 5_000,
        grace_period_s: float = 30.0,
        recover_interval_s: float | None = 30.0,
        foreign_backoff_s: float = 1.0,
        summary_interval_s: float | None = 60.0,
        on_event: Callable[[WorkerEvent], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise InvalidInput("concurrency must be at least 1")
        if not handlers:
            raise InvalidInput("a worker needs at least one handler")
        self._given = queue if isinstance(queue, TaskQueue) else None
        self.settings = queue.settings if isinstance(queue, TaskQueue) else queue
        if self._given is not None:
            self.name = self._given.consumer
        else:
            self.name = name or f"{default_consumer_name()}-w{next(_worker_numbers)}"
        self.handlers = dict(handlers)
        self.queue_name = queue_name
        self.concurrency = concurrency
        self.lease_ms = lease_ms or self.settings.lease_ms
        self.block_ms = min(block_ms, self.settings.max_block_ms)
        self.grace_period_s = grace_period_s
        self.recover_interval_s = recover_interval_s
        self.foreign_backoff_s = foreign_backoff_s
        self.summary_interval_s = summary_interval_s
        self.on_event = on_event
        self.ready = anyio.Event()  #: set once the worker is connected and reading
        self.processed = 0  #: tasks acked
        self.failed = 0  #: tasks failed (to retry or dead-lettered)
        self.running: dict[str, Task] = {}  #: tasks whose handler is running, by id
        self._held: dict[str, Task] = {}  # leased and neither acked, failed nor lost
        self._foreign_seen: set[str] = set()  # task types without a handler, logged once each
        self._leased_at: dict[str, float] = {}  # when each held task was read (for its duration)
        self._tally: dict[str, int] = dict.fromkeys(_OUTCOMES, 0)  # outcomes since the last summary
        self.stopped_by: signal.Signals | None = None  #: the first signal :meth:`serve` received
        self._stopping = False
        self._killed = False
        self._read_scope: anyio.CancelScope | None = None
        self._handlers_scope: anyio.CancelScope | None = None
        self._run_scope: anyio.CancelScope | None = None
        self._contexts: dict[str, TaskContext] = {}  # running handlers' contexts (lease renewal)
        self._acks: list[tuple[Task, Any]] = []  # finished results not yet sent
        self._acks_ready = anyio.Event()
        self.clock = anyio.current_time  #: the event loop's clock (made cheaper in :meth:`run`)

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- control -----------------------------------------------------------------------

    def stop(self, grace_period_s: float | None = None) -> None:
        """Stop reading; running handlers get ``grace_period_s`` (default: the worker's) to
        finish, then they are cancelled and their tasks handed back. Safe to call twice."""
        self._stopping = True
        grace = self.grace_period_s if grace_period_s is None else grace_period_s
        if self._read_scope is not None:
            self._read_scope.cancel()
        if self._handlers_scope is not None:
            self._handlers_scope.deadline = min(self._handlers_scope.deadline, anyio.current_time() + grace)

    def kill(self) -> None:
        """Stop at once as if the process died: no ack, no fail, no hand-back. The tasks
        this worker held come back only when their leases expire (attempt + 1)."""
        self._stopping = self._killed = True
        if self._run_scope is not None:
            self._run_scope.cancel()

    async def serve(self) -> None:
        """:meth:`run` until SIGTERM or SIGINT; a second signal stops without the grace period."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._stop_on_signals)
            await self.run()
            tg.cancel_scope.cancel()

    async def _stop_on_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                self.stopped_by = self.stopped_by or signal.Signals(signum)
                if not self._stopping:
                    logger.info(
                        "%s: %s: finishing %d running task(s) within %.0f s (send again to hand them back now)",
                        self.name,
                        name,
                        len(self.running),
                        self.grace_period_s,
                    )
                    self.stop()
                else:
                    logger.info("%s: %s received again: handing running tasks back now", self.name, name)
                    self.stop(0)

    # -- running -----------------------------------------------------------------------

    async def run(self) -> None:
        """Process tasks until :meth:`stop`, :meth:`kill` or cancellation.

        Raises:
            QueueUnavailable: the embedded Redis could not be started or joined.
        """
        self.clock = _loop_clock()
        with anyio.CancelScope() as self._run_scope:
            if self._given is not None:
                await self._run(self._given)
            else:
                async with open_queue(self.settings, consumer=self.name, release=False) as queue:
                    await self._run(queue)

    async def _schedule_queues(self) -> list[str]:
        return [self.queue_name]

    async def _run(self, queue: TaskQueue) -> None:
        await self._check_store(queue)
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._heartbeat_periodically, queue)
                outer.start_soon(fire_schedules_forever, queue, self._schedule_queues)
                if self.recover_interval_s:
                    outer.start_soon(self._recover_periodically, queue, self.recover_interval_s)
                if self.summary_interval_s:
                    outer.start_soon(self._summarise_periodically, self.summary_interval_s)
                outer.start_soon(self._renew_leases, queue)
                outer.start_soon(self._flush_acks, queue)
                async with anyio.create_task_group() as handlers:
                    self._handlers_scope = handlers.cancel_scope
                    if self._stopping:
                        handlers.cancel_scope.deadline = anyio.current_time() + self.grace_period_s
                    logger.info(
                        "%s: processing queue %s (concurrency %d)", self.name, self.queue_name, self.concurrency
                    )
                    # One runner per slot, each running handlers one after another: no task
                    # started per task. Once reading ends, the runners finish what was read and exit.
                    todo = _Todo()
                    slots = anyio.Semaphore(self.concurrency)
                    for _ in range(self.concurrency):
                        handlers.start_soon(self._runner, queue, todo, slots)
                    self.ready.set()
                    try:
                        await self._read_loop(queue, todo, slots)
                    finally:
                        todo.close()
                    # Stopping: the deadline stop() set on this scope cancels handlers still running.
                outer.cancel_scope.cancel()
        finally:
            if not self._killed:
                if self._acks:  # finished before the stop: acked, not handed back
                    acks, self._acks = self._acks, []
                    with anyio.CancelScope(shield=True):
                        await self._ack_batch(queue, acks)
                # Also when nothing is held: releasing removes this consumer from the group,
                # so stopped workers do not linger in the statistics.
                await self._hand_back(queue)

    async def _read_loop(self, queue: TaskQueue, todo: _Todo, slots: anyio.Semaphore) -> None:
        failures = 0
        idle_s = 0.0  # the wait after reads that brought only other workers' tasks
        prefer_high = True
        while not self._stopping:
            taken = started = 0
            with anyio.CancelScope() as self._read_scope:
                try:
                    await slots.acquire()
                    taken = 1
                    # Read as many as there are free slots, up to what one read may lease.
                    while taken < min(self.concurrency, queue.settings.max_read_count):
                        try:
                            slots.acquire_nowait()
                        except anyio.WouldBlock:
                            break
                        taken += 1
                    if self._stopping:
                        break
                    tasks = await queue.read_messages(
                        taken, self.block_ms, prefer_high, lease_ms=self.lease_ms, queue=self.queue_name
                    )
                    failures = 0
                    mine = [t for t in tasks if self._handler_for(t) is not None]
                    for task in mine:
                        self._held[task.task_id] = task
                        self._leased_at[task.task_id] = self.clock()
                        started += 1
                    todo.put(mine)
                    if len(mine) < len(tasks):
                        await self._hand_back_foreign(queue, [t for t in tasks if self._handler_for(t) is None])
                    if tasks and not mine:
                        # Only other workers' tasks: let them have those; look at the other
                        # priority lane next, where this worker's own tasks may wait.
                        idle_s = min(max(idle_s * 2, 0.05), self.foreign_backoff_s)
                        prefer_high = not prefer_high
                        await anyio.sleep(idle_s)
                    elif mine:
                        idle_s, prefer_high = 0.0, True
                except QueueUnavailable as exc:
                    failures += 1
                    delay = _RETRY_DELAYS_S[min(failures, len(_RETRY_DELAYS_S)) - 1]
                    logger.warning("%s: %s; reading again in %.1f s", self.name, exc, delay)
                    await anyio.sleep(delay)
                finally:
                    for _ in range(taken - started):
                        slots.release()
            self._read_scope = None

    async def _runner(self, queue: TaskQueue, todo: _Todo, slots: anyio.Semaphore) -> None:
        while (task := await todo.next()) is not None:
            try:
                await self._process_one(queue, task)
            finally:
                self.running.pop(task.task_id, None)
                slots.release()

    def _handler_for(self, task: Task) -> Handler | None:
        return self.handlers.get(task.task_type) or self.handlers.get(ANY_TYPE)

    async def _hand_back_foreign(self, queue: TaskQueue, tasks: list[Task]) -> None:
        """Give back tasks this worker has no handler for, uncharged, for the workers that do."""
        for task_type in sorted({t.task_type for t in tasks} - self._foreign_seen):
            self._foreign_seen.add(task_type)
            logger.info(
                "%s: no handler for task type %r (it handles: %s): handing such tasks back for other workers",
                self.name,
                task_type,
                ", ".join(sorted(self.handlers)),
            )
        with anyio.CancelScope(shield=True):  # a stop meanwhile: shutdown's release() takes the rest
            await queue.release_tasks([t.task_id for t in tasks], queue=self.queue_name)
        for task in tasks:
            logger.debug("%s: task %s (type %s) handed back: no handler", self.name, task.task_id, task.task_type)
            self._emit("released", task, f"no handler for task type {task.task_type!r}")

    async def _process_one(self, queue: TaskQueue, task: Task) -> None:
        handler = self._handler_for(task)
        assert handler is not None  # the read loop hands back tasks without one
        self.running[task.task_id] = task
        ctx = TaskContext(self, queue, task)
        self._emit("started", task, f"attempt {task.attempt}")
        failure: BaseException | None = None
        result: Any = None
        with anyio.CancelScope() as ctx._scope:  # the renewal loop cancels it when the lease is lost
            self._contexts[task.task_id] = ctx
            try:
                with queue.in_trace(task):
                    result = await handler(task, ctx)
            except NotLeaseHolder:
                ctx.lease_lost = True
            except Exception as exc:  # the handler boundary: any error fails the task
                failure = exc
            finally:
                self._contexts.pop(task.task_id, None)
        cancelled = ctx._scope.cancelled_caught or failure is not None
        if ctx.lease_lost:
            self._lost(task, "the lease expired and another worker took the task; its work here was dropped")
        elif ctx.cancel_requested and cancelled and not ctx.handed_off:
            await self._fail(queue, task, "cancelled", retry=False)  # fail.lua ends it cancelled
        elif ctx.handed_off:
            self._held.pop(task.task_id, None)
            self._finished(task, "fanned out", "waits for its subtasks")
            self._emit("handed_off", task, "fanned out: waits for its subtasks")
        elif failure is not None:
            await self._fail(queue, task, _error_text(failure), retry=not isinstance(failure, PermanentFailure))
        else:
            self._acks.append((task, result))  # acked with the others that finished meanwhile
            self._acks_ready.set()

    async def _hand_back(self, queue: TaskQueue) -> None:
        held = list(self._held.values())
        with anyio.CancelScope(shield=True):
            try:
                count = await queue.release(self.queue_name)
            except QueueError as exc:
                if held:
                    ids = [t.task_id for t in held]
                    logger.warning("%s: could not hand back %s (%s): their leases will expire", self.name, ids, exc)
                return
        if count:
            logger.info("%s: handed %d running task(s) back to the queue", self.name, count)
        self._held.clear()
        for task in held:
            self._finished(task, "handed back", "at shutdown, not charged as an attempt")
            self._emit("released", task, "handed back at shutdown")

    async def _check_store(self, queue: TaskQueue) -> None:
        """Say at start whether the store answers; the worker runs on either way (its reads
        keep trying, and report a store that comes back)."""
        try:
            info = await queue.check_store(self.queue_name)
        except QueueError as exc:
            logger.error("%s: queue store unreachable or misconfigured: %s", self.name, exc)  # noqa: TRY400
        else:
            logger.info("%s: queue store ready (maxmemory-policy %s)", self.name, info.maxmemory_policy or "unknown")


class _Todo:
    """Tasks read and not yet started, and the runners idle for want of one.

    A runner takes the next task without yielding while there is one, so a batch whose
    handlers do not wait runs in one go on one runner. Idle runners are woken one at a
    time: a runner that takes a task wakes the next idle one if tasks remain, so handlers
    that do wait still start side by side, and none wakes for nothing in a burst."""

    def __init__(self) -> None:
        self.tasks: deque[Task] = deque()
        self.idle: list[anyio.Event] = []
        self.closed = False
        self._waking = False  # a woken runner has not run yet: it will wake the next

    def put(self, tasks: list[Task]) -> None:
        self.tasks.extend(tasks)
        self._wake()

    def _wake(self) -> None:
        if self.tasks and self.idle and not self._waking:
            self._waking = True
            self.idle.pop().set()

    def close(self) -> None:
        """No more tasks: runners take what is left, then stop."""
        self.closed = True
        for event in self.idle:
            event.set()
        self.idle.clear()

    async def next(self) -> Task | None:
        while not self.tasks:
            if self.closed:
                return None
            event = anyio.Event()
            self.idle.append(event)
            try:
                await event.wait()
            finally:
                if event.is_set():
                    self._waking = False
        task = self.tasks.popleft()
        self._wake()
        return task


def _loop_clock() -> Callable[[], float]:
    """``anyio.current_time`` without its backend lookup on every call (a worker asks a few
    times per task): asyncio's loop clock, which it returns; on other backends, itself."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        return anyio.current_time


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_worker_numbers = itertools.count(1)
