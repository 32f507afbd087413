"""Sagas: steps run one after another as ordinary tasks, compensated in reverse order when one
fails. A mixin of :class:`~mcp_queue_server.core.queue.TaskQueue`.

Only the start is a call of its own (``lua/start_saga.lua``); every later transition runs inside
the script that ended a step (``lua/_saga.lua``), and get_task reads a saga's progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mcp_queue_server.tracing as tracing
from mcp_queue_server.core import codec_saga
from mcp_queue_server.core.codec import Refusal, raise_for
from mcp_queue_server.core.codec_saga import SagaRow
from mcp_queue_server.core.connection import Connection
from mcp_queue_server.core.keys import DEFAULT_QUEUE
from mcp_queue_server.core.models import SagaAction, SagaStarted, SagaStep
from mcp_queue_server.errors import InvalidInput, QueueFull
from mcp_queue_server.limits import (
    MAX_DEADLINE_MS,
    MAX_SAGA_BYTES,
    MAX_SAGA_STEPS,
    SAGA_BRANCHES,
    check_int,
    check_limit_key,
    check_saga_id,
    check_task_type,
    dump_json,
)


class SagaOps:
    """Starting sagas; see :class:`~mcp_queue_server.core.queue.TaskQueue`."""

    _conn: Connection

    async def start_saga(
        self,
        saga_id: str,
        steps: Sequence[SagaStep],
        saga_data: dict[str, Any] | None = None,
        *,
        on_complete: SagaAction | None = None,
        queue: str = DEFAULT_QUEUE,
    ) -> SagaStarted:
        """Start a saga: its steps run one after another as tasks ``<saga_id>.s<i>`` (a parallel
        step as a fanout of ``<saga_id>.s<i>.b<j>``), each payload carrying ``"saga"``:
        {saga_id, step, results of the earlier steps, saga_data}. A step dead-lettered or
        cancelled makes the saga compensate: the compensate tasks of the completed steps (and
        branches), ``<saga_id>.c<i>``, run one at a time in reverse order with the original
        result. ``on_complete`` (``<saga_id>.done``) runs once when every step completed.
        ``saga_id`` is an idempotency key: starting it again returns the existing saga.

        Raises:
            InvalidInput: a bad id, step, payload or count. ConflictingRequest: ``saga_id``
                is a task's id. QueueFull: the first step would exceed the queue's length limit.
        """
        saga_id = check_saga_id(saga_id)
        s = self._conn.settings
        budget = _Budget(s.max_payload_bytes)
        if not isinstance(steps, Sequence) or not 1 <= len(steps) <= MAX_SAGA_STEPS:
            count = len(steps) if isinstance(steps, Sequence) else type(steps).__name__
            raise InvalidInput(f"a saga takes 1 to {MAX_SAGA_STEPS} steps, got {count}")
        rows = [_step_row(f"steps[{i}]", step, budget) for i, step in enumerate(steps)]
        data = None if saga_data is None else budget.dump("saga_data", saga_data)
        follow = None
        if on_complete is not None:
            follow = _action("on_complete", on_complete, budget)
        stream = "high" if s.priority_threshold <= 0 else "low"
        # The saga stores the caller's trace context: each step and compensation continues it.
        with tracing.sending("start_saga", queue) as sent:
            args = codec_saga.start_saga_args(
                saga_id, s.result_ttl_s, s.max_attempts, stream, data, follow, s.max_queue_length, rows, sent.carrier
            )
            got = codec_saga.start_saga_reply(await self._conn.script("start_saga", queue, args, register=True))
            if sent.carrier and not isinstance(got, Refusal | codec_saga.SagaFull):
                sent.tasks([saga_id], duplicates=int(got.duplicate))
        if isinstance(got, codec_saga.SagaFull):
            raise QueueFull(
                f"queue {queue} is full: {got.length} tasks wait (limit {s.max_queue_length}, "
                "MCP_QUEUE_MAX_QUEUE_LENGTH), so the saga was not started; retry once workers have taken some",
                got.length,
            )
        if isinstance(got, Refusal):
            raise_for(got, saga_id)
        await self._conn.confirm_replicas(queue)
        return SagaStarted(saga_id, got.status, got.duplicate, queue)


class _Budget:
    """Serialises a saga's payloads, each within ``max_bytes`` and all within ``MAX_SAGA_BYTES``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.total = 0

    def dump(self, name: str, value: Any) -> str:
        if not isinstance(value, dict):
            raise InvalidInput(f"{name} must be a JSON object, got {type(value).__name__}")
        text = dump_json(name, value, self.max_bytes)
        self.total += len(text)
        if self.total > MAX_SAGA_BYTES:
            raise InvalidInput(
                f"the saga's payloads add up to more than {MAX_SAGA_BYTES} bytes at {name}: "
                "pass references to large data instead"
            )
        return text

    def payload(self, name: str, value: Any) -> str:
        if isinstance(value, dict) and "saga" in value:
            raise InvalidInput(f'{name} must not have a "saga" key: the saga\'s progress goes there')
        return self.dump(name, value)


def _task_type(name: str, task_type: Any) -> str:
    try:
        return check_task_type(task_type)
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc}") from None


def _limit_key(name: str, key: Any, default: str = "") -> str:
    if key is None:
        return default
    try:
        return check_limit_key(key)
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc}") from None


def _action(name: str, action: Any, budget: _Budget, inherit: str = "") -> tuple[str, str, str]:
    """(type, payload, limit_key); a compensation without a limit_key takes ``inherit``, its step's."""
    if not isinstance(action, SagaAction):
        raise InvalidInput(f"{name} must be a SagaAction (task_type, payload)")
    return (
        _task_type(name, action.task_type),
        budget.payload(f"{name}.payload", action.payload),
        _limit_key(f"{name}.limit_key", action.limit_key, inherit),
    )


def _deadline(name: str, value: Any, default: int | str = "") -> int | str:
    if value is None:
        return default
    return check_int(f"{name}.deadline_ms", value, 1, MAX_DEADLINE_MS)


def _step_row(name: str, step: Any, budget: _Budget, *, branch: bool = False, deadline: int | str = "") -> SagaRow:
    if not isinstance(step, SagaStep):
        raise InvalidInput(f"{name} must be a SagaStep")
    key = _limit_key(f"{name}.limit_key", step.limit_key)
    deadline = _deadline(name, step.deadline_ms, deadline)
    comp_type, comp_payload, comp_key = "", "", ""
    if step.compensate is not None:
        comp_type, comp_payload, comp_key = _action(f"{name}.compensate", step.compensate, budget, key)
    if step.parallel is None:
        if step.task_type is None or step.payload is None:
            raise InvalidInput(f"{name} needs task_type and payload, or parallel (a list of branches)")
        return SagaRow(
            _task_type(name, step.task_type),
            budget.payload(f"{name}.payload", step.payload),
            comp_type,
            comp_payload,
            limit_key=key,
            comp_limit_key=comp_key,
            deadline_ms=deadline,
        )
    low, high = SAGA_BRANCHES
    if branch:
        raise InvalidInput(f"{name}: a branch cannot have parallel branches of its own")
    if step.task_type is not None or step.payload is not None or step.compensate is not None:
        raise InvalidInput(f"{name} has parallel: put task_type, payload and compensate in each branch instead")
    if key:
        raise InvalidInput(f"{name} has parallel: give each branch its own limit_key instead")
    if not isinstance(step.parallel, Sequence) or not low <= len(step.parallel) <= high:
        got = len(step.parallel) if isinstance(step.parallel, Sequence) else type(step.parallel).__name__
        raise InvalidInput(f"{name}.parallel takes {low} to {high} branches, got {got}")
    where = f"{name}.parallel"
    branches = tuple(
        _step_row(f"{where}[{j}]", b, budget, branch=True, deadline=deadline) for j, b in enumerate(step.parallel)
    )
    return SagaRow("", "", "", "", branches)
