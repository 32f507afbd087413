"""Tool argument types: strict, bounded, and described for the model that fills them in.

The MCP SDK turns these annotations into each tool's ``inputSchema`` and validates every
call against them before a tool runs. Integers and booleans are strict (``"5"`` and
``true`` are not integers); nested objects refuse unknown fields. JSON size and nesting
depth depend on the settings, so the tools check those (see :func:`check_json`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcp_queue_server.limits import (
    LIMIT_KEY_PATTERN,
    MAX_IDS,
    NAME_PATTERN,
    PRIORITY_RANGE,
    SAGA_BRANCHES,
    TASK_ID_PATTERN,
    TASK_TYPE_PATTERN,
)
from mcp_queue_server.settings import Settings

#: read_tasks' caps as written in its signature: the defaults of the settings that bound a
#: read. build_server publishes and enforces the server's own values instead (app.SETTING_CAPS).
READ_COUNT_CAP: int = Settings.model_fields["max_read_count"].default
BLOCK_MS_CAP: int = Settings.model_fields["max_block_ms"].default
LEASE_MS_CAP: int = Settings.model_fields["max_lease_ms"].default

# Descriptions say what a value means; the schema says the rest (type, pattern, bounds, default),
# and an argument error spells the rule out. Every description is paid on every turn of every
# agent that lists the tools: keep them short.

#: Every tool takes a queue: described once, in the server's instructions, not in 14 schemas.
QueueName = Annotated[str, Field(strict=True, pattern=NAME_PATTERN)]
TaskId = Annotated[str, Field(strict=True, pattern=TASK_ID_PATTERN)]
TaskType = Annotated[str, Field(strict=True, pattern=TASK_TYPE_PATTERN, description="Kind of work, e.g. code/review.")]
Priority = Annotated[
    int, Field(strict=True, ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1], description="Higher runs first.")
]
Payload = Annotated[dict[str, Any], Field(description="For the worker; refer to large data.")]
OptionalTaskId = Annotated[
    str | None,
    Field(
        strict=True,
        pattern=TASK_ID_PATTERN,
        description="Your id: retries never enqueue it twice.",
    ),
]
# Bounds left to the core (limits.MAX_DEADLINE_MS): the schema is paid on every turn.
DeadlineMs = Annotated[int | None, Field(strict=True, description="Finish within (ms).")]
LimitKey = Annotated[
    str | None, Field(strict=True, pattern=LIMIT_KEY_PATTERN, description="Obeys that key's set_limit.")
]
HeldTaskId = Annotated[str, Field(strict=True, pattern=TASK_ID_PATTERN, description="A task you read and hold.")]
TaskIdList = Annotated[list[TaskId], Field(min_length=1, max_length=MAX_IDS)]
#: Any JSON value, said as a type list: some hosts mishandle a property without a type.
ANY_JSON = ["object", "array", "string", "number", "boolean", "null"]
JsonObject = dict[str, Any]

# Inside a list of tasks the fields are those of enqueue_task, whose schema describes them.
_TaskType = Annotated[str, Field(strict=True, pattern=TASK_TYPE_PATTERN)]
_Priority = Annotated[int, Field(strict=True, ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1])]
_OptionalTaskId = Annotated[str | None, Field(strict=True, pattern=TASK_ID_PATTERN)]
_DeadlineMs = Annotated[int | None, Field(strict=True)]  # the core checks the bounds
_LimitKey = Annotated[str | None, Field(strict=True, pattern=LIMIT_KEY_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TaskSpec(_Strict):
    # No docstring: pydantic would publish it as the description of every list of tasks.
    task_type: _TaskType
    payload: dict[str, Any]
    priority: _Priority = 0
    task_id: _OptionalTaskId = None
    deadline_ms: _DeadlineMs = None
    limit_key: _LimitKey = None


class OnComplete(_Strict):
    # The continuation task of a fanout; its payload gets a "fanout" key (see fanout's schema).
    task_type: _TaskType
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: _Priority = 0
    task_id: _OptionalTaskId = None


OnChildFailure = Literal["fail_parent", "continue"]


# Saga task types carry no pattern in the schema (the tool's share of the list is small and the
# type appears five times): the core checks each and names the step in its error.
def _no_extra_in_schema(schema: dict[str, Any]) -> None:
    schema.pop("additionalProperties", None)


class SagaActionIn(_Strict):
    # A compensation or a saga's on_complete; its payload gets a "saga" key (see start_saga). Unknown
    # fields are still refused; the schema leaves out saying so (it appears three times in the tool).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_no_extra_in_schema)
    task_type: str
    payload: dict[str, Any] = Field(default_factory=dict)


# limit_key without a pattern (the core checks it); a compensation takes its step's (core API only:
# SagaAction.limit_key names another).
_SagaLimitKey = Annotated[str | None, Field(strict=True)]


class SagaBranchIn(_Strict):
    task_type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    compensate: SagaActionIn | None = None
    limit_key: _SagaLimitKey = None
    deadline_ms: _DeadlineMs = None


class SagaStepIn(_Strict):
    # One task (task_type, payload, compensate) or parallel branches; the core says which is missing.
    task_type: str | None = None
    payload: dict[str, Any] | None = None
    compensate: SagaActionIn | None = None
    limit_key: _SagaLimitKey = None
    deadline_ms: _DeadlineMs = None
    parallel: Annotated[list[SagaBranchIn] | None, Field(min_length=SAGA_BRANCHES[0], max_length=SAGA_BRANCHES[1])] = (
        None
    )
