"""The records the queue returns. Plain frozen dataclasses: cheap to build on hot paths;
the MCP layer turns them into pydantic output models."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    QUEUED = "queued"  #: in a stream, waiting for a worker
    DELAYED = "delayed"  #: waiting for its run-at time (a delay or a retry backoff)
    WORKING = "working"  #: leased to a worker
    WAITING_CHILDREN = "waiting_children"  #: a fanout parent waiting for its children
    COMPLETED = "completed"  #: acknowledged; the result is kept for result_ttl_s
    FAILED = "failed"  #: dead-lettered (or a fanout parent whose child was)
    CANCELLED = "cancelled"  #: cancelled; the reason is its error; the record is kept for result_ttl_s
    COMPENSATING = "compensating"  #: a saga undoing its completed steps
    COMPENSATED = "compensated"  #: a saga whose completed steps were all undone


#: States a task never leaves (except a dead-lettered task replayed by an operator).
TERMINAL_STATES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.COMPENSATED})
#: States list_tasks can list (each has an index; completed tasks have none).
LISTABLE_STATES = (
    TaskStatus.QUEUED,
    TaskStatus.DELAYED,
    TaskStatus.WORKING,
    TaskStatus.WAITING_CHILDREN,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)


@dataclass(frozen=True, slots=True)
class NewTask:
    """One task to enqueue (batch enqueue and fanout take lists of these)."""

    task_type: str
    payload: dict[str, Any]
    priority: int = 0
    task_id: str | None = None
    delay_ms: int = 0
    max_attempts: int | None = None
    #: finish within this many ms of the enqueue (delays included), else it shows as overdue;
    #: a late task is never dropped
    deadline_ms: int | None = None
    limit_key: str | None = None  #: tasks sharing a key obey its limit (see TaskQueue.set_limit)


@dataclass(frozen=True, slots=True)
class SagaAction:
    """A task a saga enqueues when its turn comes: a compensation or the on_complete task."""

    task_type: str
    payload: dict[str, Any]
    limit_key: str | None = None  #: a compensation without one takes its step's


@dataclass(frozen=True, slots=True)
class SagaStep:
    """One step of a saga: one task (``task_type``, ``payload``, optional ``compensate``), or
    ``parallel`` branches (2 to ``MAX_SAGA_BRANCHES`` steps without ``parallel``) run as one step."""

    task_type: str | None = None
    payload: dict[str, Any] | None = None
    compensate: SagaAction | None = None
    parallel: list[SagaStep] | None = None
    limit_key: str | None = None  #: the step's task's (a parallel step: give it per branch)
    #: its task should finish within this many ms of the step's start (a parallel step's applies to
    #: each branch that names none); late tasks are shown, never dropped (see Deadlines)
    deadline_ms: int | None = None


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The outcome of enqueuing one task."""

    task_id: str
    duplicate: bool  #: the id existed already; nothing was created
    status: TaskStatus  #: the task's status after the call
    queue: str = "default"
    replicas_confirmed: int | None = None  #: replicas that have it (WAIT), when wait_replicas is set


@dataclass(frozen=True, slots=True)
class Task:
    """A task delivered to a worker by a read."""

    task_id: str
    task_type: str
    priority: int
    payload: dict[str, Any]
    attempt: int  #: 1 on first delivery
    lease_expires_at: int  #: ms since the epoch
    checkpoint: dict[str, Any] | None
    parent_task_id: str | None
    queue: str = "default"


@dataclass(frozen=True, slots=True)
class FanoutProgress:
    """A fanout parent's progress, as seen by the ack of one of its children."""

    parent_task_id: str
    completed: int
    failed: int
    total: int
    done: bool  #: every child finished (or one failed the parent)
    finished_parent: bool  #: this very call finished the parent (true exactly once)


@dataclass(frozen=True, slots=True)
class AckResult:
    """The outcome of acknowledging one task."""

    task_id: str
    status: str  #: "acked" now, or "already_completed" by an earlier ack
    fanout: FanoutProgress | None = None


@dataclass(frozen=True, slots=True)
class CancelResult:
    """The outcome of cancelling one task."""

    task_id: str
    #: cancelled, cancel_requested (working: it ends cancelled when its worker stops or its lease
    #: expires; an ack still completes it); or, when refused, completed / failed / not_found.
    status: str
    changed: bool  #: this call changed it (false: an earlier cancel did, or refused)
    error: str | None = None  #: why it was refused


@dataclass(frozen=True, slots=True)
class Lease:
    """A renewed lease (extend_lease, checkpoint)."""

    task_id: str
    lease_expires_at: int  #: ms since the epoch
    cancel_requested: bool  #: the task was cancelled: stop, then fail or release it (it ends cancelled)


@dataclass(frozen=True, slots=True)
class ListedTask:
    """One task of a list_tasks page."""

    task_id: str
    task_type: str | None
    status: TaskStatus
    priority: int | None
    attempt: int
    holder: str | None  #: the worker holding it (working)
    created_at: int | None
    lease_ms_left: int | None  #: working: until its lease runs out (the queue's clock)


@dataclass(frozen=True, slots=True)
class TaskPage:
    """A page of list_tasks; pass ``next_cursor`` back for the next page."""

    tasks: list[ListedTask]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class FailResult:
    """The outcome of failing one task."""

    task_id: str
    status: TaskStatus  #: queued / delayed (will retry), failed (dead-lettered) or cancelled
    attempt: int
    retry_at: int | None  #: ms since the epoch when it becomes available again
    fanout: FanoutProgress | None = None


@dataclass(frozen=True, slots=True)
class FanoutResult:
    """The outcome of a fanout."""

    parent_task_id: str
    subtask_ids: list[str]
    duplicate: bool  #: the same fanout was made before; nothing changed
    continuation_task_id: str | None = None  #: the on_complete task's id, enqueued when all are done
    replicas_confirmed: int | None = None  #: replicas that have it (WAIT), when wait_replicas is set


@dataclass(frozen=True, slots=True)
class FanoutState:
    """A fanout parent's bookkeeping."""

    total: int
    completed: int
    failed: int
    done: bool
    results: dict[str, Any]
    subtask_ids: list[str]
    failed_child: str | None = None


@dataclass(frozen=True, slots=True)
class SagaStarted:
    """The outcome of start_saga."""

    saga_id: str
    status: TaskStatus  #: working (or, if its first step could not start, how it ended)
    duplicate: bool  #: the saga existed already; nothing changed
    queue: str = "default"


@dataclass(frozen=True, slots=True)
class SagaBranchState:
    """One branch of a parallel saga step."""

    branch: int
    task_id: str
    #: working, completed, failed, cancelled, compensating, compensated, compensation_failed
    status: str
    result: Any
    compensation_task_id: str | None  #: when it has a compensation that started


@dataclass(frozen=True, slots=True)
class SagaStepState:
    """One step of a saga as get_task shows it."""

    step: int
    task_id: str
    #: pending, working, completed, failed, cancelled, compensating, compensated, compensation_failed
    status: str
    result: Any
    error: str | None
    compensation_task_id: str | None  #: when its compensation started
    branches: list[SagaBranchState] | None  #: a parallel step's branches


@dataclass(frozen=True, slots=True)
class SagaState:
    """A saga's progress (get_task on its id); its status is the record's status."""

    current_step: int  #: the step running or the last one started (0: none yet)
    total_steps: int
    steps: list[SagaStepState]
    waiting_on: str | None  #: the task whose end moves the saga on (a failed saga: its dead compensation)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """Everything known about one task."""

    task_id: str
    status: TaskStatus
    task_type: str | None
    priority: int | None
    attempt: int
    max_attempts: int | None
    result: Any
    error: str | None
    checkpoint: dict[str, Any] | None
    lease_holder: str | None
    lease_expires_at: int | None
    parent_task_id: str | None
    run_at: int | None
    created_at: int | None
    finished_at: int | None
    replays: int
    fanout: FanoutState | None
    queue: str = "default"
    deadline_at: int | None = None  #: ms since the epoch: finish by then (deadline_ms at enqueue)
    overdue: bool = False  #: past its deadline and not finished (the queue's clock)
    limit_key: str | None = None
    saga: SagaState | None = None  #: a saga's steps (get_task on a saga id)


@dataclass(frozen=True, slots=True)
class DeadTask:
    """One entry of the dead-letter queue."""

    task_id: str
    task_type: str | None
    payload: dict[str, Any] | None
    error: str | None
    attempt: int
    max_attempts: int | None
    priority: int | None
    source_stream: str | None
    created_at: int | None
    dead_at: int | None
    replays: int
    parent_task_id: str | None


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    """A page of the dead-letter queue; pass ``next_cursor`` back for the next page."""

    tasks: list[DeadTask]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What an explicit recovery did."""

    requeued: list[str]
    dead_lettered: list[str]


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One priority stream."""

    length: int  #: entries in the stream: waiting plus in flight
    pending: int  #: delivered, not yet acked (in flight)
    available: int  #: waiting for delivery


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One consumer of the queue: a member of its group, a live holder (a worker or server
    that sent a heartbeat within ``HOLDER_STALE_MS``), or both."""

    name: str
    pending: int  #: tasks it holds
    idle_ms: int  #: since it last read or renewed (its heartbeat's age when it never read)
    last_seen_ms: int | None = None  #: since its last heartbeat or read; None: no live heartbeat


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """What the queue store says about its memory; None where it would not say (ACL)."""

    maxmemory_policy: str | None
    maxmemory: int | None  #: bytes; 0 = unlimited
    used_memory: int | None  #: bytes

    @property
    def evicting(self) -> bool:
        """Redis may delete keys (task records) on its own when full."""
        return self.maxmemory_policy not in (None, "noeviction")


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot of one queue."""

    queue: str
    high: StreamStats
    low: StreamStats
    delayed: int
    in_flight: int
    available: int
    dead_letter: int
    oldest_waiting_age_ms: int | None
    consumers: list[ConsumerInfo]
    totals: dict[str, int] = field(default_factory=dict)  #: enqueued, completed, retried, dead_lettered, replayed
    overdue: int = 0  #: in flight with an expired lease, not yet reclaimed by a read or a recovery
    past_deadline: int = 0  #: tasks past their deadline_at and not finished (completed, failed, cancelled)
    most_past_deadline_ms: int | None = None  #: how far the most overdue of them is past its deadline
    limits: list[LimitInfo] = field(default_factory=list)  #: limit keys with a limit or a line


@dataclass(frozen=True, slots=True)
class QueueStatsPage:
    """A page of every known queue's statistics, in name order; pass ``next_cursor`` back for the next page."""

    queues: list[QueueStats]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class NewSchedule:
    """A recurring task: one task per slot of ``cron`` (5 fields, UTC) or of ``every_ms``."""

    schedule_id: str
    task_type: str
    payload: dict[str, Any]
    cron: str | None = None
    every_ms: int | None = None
    priority: int = 0
    start_at: int | None = None  #: ms since the epoch: no slot before (every_ms: slots count from it)
    end_at: int | None = None  #: ms since the epoch: no slot after
    catch_up: str = "skip"  #: missed slots: "skip" them, or fire "once" for all of them
    max_attempts: int | None = None
    deadline_ms: int | None = None  #: each slot's task's deadline, from its firing
    limit_key: str | None = None  #: each slot's task's (see set_limit)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as stored, with where it stands."""

    schedule_id: str
    task_type: str
    payload: dict[str, Any]
    cron: str | None
    every_ms: int | None
    priority: int
    start_at: int | None
    end_at: int | None
    catch_up: str
    next_run_at: int | None  #: None: it has ended (past end_at)
    last_run_at: int | None  #: the slot of the last task it fired
    last_task_id: str | None
    fired: int  #: tasks fired
    missed: int  #: slots that fired no task (missed while nothing ran, or merged by catch_up "once")
    max_attempts: int | None = None
    deadline_ms: int | None = None
    limit_key: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleSet:
    """The outcome of schedule_task."""

    schedule_id: str
    next_run_at: int | None  #: None: an unchanged schedule that has ended
    replaced: bool  #: an earlier definition of the same id was replaced
    unchanged: bool  #: the same definition was set before: nothing changed


@dataclass(frozen=True, slots=True)
class SchedulePage:
    """A page of schedules by id; pass ``next_cursor`` back for the next page."""

    schedules: list[Schedule]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Firing:
    """What one firing of a due schedule did."""

    schedule_id: str
    slot: int  #: the slot it was for (ms since the epoch)
    task_id: str | None  #: the task fired; None: the slot was missed (catch_up skip) or fired by another process
    missed: int  #: earlier slots it stood for (catch_up once) or skipped


@dataclass(frozen=True, slots=True)
class LimitInfo:
    """One limit key of a queue: its limit (None: none) and what it holds now."""

    key: str
    max_working: int | None
    max_per_minute: int | None
    working: int  #: tasks of the key held by workers now
    waiting: int  #: tasks held back for the limit (still ``queued``)
    started_last_minute: int  #: deliveries started in the last 60 s (the queue's clock)
