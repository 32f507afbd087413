"""The tools for cancelling tasks and listing them by state (producers and admins)."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from mcp_queue_server.limits import (
    LIST_CURSOR_MAX_LENGTH,
    MAX_CANCEL_IDS,
    MAX_ERROR_LENGTH,
    MAX_TOOL_PAGE,
    TASK_TYPE_PATTERN,
)
from mcp_queue_server.server.context import Ctx, open_queue, queue_errors
from mcp_queue_server.server.inputs import QueueName, TaskId
from mcp_queue_server.server.outputs import CancelledTask, CancelOutput, TaskListOutput

#: The states list_tasks lists (core.models.LISTABLE_STATES; a test checks they agree).
ListState = Literal["queued", "delayed", "working", "waiting_children", "failed", "cancelled"]


@queue_errors
async def cancel_task(
    ctx: Ctx,
    task_id: Annotated[TaskId | None, Field(description="The task.")] = None,
    task_ids: Annotated[
        list[TaskId] | None, Field(min_length=1, max_length=MAX_CANCEL_IDS, description="Instead: many.")
    ] = None,
    reason: Annotated[
        str | None, Field(strict=True, min_length=1, max_length=MAX_ERROR_LENGTH, description="Kept as its error.")
    ] = None,
    queue: QueueName = "default",
) -> CancelOutput:
    """Cancel tasks: waiting ones at once; running ones stop soon (an ack still completes them); a
    fanout parent with its subtasks. Completed or failed tasks are refused."""
    if (task_id is None) == (task_ids is None):
        raise ToolError("pass either task_id or task_ids, not both or neither")
    q = await open_queue(ctx)
    if task_id is not None:
        return CancelOutput(tasks=[CancelledTask.model_validate(await q.cancel(task_id, reason, queue=queue))])
    assert task_ids is not None
    got = await q.cancel_many(task_ids, reason, queue=queue)
    return CancelOutput(tasks=[CancelledTask.model_validate(t) for t in got])


@queue_errors
async def list_tasks(
    state: Annotated[ListState, Field(description="Which tasks.")],
    ctx: Ctx,
    task_type: Annotated[
        str | None, Field(strict=True, pattern=TASK_TYPE_PATTERN, description="Only this type.")
    ] = None,
    count: Annotated[int, Field(strict=True, ge=1, le=MAX_TOOL_PAGE, description="Per page.")] = 20,
    cursor: Annotated[
        str | None,
        # The pattern is checked by the core (limits.check_list_cursor), against the state too.
        Field(strict=True, max_length=LIST_CURSOR_MAX_LENGTH, description="next_cursor."),
    ] = None,
    queue: QueueName = "default",
) -> TaskListOutput:
    """Tasks in one state, a page at a time. A filtered page may be short or empty: follow next_cursor."""
    q = await open_queue(ctx)
    return TaskListOutput.model_validate(await q.list_tasks(state, task_type, count, cursor, queue=queue))
