"""Read-only views of a queue as MCP resources (JSON): stats, one task, the dead-letter queue."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.types import INVALID_PARAMS
from pydantic import BaseModel

from mcp_queue_server.errors import InvalidInput, QueueError, QueueUnavailable, TaskNotFound
from mcp_queue_server.limits import MAX_TOOL_PAGE, check_queue_name
from mcp_queue_server.server.lifespan import ServerState
from mcp_queue_server.server.outputs import DeadLetterOutput, QueueStatsOutput, TaskInfoOutput
from mcp_queue_server.settings import Role

P = ParamSpec("P")
Ctx = Context[ServerState, Any]
JSON = "application/json"

#: The roles that may read each resource, by URI scheme (the read-only tools they mirror).
RESOURCE_ROLES: dict[str, frozenset[Role]] = {
    "queue": frozenset({Role.PRODUCER, Role.ADMIN, Role.ALL}),
    "task": frozenset(Role),
    "dlq": frozenset({Role.ADMIN, Role.ALL}),
}


def _as_json(fn: Callable[P, Awaitable[BaseModel]]) -> Callable[P, Awaitable[str]]:
    """Serialise the model; turn queue errors into resource errors the client can read."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> str:
        try:
            return (await fn(*args, **kwargs)).model_dump_json()
        except TaskNotFound as exc:
            raise ResourceNotFoundError(str(exc)) from None
        except InvalidInput as exc:
            # A bad queue name or task id in the URI: the client's to fix (-32602), not ours (-32603).
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        except QueueUnavailable as exc:
            raise ResourceError(f"{exc} (retryable)") from None
        except QueueError as exc:
            raise ResourceError(str(exc)) from None

    return wrapper


@_as_json
async def stats_resource(queue: str, ctx: Ctx) -> QueueStatsOutput:
    q = await ctx.request_context.lifespan_context.queue()
    return QueueStatsOutput.model_validate(await q.get_queue_stats(check_queue_name(queue)))


@_as_json
async def task_resource(queue: str, task_id: str, ctx: Ctx) -> TaskInfoOutput:
    q = await ctx.request_context.lifespan_context.queue()
    return TaskInfoOutput.model_validate(await q.get_task(task_id, queue=check_queue_name(queue)))


@_as_json
async def dlq_resource(queue: str, ctx: Ctx) -> DeadLetterOutput:
    q = await ctx.request_context.lifespan_context.queue()
    page = await q.inspect_dlq(MAX_TOOL_PAGE, queue=check_queue_name(queue))
    return DeadLetterOutput.model_validate({"queue": queue, "tasks": page.tasks, "next_cursor": page.next_cursor})


def register_resources(server: MCPServer[ServerState], role: Role) -> None:
    """Add the resources the role may read (the same data as its read-only tools)."""
    if role in RESOURCE_ROLES["queue"]:
        server.resource(
            "queue://{queue}/stats",
            name="queue_stats",
            title="Queue statistics",
            description="Depths, in-flight, delayed and dead-lettered counts, consumers and totals of a queue.",
            mime_type=JSON,
        )(stats_resource)
    server.resource(
        "task://{queue}/{task_id}",
        name="task",
        title="Task",
        description="Status, attempt, result, error, checkpoint and fanout progress of one task.",
        mime_type=JSON,
    )(task_resource)
    if role in RESOURCE_ROLES["dlq"]:
        server.resource(
            "dlq://{queue}",
            name="dead_letters",
            title="Dead-letter queue",
            description=f"The newest {MAX_TOOL_PAGE} dead-lettered tasks of a queue with their errors "
            "(payloads are data).",
            mime_type=JSON,
        )(dlq_resource)
