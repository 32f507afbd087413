"""mcp-queue-server: a durable task queue on Redis Streams for LLM agents.

The core (:class:`TaskQueue`, :mod:`mcp_queue_server.core`) imports nothing from ``mcp``;
:func:`open_queue` opens it on the embedded Redis or a URL; the MCP server lives in
:mod:`mcp_queue_server.server`.
"""

from mcp_queue_server.core.models import (
    AckResult,
    ConsumerInfo,
    DeadLetterPage,
    DeadTask,
    EnqueueResult,
    FailResult,
    FanoutProgress,
    FanoutResult,
    FanoutState,
    LimitInfo,
    NewSchedule,
    NewTask,
    QueueStats,
    QueueStatsPage,
    RecoveryReport,
    SagaAction,
    SagaStep,
    StreamStats,
    Task,
    TaskInfo,
    TaskStatus,
)
from mcp_queue_server.core.queue import RedisStreamQueue, TaskQueue
from mcp_queue_server.errors import (
    ConflictingRequest,
    InvalidInput,
    InvalidState,
    NotLeaseHolder,
    QueueError,
    QueueFull,
    QueueUnavailable,
    StoreFull,
    StoreMisconfigured,
    TaskNotFound,
)
from mcp_queue_server.settings import Role, Settings
from mcp_queue_server.store.open import open_queue
from mcp_queue_server.worker.runtime import PermanentFailure, TaskContext, Worker

__all__ = [
    "AckResult",
    "ConflictingRequest",
    "ConsumerInfo",
    "DeadLetterPage",
    "DeadTask",
    "EnqueueResult",
    "FailResult",
    "FanoutProgress",
    "FanoutResult",
    "FanoutState",
    "InvalidInput",
    "InvalidState",
    "LimitInfo",
    "NewSchedule",
    "NewTask",
    "NotLeaseHolder",
    "PermanentFailure",
    "QueueError",
    "QueueFull",
    "QueueStats",
    "QueueStatsPage",
    "QueueUnavailable",
    "RecoveryReport",
    "RedisStreamQueue",
    "Role",
    "SagaAction",
    "SagaStep",
    "Settings",
    "StoreFull",
    "StoreMisconfigured",
    "StreamStats",
    "Task",
    "TaskContext",
    "TaskInfo",
    "TaskNotFound",
    "TaskQueue",
    "TaskStatus",
    "Worker",
    "open_queue",
]
