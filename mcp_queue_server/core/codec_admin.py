"""The operator scripts' side of the contract: the dead-letter queue (replay, purge,
inspect_dlq), cancel, list_tasks, set_limit, the schedules (schedule, unschedule, fire_schedule,
and the schedule hash read straight from Redis) and queue_stats; argument builders and typed replies, as in
:mod:`~mcp_queue_server.core.codec` (which keeps the scripts a producer or worker runs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

from mcp_queue_server.core import reads
from mcp_queue_server.core.models import (
    CancelResult,
    DeadLetterPage,
    DeadTask,
    ListedTask,
    QueueStats,
    Schedule,
    TaskPage,
    TaskStatus,
)
from mcp_queue_server.core.replies import Refusal, _int, _json, _texts, refusal, text
from mcp_queue_server.core.scripts import Code
from mcp_queue_server.limits import HOLDER_STALE_MS

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


# -- schedule.lua, unschedule.lua, fire_schedule.lua; the schedule hash ----------------


class ScheduleSetReply(NamedTuple):
    next_run_at: int | None  #: None: an unchanged schedule that has ended
    replaced: bool
    unchanged: bool


def schedule_args(schedule_id: str, definition: str, first_slot: int, fields: dict[str, Any]) -> list[Any]:
    args: list[Any] = [schedule_id, definition, first_slot]
    for name, value in fields.items():
        args += (name, value)
    return args


def schedule_reply(reply: Any) -> ScheduleSetReply:
    if reply[0] == Code.DUPLICATE:
        return ScheduleSetReply(_int(reply[1] or None), False, True)
    return ScheduleSetReply(int(reply[1]), bool(int(reply[2])), False)


def unschedule_reply(reply: Any) -> bool:
    """True: removed; False: there was no such schedule."""
    return bool(reply[0] == Code.OK)


class Fired(NamedTuple):
    task_id: str | None  #: None: nothing fired (skipped, or the task id existed)
    skipped: int


class FireLost(NamedTuple):
    """fire_schedule.lua changed nothing: another firer (or a replace, or a remove) came first,
    or the slot is not due by the store's clock."""

    code: int


def fire_args(
    threshold: int,
    default_max_attempts: int,
    schedule_id: str,
    version: str,
    expected: int,
    slot: int,
    next_slot: int | None,
    task_id: str,
    payload: str,
    missed: int,
    grace_ms: int,
) -> list[Any]:
    return [
        threshold,
        default_max_attempts,
        schedule_id,
        version,
        expected,
        slot,
        "" if next_slot is None else next_slot,
        task_id,
        payload,
        missed,
        grace_ms,
    ]


def fire_reply(reply: Any) -> Fired | FireLost:
    if reply[0] != Code.OK:
        return FireLost(int(reply[0]))
    return Fired(text(reply[1]) or None, int(reply[2]))


class StoredSchedule(NamedTuple):
    """The schedule hash as fire and list need it."""

    schedule: Schedule
    version: str
    anchor: int


def stored_schedule(schedule_id: str, raw: dict[bytes, bytes]) -> StoredSchedule | None:
    """The schedule hash ``<base>sc:<id>`` (HGETALL); None: no such schedule."""
    if not raw:
        return None
    h = {k.decode(): v.decode() for k, v in raw.items()}

    def num(name: str) -> int | None:
        value = h.get(name)
        return int(value) if value else None

    schedule = Schedule(
        schedule_id=schedule_id,
        task_type=h["type"],
        payload=_json(h["payload"]),
        cron=h.get("cron"),
        every_ms=num("every_ms"),
        priority=int(h["priority"]),
        start_at=num("start_at"),
        end_at=num("end_at"),
        catch_up=h["catch_up"],
        next_run_at=num("next_run_at"),
        last_run_at=num("last_run_at"),
        last_task_id=h.get("last_task_id"),
        fired=int(h.get("fired", 0)),
        missed=int(h.get("missed", 0)),
        max_attempts=num("max_attempts"),
        deadline_ms=num("deadline_ms"),
        limit_key=h.get("limit_key"),
    )
    return StoredSchedule(schedule, h["version"], int(h["anchor"]))


# -- set_limit.lua ----------------------------------------------------------------------


def set_limit_args(key: str, max_working: int | None, max_per_minute: int | None) -> list[Any]:
    """Both None remove the key's limit."""
    return [key, "" if max_working is None else max_working, "" if max_per_minute is None else max_per_minute]


def set_limit_reply(reply: Any) -> bool:
    """Whether the key had a limit before."""
    return bool(int(reply[1]))


# -- queue_stats.lua ------------------------------------------------------------------


def queue_stats_args() -> list[Any]:
    return [HOLDER_STALE_MS]


def queue_stats_reply(queue: str, reply: Any) -> QueueStats:
    """One queue's statistics from queue_stats.lua's reply: the same record
    :meth:`~mcp_queue_server.core.inspect.AdminOps.get_queue_stats` reads with the stats pipeline."""
    now, hlen, llen, hp, lp, rows, delayed, dead, overdue, past, first, totals, holders, limits, *oldest = reply
    flat_limits = list(zip(*[iter(limits)] * 5, strict=True))
    return reads.assemble(
        queue,
        now,
        lengths=(hlen, llen),
        in_flight=(hp, lp),
        consumer_rows=[(text(n), int(p), int(i)) for n, p, i in zip(*[iter(rows)] * 3, strict=True)],
        holders=[(text(n), int(float(s))) for n, s in zip(*[iter(holders)] * 2, strict=True)],
        delayed=delayed,
        dead_letter=dead,
        overdue=overdue,
        past_deadline=past,
        first_deadline=None if first is None else int(float(first)),
        totals={text(k): int(v) for k, v in zip(*[iter(totals)] * 2, strict=True)},
        limits=[
            dataclasses.replace(reads.limit_info(text(key), raw or None), working=w, waiting=q, started_last_minute=m)
            for key, raw, w, q, m in sorted(flat_limits, key=lambda row: text(row[0]))
        ],
        oldest_waiting_age_ms=reads.oldest_age(now, [[[entry_id]] for entry_id in oldest if entry_id is not None]),
    )
