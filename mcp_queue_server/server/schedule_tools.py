"""The schedule tools: schedule_task and remove_schedule (producers and admins), list_schedules (all).

schedule_task leaves max_attempts and deadline_ms of the core's NewSchedule out of the tool, and
list_schedules its page size: the tool list is paid on every turn (tests/test_tool_budget.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from mcp_queue_server.core.models import NewSchedule
from mcp_queue_server.server.context import Ctx, check_json, open_queue, queue_errors
from mcp_queue_server.server.inputs import JsonObject, QueueName
from mcp_queue_server.server.outputs import RemoveScheduleOutput, ScheduleListOutput, ScheduleSetOutput


# Lean on purpose (every character is read on every turn): the core checks the id's pattern and
# the bounds, and its errors say what was wrong.
def _d(text: str) -> Any:
    return Field(strict=True, description=text)


@queue_errors
async def schedule_task(
    schedule_id: Annotated[str, _d("Same id replaces.")],
    task_type: Annotated[str, _d("Task type.")],
    payload: Annotated[JsonObject, Field(description="Each task's.")],
    ctx: Ctx,
    cron: Annotated[str | None, _d("5 fields, UTC.")] = None,
    every_ms: Annotated[int | None, _d("Or this.")] = None,
    priority: Annotated[int | None, _d("Priority.")] = None,
    start_at: Annotated[int | None, _d("From.")] = None,
    end_at: Annotated[int | None, _d("Until.")] = None,
    catch_up: Annotated[Literal["skip", "once"], Field(description="Missed slots: skip, or one task.")] = "skip",
    limit_key: Annotated[str | None, _d("Each task's.")] = None,
    queue: QueueName = "default",
) -> ScheduleSetOutput:
    """Enqueue one task per cron or every_ms slot, exactly once."""
    check_json(ctx, "payload", payload)
    q = await open_queue(ctx)
    new = NewSchedule(
        schedule_id, task_type, payload, cron, every_ms, priority or 0, start_at, end_at, catch_up, limit_key=limit_key
    )
    return ScheduleSetOutput.model_validate(await q.set_schedule(new, queue=queue))


@queue_errors
async def list_schedules(
    ctx: Ctx,
    cursor: Annotated[str | None, _d("next_cursor.")] = None,
    queue: QueueName = "default",
) -> ScheduleListOutput:
    """Schedules by id, 20 a page, with next and last runs."""
    q = await open_queue(ctx)
    return ScheduleListOutput.model_validate(await q.list_schedules(20, cursor, queue=queue))


@queue_errors
async def remove_schedule(
    schedule_id: Annotated[str, _d("Which.")], ctx: Ctx, queue: QueueName = "default"
) -> RemoveScheduleOutput:
    """Stop a schedule; the tasks it fired stay."""
    q = await open_queue(ctx)
    return RemoveScheduleOutput(removed=await q.remove_schedule(schedule_id, queue=queue))
