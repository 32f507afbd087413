"""mcp-queue-server: a durable task queue on Redis Streams for LLM agents.

The core (:class:`TaskQueue`) imports nothing from ``mcp``; the MCP server lives in
:mod:`mcp_queue_server.server.app`.
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
    NewTask,
    QueueStats,
    RecoveryReport,
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
    QueueUnavailable,
    TaskNotFound,
)
from mcp_queue_server.settings import Role, Settings
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
    "NewTask",
    "NotLeaseHolder",
    "PermanentFailure",
    "QueueError",
    "QueueStats",
    "QueueUnavailable",
    "RecoveryReport",
    "RedisStreamQueue",
    "Role",
    "Settings",
    "StreamStats",
    "Task",
    "TaskContext",
    "TaskInfo",
    "TaskNotFound",
    "TaskQueue",
    "TaskStatus",
    "Worker",
]
