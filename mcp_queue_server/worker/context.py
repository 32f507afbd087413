"""What a handler sees: its :class:`TaskContext`, and the words it shares with the worker.

The handler type, :class:`PermanentFailure` (dead-letter at once) and the
:class:`WorkerEvent` a worker reports; :mod:`~mcp_queue_server.worker.runtime` re-exports
them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anyio

from mcp_queue_server.core.models import FanoutResult, Lease, NewTask, Task
from mcp_queue_server.core.queue import TaskQueue

#: A handler: gets the task and its context, returns the result to store (any JSON).
Handler = Callable[[Task, "TaskContext"], Awaitable[Any]]

#: The handlers key that matches every task type without a handler of its own.
ANY_TYPE = "*"

EventKind = Literal["started", "acked", "failed", "lease_lost", "handed_off", "released"]


class PermanentFailure(Exception):
    """Raise from a handler to dead-letter the task at once instead of retrying it."""


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """Something that happened to a task in a worker (see ``Worker(on_event=...)``)."""

    kind: EventKind
    worker: str  #: the worker's consumer name
    task: Task
    detail: str = ""  #: the error for failed; the new status for failed and acked


class _Owner(Protocol):
    """What a context needs of its :class:`~mcp_queue_server.worker.runtime.Worker` (a
    protocol, so this module need not import the runtime that imports it)."""

    name: str
    queue_name: str
    lease_ms: int
    clock: Callable[[], float]  #: anyio.current_time, or the same clock read cheaper

    @property
    def stopping(self) -> bool: ...


class TaskContext:
    """What a handler can do besides returning a result: checkpoint, extend, fan out."""

    def __init__(self, worker: _Owner, queue: TaskQueue, task: Task) -> None:
        self.task = task
        self.queue = queue  #: the worker's queue client (same consumer: may act on this task)
        self.worker_name = worker.name
        self.lease_expires_at = task.lease_expires_at
        self.lease_lost = False
        self.handed_off = False
        #: The task was cancelled (cancel_task): the handler is cancelled and the task ends cancelled.
        self.cancel_requested = False
        self._worker = worker
        self._renewed_at = worker.clock()
        self._scope: anyio.CancelScope | None = None  # the handler's: cancelled when the lease is lost

    @property
    def stopping(self) -> bool:
        """The worker is shutting down: a long handler may checkpoint now; if it does not
        finish within the grace period it is cancelled and its task handed back."""
        return self._worker.stopping

    async def checkpoint(self, data: dict[str, Any], ttl_seconds: int | None = None) -> None:
        """Save progress (redelivery gets it back as ``task.checkpoint``); renews the lease.

        Raises:
            NotLeaseHolder: the lease was lost; stop working on this task.
        """
        lease = await self.queue.checkpoint_lease(self.task.task_id, data, ttl_seconds, queue=self._worker.queue_name)
        if lease is not None:
            self._renewed(lease)

    async def extend_lease(self, lease_ms: int | None = None) -> int:
        """Extend the lease now (the worker also renews it by itself); returns the new deadline.

        Raises:
            NotLeaseHolder: the lease was lost; stop working on this task.
        """
        lease = await self.queue.renew_lease(
            self.task.task_id, lease_ms or self._worker.lease_ms, queue=self._worker.queue_name
        )
        self._renewed(lease)
        return lease.lease_expires_at

    async def fanout(
        self,
        subtasks: Sequence[NewTask],
        parent_task_data: dict[str, Any] | None = None,
        *,
        on_complete: NewTask | None = None,
        fail_parent_on_child_failure: bool = True,
    ) -> FanoutResult:
        """Split this task into subtasks: it then waits for them (the worker does not ack it,
        and the handler's return value is ignored); its result becomes the children's results."""
        result = await self.queue.fanout(
            self.task.task_id,
            subtasks,
            parent_task_data,
            on_complete=on_complete,
            fail_parent_on_child_failure=fail_parent_on_child_failure,
            queue=self._worker.queue_name,
        )
        self.handed_off = True
        return result

    def _renewed(self, lease: Lease) -> None:
        self.lease_expires_at = lease.lease_expires_at
        self._renewed_at = anyio.current_time()
        if lease.cancel_requested and not self.cancel_requested:
            self.cancel_requested = True
            if self._scope is not None:
                self._scope.cancel()
