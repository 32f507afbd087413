"""Tool argument types: strict, bounded, and described for the model that fills them in.

The MCP SDK turns these annotations into each tool's ``inputSchema`` and validates every
call against them before a tool runs. Integers and booleans are strict (``"5"`` and
``true`` are not integers); nested objects refuse unknown fields. JSON size and nesting
depth depend on the settings, so the tools check those (see :func:`check_json`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcp_queue_server.limits import MAX_IDS, NAME_PATTERN, PRIORITY_RANGE, TASK_ID_PATTERN, TASK_TYPE_PATTERN
from mcp_queue_server.settings import Settings

#: read_tasks' caps as written in its signature: the defaults of the settings that bound a
#: read. build_server publishes and enforces the server's own values instead (app.SETTING_CAPS).
READ_COUNT_CAP: int = Settings.model_fields["max_read_count"].default
BLOCK_MS_CAP: int = Settings.model_fields["max_block_ms"].default
LEASE_MS_CAP: int = Settings.model_fields["max_lease_ms"].default

QueueName = Annotated[
    str,
    Field(
        strict=True,
        pattern=NAME_PATTERN,
        description='Queue name: 1-64 characters from A-Z a-z 0-9 _ . - (default "default").',
    ),
]
TaskId = Annotated[
    str, Field(strict=True, pattern=TASK_ID_PATTERN, description="Task id: 1-128 characters from A-Z a-z 0-9 _ . -")
]
TaskType = Annotated[
    str,
    Field(
        strict=True,
        pattern=TASK_TYPE_PATTERN,
        description="What kind of work this is, e.g. summarize or code/review: 1-128 of A-Z a-z 0-9 _ . : / -",
    ),
]
Priority = Annotated[
    int,
    Field(
        strict=True,
        ge=PRIORITY_RANGE[0],
        le=PRIORITY_RANGE[1],
        description="Higher runs first; at or above the server's threshold (default 10) the task goes to the "
        "high-priority stream.",
    ),
]
Payload = Annotated[
    dict[str, Any],
    Field(
        description="JSON object handed to the worker (at most 64 KiB by default and 32 levels deep). "
        "Put references to large data here, not the data itself."
    ),
]
OptionalTaskId = Annotated[
    str | None,
    Field(
        strict=True,
        pattern=TASK_ID_PATTERN,
        description="Your own id for the task, used as an idempotency key: enqueuing the same id again creates "
        "nothing and reports duplicate=true. Omit to get a generated id.",
    ),
]
TaskIdList = Annotated[list[TaskId], Field(min_length=1, max_length=MAX_IDS)]
JsonObject = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TaskSpec(_Strict):
    """One task of a batch enqueue or a fanout."""

    task_type: TaskType
    payload: Payload
    priority: Priority = 0
    task_id: OptionalTaskId = None


class OnComplete(_Strict):
    """The continuation task enqueued once, when every subtask of a fanout has finished.

    Its payload gets a ``fanout`` key: ``{parent_task_id, results, parent_task_data}``.
    """

    task_type: TaskType
    payload: Payload = Field(default_factory=dict)
    priority: Priority = 0
    task_id: OptionalTaskId = None


OnChildFailure = Literal["fail_parent", "continue"]
