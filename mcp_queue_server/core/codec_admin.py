"""The operator scripts' side of the contract: the dead-letter queue (replay, purge,
inspect_dlq), cancel and list_tasks; argument builders and typed replies, as in
:mod:`~mcp_queue_server.core.codec` (which keeps the scripts a producer or worker runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from mcp_queue_server.core.models import CancelResult, DeadLetterPage, DeadTask, ListedTask, TaskPage, TaskStatus
from mcp_queue_server.core.replies import Refusal, _int, _json, _texts, refusal, text
from mcp_queue_server.core.scripts import Code

# -- replay.lua, purge.lua, inspect_dlq.lua -------------------------------------------


def _dlq_refusal(row: Any) -> Refusal:
    """``dlq_picks()`` of _lib.lua: {NOT_FOUND, id} or {BAD_STATE, id, state}."""
    return Refusal(row[0], text(row[-1]) if row[0] == Code.BAD_STATE else "", task_id=text(row[1]))


class Replayed(NamedTuple):
    task_ids: list[str]
    picked: int  #: DLQ entries taken (some may name tasks that moved on)


class Purged(NamedTuple):
    purged: int
    picked: int


def dlq_args(request_id: str, task_ids: Sequence[str] | None, limit: int) -> list[Any]:
    """replay.lua / purge.lua: the given ids, or (None) the oldest ``limit`` dead tasks."""
    if task_ids is None:
        return [request_id, 0, limit]
    return [request_id, len(task_ids), *task_ids]


def replay_reply(reply: Any) -> Replayed | Refusal:
    return Replayed(_texts(reply[1]), int(reply[2])) if reply[0] == Code.OK else _dlq_refusal(reply)


def purge_reply(reply: Any) -> Purged | Refusal:
    return Purged(int(reply[1]), int(reply[2])) if reply[0] == Code.OK else _dlq_refusal(reply)


def inspect_dlq_args(count: int, cursor: str | None, newest_first: bool) -> list[Any]:
    return [count, cursor or "", int(newest_first)]


def inspect_dlq_reply(reply: Any) -> DeadLetterPage:
    return DeadLetterPage(tasks=[_dead_task(row) for row in reply[1:]], next_cursor=text(reply[0]) or None)


def _dead_task(row: Any) -> DeadTask:
    return DeadTask(
        task_id=text(row[1]),
        task_type=text(row[2]) if row[2] else None,
        payload=_json(row[3]),
        error=text(row[4]) if row[4] else None,
        attempt=_int(row[5]) or 0,
        max_attempts=_int(row[6]),
        priority=_int(row[7]),
        source_stream=text(row[8]) if row[8] else None,
        created_at=_int(row[9]),
        dead_at=_int(row[10]),
        replays=_int(row[11]) or 0,
        parent_task_id=text(row[12]) if row[12] else None,
    )


# -- cancel.lua, list_tasks.lua ---------------------------------------------------------


def cancel_args(result_ttl_s: int, reason: str, task_ids: Sequence[str]) -> list[Any]:
    return [result_ttl_s, reason, len(task_ids), *task_ids]


def cancel_reply(task_ids: Sequence[str], reply: Any) -> list[CancelResult | Refusal]:
    out: list[CancelResult | Refusal] = []
    for task_id, row in zip(task_ids, reply, strict=True):
        if row[0] == Code.OK:
            out.append(CancelResult(task_id, text(row[1]), bool(int(row[2]))))
        else:
            out.append(refusal(row))
    return out


def list_args(state: str, count: int, task_type: str | None, cursor: tuple[str, str] | None) -> list[Any]:
    return [state, count, task_type or "", *(cursor or ("", ""))]


def list_reply(state: str, reply: Any) -> TaskPage:
    a, b, now = text(reply[0]), text(reply[1]), int(reply[2])
    tasks = []
    for row in reply[3:]:
        lease_until = _int(row[7])
        status = TaskStatus(text(row[2]))
        tasks.append(
            ListedTask(
                task_id=text(row[0]),
                task_type=text(row[1]) if row[1] else None,
                status=status,
                priority=_int(row[3]),
                attempt=_int(row[4]) or 0,
                holder=text(row[5]) if row[5] else None,
                created_at=_int(row[6]),
                lease_ms_left=max(lease_until - now, 0)
                if lease_until is not None and status == TaskStatus.WORKING
                else None,
            )
        )
    return TaskPage(tasks, f"{state}:{a}:{b}" if a else None)
