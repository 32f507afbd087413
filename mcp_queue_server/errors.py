"""The error tree. Every message says what went wrong and what the caller can do next.

QueueError                      base of everything the queue raises
├── InvalidInput                a name, id, count, size or shape is not allowed
├── QueueUnavailable            Redis cannot be reached or timed out (retryable)
├── StoreMisconfigured          MCP_QUEUE_REDIS_URL or the Redis setup is wrong (not retryable)
├── QueueFull                   the queue holds MCP_QUEUE_MAX_QUEUE_LENGTH tasks (retryable)
├── StoreFull                   Redis refused a write: maxmemory reached (retryable once freed)
├── TaskNotFound                no task with that id (never existed or expired)
├── NotLeaseHolder              the task is not leased to the caller (fencing)
├── InvalidState                the task's state does not allow the operation
└── ConflictingRequest          an id is reused for a different request
"""

from __future__ import annotations


class QueueError(Exception):
    """Base class of all queue errors."""

    retryable: bool = False


class InvalidInput(QueueError):
    """The request is malformed: fix the argument named in the message."""


class QueueUnavailable(QueueError):
    """The queue store is unreachable. Nothing was changed that you can't safely retry."""

    retryable = True


class StoreMisconfigured(QueueError):
    """The queue store is set up wrongly (unknown host, wrong password, TLS mismatch, an
    evicting memory policy): retrying will not help until the configuration is fixed."""


class QueueFull(QueueError):
    """The queue already holds its maximum of waiting and delayed tasks; nothing was enqueued.
    Retry once workers have taken some."""

    retryable = True

    def __init__(self, message: str, length: int) -> None:
        super().__init__(message)
        self.length = length


class StoreFull(QueueError):
    """Redis refused a write because it reached ``maxmemory``; nothing was written. Acks,
    fails, reads and DLQ purges still work, and free memory."""

    retryable = True


class TaskNotFound(QueueError):
    """No task with this id exists in the queue (never created, purged, or its record expired)."""


class NotLeaseHolder(QueueError):
    """The caller does not hold the task's lease; the operation changed nothing."""


class InvalidState(QueueError):
    """The task exists but its state does not allow this operation."""


class ConflictingRequest(QueueError):
    """An idempotency key was reused for a different request."""
