"""What every tool shares: the context type, queue access, JSON depth check and error mapping."""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_queue_server.core.models import NewTask
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.errors import QueueError, QueueUnavailable
from mcp_queue_server.limits import json_depth_exceeds
from mcp_queue_server.server.identity import principal_of, session_holder, stateless_holder
from mcp_queue_server.server.inputs import TaskSpec
from mcp_queue_server.server.lifespan import ServerState
from mcp_queue_server.server.sdk_compat import request_connection

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
    check_depth(max_depth(ctx), name, value)


def max_depth(ctx: Ctx) -> int:
    """The deepest JSON the server takes (read once per call: the context's attributes are slow)."""
    return ctx.request_context.lifespan_context.settings.max_depth


def check_depth(limit: int, name: str, value: Any) -> None:
    if json_depth_exceeds(value, limit):
        raise ToolError(f"{name} is nested more than {limit} levels deep: flatten it")


def ms_left(deadline: int | None) -> int | None:
    """Milliseconds from now until ``deadline`` (ms since the epoch), never negative.

    Leases are stamped with the Redis server's clock, which the core does not hand out; this
    counts from this process's wall clock, so the skew between the two hosts goes into the
    figure (none when Redis runs on this machine; NTP keeps it to milliseconds elsewhere).
    """
    return None if deadline is None else max(0, deadline - time.time_ns() // 1_000_000)


#: Where a session's holder name is kept in its connection's ``state``.
_HOLDER_STATE = "mcp_queue_server.holder"


async def open_queue(ctx: Ctx) -> TaskQueue:
    """The queue acting as the request's holder (see :mod:`~mcp_queue_server.server.identity`):
    the process's consumer on stdio, the session's own holder on HTTP with sessions, the
    principal's (and its ``_meta`` holder name's) on the stateless HTTP revision."""
    request_ctx = ctx.request_context
    state = request_ctx.lifespan_context
    request = request_ctx.request
    if request is None:  # stdio, or an in-memory client: one holder per process
        return await state.queue()
    principal = principal_of(request)
    if request_ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:  # stateless: no session to end
        try:
            holder = stateless_holder(principal, (request_ctx.params or {}).get("_meta"))
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        return await state.holder_queue(holder)
    connection = request_connection(request_ctx)
    kept = connection.state.get(_HOLDER_STATE)
    if isinstance(kept, str):
        holder = kept
    else:
        # Set before any await: concurrent first calls of one session agree on the name. SSE
        # connections have no session id in the SDK: a random one stands for the stream.
        holder = session_holder(state.settings.consumer, principal, connection.session_id or secrets.token_hex(16))
        connection.state[_HOLDER_STATE] = holder
    queue, opened = await state.session_queue(holder)
    if opened:
        connection.exit_stack.push_async_callback(state.end_session, holder)
    return queue


def new_task(depth: int, where: str, spec: TaskSpec) -> NewTask:
    """``spec`` as the core takes it, its payload checked against ``depth`` (:func:`max_depth`)."""
    check_depth(depth, f"{where}.payload", spec.payload)
    return NewTask(
        spec.task_type,
        spec.payload,
        spec.priority,
        spec.task_id,
        deadline_ms=spec.deadline_ms,
        limit_key=spec.limit_key,
    )
