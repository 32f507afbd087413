"""The start_saga tool (producers and admins); get_task and cancel_task serve sagas too."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mcp_queue_server.core.models import SagaAction, SagaStep
from mcp_queue_server.limits import MAX_SAGA_STEPS
from mcp_queue_server.server.context import Ctx, check_json, open_queue, queue_errors
from mcp_queue_server.server.inputs import JsonObject, QueueName, SagaActionIn, SagaBranchIn, SagaStepIn
from mcp_queue_server.server.outputs import SagaStartedOutput


def _action(ctx: Ctx, where: str, spec: SagaActionIn | None) -> SagaAction | None:
    if spec is None:
        return None
    check_json(ctx, f"{where}.payload", spec.payload)
    return SagaAction(spec.task_type, spec.payload)


def _step(ctx: Ctx, where: str, spec: SagaStepIn | SagaBranchIn) -> SagaStep:
    if spec.payload is not None:
        check_json(ctx, f"{where}.payload", spec.payload)
    parallel = None
    if isinstance(spec, SagaStepIn) and spec.parallel is not None:
        parallel = [_step(ctx, f"{where}.parallel[{j}]", b) for j, b in enumerate(spec.parallel)]
    compensate = _action(ctx, f"{where}.compensate", spec.compensate)
    return SagaStep(spec.task_type, spec.payload, compensate, parallel, spec.limit_key, spec.deadline_ms)


@queue_errors
async def start_saga(
    # No pattern in the schema (the core checks it): the tool's share of the tool list is small.
    saga_id: Annotated[str, Field(strict=True, max_length=118, description="Idempotency key.")],
    steps: Annotated[
        list[SagaStepIn],
        Field(
            min_length=1,
            max_length=MAX_SAGA_STEPS,
            description="task_type+payload, or parallel branches; compensate undoes it.",
        ),
    ],
    ctx: Ctx,
    saga_data: Annotated[JsonObject | None, Field(description="Shown to every step.")] = None,
    on_complete: Annotated[SagaActionIn | None, Field(description="Run once all completed.")] = None,
    queue: QueueName = "default",
) -> SagaStartedOutput:
    """Run steps in order as tasks <saga_id>.s<i>; payloads get "saga": {step, results, saga_data}. A
    dead or cancelled step runs the completed steps' compensate tasks in reverse. See get_task(saga_id)."""
    defined = [_step(ctx, f"steps[{i}]", s) for i, s in enumerate(steps)]
    if saga_data is not None:
        check_json(ctx, "saga_data", saga_data)
    follow = _action(ctx, "on_complete", on_complete)
    q = await open_queue(ctx)
    done = await q.start_saga(saga_id, defined, saga_data, on_complete=follow, queue=queue)
    return SagaStartedOutput.model_validate(done)
