"""What every tool shares: the context type, queue access, JSON depth check and error mapping."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from mcp_queue_server.core.models import NewTask
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.errors import QueueError, QueueUnavailable
from mcp_queue_server.limits import json_depth_exceeds
from mcp_queue_server.server.inputs import TaskSpec
from mcp_queue_server.server.lifespan import ServerState

logger = logging.getLogger("mcp_queue_server.server.tools")

P = ParamSpec("P")
R = TypeVar("R")
Ctx = Context[ServerState, Any]


def queue_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn queue errors into ToolError, the only exception whose text reaches the model."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except ToolError:
            raise
        except QueueUnavailable as exc:
            raise ToolError(f"{exc} (retryable)") from None
        except QueueError as exc:
            raise ToolError(str(exc)) from None
        except Exception:
            # The text of an unexpected error could carry connection details: log it, say less.
            logger.exception("tool %s failed unexpectedly", fn.__name__)
            raise ToolError(
                "internal error in the queue server (logged on the server); "
                "check the task with get_task before retrying"
            ) from None

    return wrapper


def check_json(ctx: Ctx, name: str, value: Any) -> None:
    """Refuse JSON nested deeper than the server allows (the core checks the size)."""
    limit = ctx.request_context.lifespan_context.settings.max_depth
    if json_depth_exceeds(value, limit):
        raise ToolError(f"{name} is nested more than {limit} levels deep: flatten it")


def ms_left(deadline: int | None) -> int | None:
    """Milliseconds from now until ``deadline`` (ms since the epoch), never negative.

    Leases are stamped with the Redis server's clock, which the core does not hand out; this
    counts from this process's wall clock, so the skew between the two hosts goes into the
    figure (none when Redis runs on this machine; NTP keeps it to milliseconds elsewhere).
    """
    return None if deadline is None else max(0, deadline - time.time_ns() // 1_000_000)


async def open_queue(ctx: Ctx) -> TaskQueue:
    return await ctx.request_context.lifespan_context.queue()


def new_task(ctx: Ctx, where: str, spec: TaskSpec) -> NewTask:
    check_json(ctx, f"{where}.payload", spec.payload)
    return NewTask(spec.task_type, spec.payload, spec.priority, spec.task_id)
