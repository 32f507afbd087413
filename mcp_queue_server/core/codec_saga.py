"""The Python side of the saga scripts' contract: start_saga.lua's arguments and reply, and the
saga hash (``<base>sg:<saga_id>``, its layout in ``lua/_saga.lua``) decoded for get_task.

Kept apart from :mod:`~mcp_queue_server.core.codec` (producer and worker scripts) and
:mod:`~mcp_queue_server.core.codec_admin` (operator scripts) because sagas have their own layout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from mcp_queue_server.core.models import SagaBranchState, SagaState, SagaStepState, TaskStatus
from mcp_queue_server.core.replies import Refusal, refusal, text
from mcp_queue_server.core.scripts import Code


class SagaRow(NamedTuple):
    """One step (or branch) of start_saga.lua, checked and serialised; a parallel step has
    ``task_type`` "" and its branches."""

    task_type: str
    payload: str
    comp_type: str  #: "" = no compensation
    comp_payload: str
    branches: tuple[SagaRow, ...] = ()
    limit_key: str = ""  #: "" = none
    comp_limit_key: str = ""  #: "" = none (sagas.py gives a compensation its step's by default)
    deadline_ms: int | str = ""  #: "" = none; else from the step's start


class SagaCreated(NamedTuple):
    status: TaskStatus
    duplicate: bool


class SagaFull(NamedTuple):
    length: int  #: waiting + delayed tasks now


def start_saga_args(
    saga_id: str,
    result_ttl_s: int,
    max_attempts: int,
    stream: str,
    saga_data: str | None,
    on_complete: tuple[str, str, str] | None,
    max_length: int,
    steps: Sequence[SagaRow],
    trace: str = "",
) -> list[Any]:
    oc_type, oc_payload, oc_limit_key = on_complete or ("", "", "")
    args: list[Any] = [
        saga_id,
        result_ttl_s,
        max_attempts,
        stream,
        saga_data or "",
        oc_type,
        oc_payload,
        oc_limit_key,
        max_length,
        trace,
        len(steps),
    ]
    for step in steps:
        args += [*step[:4], step.limit_key, step.comp_limit_key, step.deadline_ms, len(step.branches)]
        for branch in step.branches:
            args += [*branch[:4], branch.limit_key, branch.comp_limit_key, branch.deadline_ms]
    return args


def start_saga_reply(reply: Any) -> SagaCreated | SagaFull | Refusal:
    code = reply[0]
    if code == Code.FULL:
        return SagaFull(int(reply[1]))
    if code == Code.CONFLICT:
        return Refusal(Code.CONFLICT, task_id=text(reply[1]))
    if code not in (Code.OK, Code.DUPLICATE):
        return refusal(reply)
    return SagaCreated(TaskStatus(text(reply[1])), code == Code.DUPLICATE)


def _json_or_none(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def saga_state(saga_id: str, raw: dict[bytes, bytes]) -> SagaState | None:
    """A saga's progress from HGETALL of its ``sg:`` hash (None: not a saga)."""
    if not raw:
        return None
    h = {k.decode(): v.decode() for k, v in raw.items()}
    clist: list[str] = json.loads(h["clist"]) if h.get("clist", "{}") != "{}" else []
    started = set(clist[: int(h.get("cpos", 0))])
    steps = []
    for i in range(1, int(h["n"]) + 1):
        u = str(i)
        step_id = f"{saga_id}.s{i}"
        branches = None
        nb = int(h[f"nb{i}"])
        if nb:
            branches = [
                SagaBranchState(
                    branch=j,
                    task_id=f"{step_id}.b{j}",
                    status=h.get(f"st{i}.{j}", "pending"),
                    result=_json_or_none(h.get(f"r{i}.{j}")),
                    compensation_task_id=f"{saga_id}.c{i}.{j}" if f"{i}.{j}" in started else None,
                )
                for j in range(1, nb + 1)
            ]
        steps.append(
            SagaStepState(
                step=i,
                task_id=step_id,
                status=h.get(f"st{u}", "pending"),
                result=_json_or_none(h.get(f"r{u}")),
                error=h.get(f"e{u}"),
                compensation_task_id=f"{saga_id}.c{u}" if u in started else None,
                branches=branches,
            )
        )
    return SagaState(
        current_step=int(h.get("cur", 0)),
        total_steps=int(h["n"]),
        steps=steps,
        waiting_on=h.get("wait"),
    )
