"""Recurring schedules: set, list, remove, and fire the due slots (a mixin of TaskQueue).

No daemon fires them: the processes already running do (the MCP server's ticker, the Worker
runtime, and a throttled look in every read), each calling :meth:`ScheduleOps.fire_due_schedules`.
Any number of them may race for one slot: ``fire_schedule.lua`` lets exactly one through (a
compare-and-set on the schedule's version and next_run_at) and the task id is derived from the
schedule id and the slot, so a slot makes at most one task. Which slots exist is
:mod:`~mcp_queue_server.core.cadence`'s business; whether one is due or late is the store's clock's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from mcp_queue_server.core import codec_admin
from mcp_queue_server.core.cadence import Cadence, check_cron
from mcp_queue_server.core.codec_admin import StoredSchedule
from mcp_queue_server.core.connection import Connection, guard
from mcp_queue_server.core.keys import DEFAULT_QUEUE
from mcp_queue_server.core.models import Firing, NewSchedule, Schedule, SchedulePage, ScheduleSet
from mcp_queue_server.core.replies import text
from mcp_queue_server.errors import InvalidInput, QueueError, TaskNotFound
from mcp_queue_server.limits import (
    MAX_ATTEMPTS,
    MAX_DEADLINE_MS,
    MAX_DELAY_MS,
    MAX_TOOL_PAGE,
    MIN_EVERY_MS,
    PRIORITY_RANGE,
    SCHEDULE_GRACE_MS,
    SCHEDULE_TICK_S,
    check_int,
    check_limit_key,
    check_schedule_id,
    check_task_type,
    dump_json,
)

logger = logging.getLogger("mcp_queue_server.schedules")

CATCH_UP = ("skip", "once")
#: Due schedules one fire_due_schedules call looks at (the rest wait for the next call).
FIRE_BATCH = 100
_MAX_TIME_MS = 253_402_300_799_000  #: 9999-12-31: start_at and end_at are ms since the epoch


@dataclass(frozen=True, slots=True)
class Tick:
    """What one :meth:`ScheduleOps.fire_due_schedules` did, and when to look again."""

    firings: list[Firing]
    next_due_at: int | None  #: the earliest next_run_at still ahead (ms, the store's clock); None: none
    now: int  #: the store's clock when it looked

    def sleep_s(self, cap_s: float = SCHEDULE_TICK_S) -> float:
        """How long a ticker may sleep before the next slot (at most ``cap_s``, so new schedules are seen)."""
        if self.next_due_at is None:
            return cap_s
        return min(cap_s, max(self.next_due_at - self.now, 0) / 1000)


def _cadence(s: Schedule | NewSchedule, anchor: int) -> Cadence:
    """Its slots: an interval counts from ``anchor`` (start_at, or when it was set); cron slots
    only bound below by start_at."""
    return Cadence(s.cron, s.every_ms, anchor if s.every_ms is not None else (s.start_at or 0), s.end_at)


class ScheduleOps:
    """Schedules of a queue; see :class:`~mcp_queue_server.core.queue.TaskQueue`."""

    _conn: Connection
    #: queue -> monotonic time of this instance's last look at its schedules from a read
    _schedules_seen: dict[str, float]

    async def set_schedule(self, schedule: NewSchedule, *, queue: str = DEFAULT_QUEUE) -> ScheduleSet:
        """Create or replace schedule ``schedule_id``: from its first slot on, one task per slot
        (cron: 5 fields, UTC; or every ``every_ms`` from ``start_at``, or from now). Setting the
        same definition again changes nothing (``unchanged``); a new one replaces it and keeps its history.

        Raises:
            InvalidInput: a bad field (cron syntax, every_ms below the floor, both or neither of
                cron and every_ms, end_at before any slot, ...).
        """
        s = self._conn.settings
        sid = check_schedule_id(schedule.schedule_id)
        fields, definition = _checked_fields(schedule, s.max_payload_bytes)
        now = await self._conn.server_now(queue)
        anchor = schedule.start_at if schedule.start_at is not None else now
        cadence = _cadence(schedule, anchor)
        # Without start_at the first slot is the next one after now (every_ms: one interval from now).
        first = cadence.after(now) if schedule.start_at is None else cadence.first_at_or_after(now)
        if first is None:
            raise InvalidInput(
                f"schedule {sid} has no slot left before end_at {schedule.end_at}: move end_at later or drop it"
            )
        args = codec_admin.schedule_args(sid, definition, first, {**fields, "anchor": anchor})
        got = codec_admin.schedule_reply(await self._conn.script("schedule", queue, args, register=True))
        if got.unchanged:
            return ScheduleSet(sid, got.next_run_at, replaced=False, unchanged=True)
        return ScheduleSet(sid, first, replaced=got.replaced, unchanged=False)

    async def get_schedule(self, schedule_id: str, *, queue: str = DEFAULT_QUEUE) -> Schedule:
        """One schedule as stored. Raises TaskNotFound when there is none."""
        sid = check_schedule_id(schedule_id)
        (stored,) = await self._stored(queue, [sid])
        if stored is None:
            raise TaskNotFound(f"no schedule {sid} in queue {queue}: list_schedules shows the ones there are")
        return stored.schedule

    async def list_schedules(
        self, count: int = 20, cursor: str | None = None, *, queue: str = DEFAULT_QUEUE
    ) -> SchedulePage:
        """One page of the queue's schedules in id order; pass ``next_cursor`` back for the next."""
        count = check_int("count", count, 1, MAX_TOOL_PAGE)
        start = "-" if cursor is None else "(" + check_schedule_id(cursor)
        k = self._conn.keys(queue)
        with guard():
            ids = await self._conn.redis.zrangebylex(k.schedule_ids, start, "+", start=0, num=count + 1)
        names = [text(i) for i in ids]
        more = len(names) > count
        names = names[:count]
        found = [s.schedule for s in await self._stored(queue, names) if s is not None]
        return SchedulePage(found, names[-1] if more and names else None)

    async def remove_schedule(self, schedule_id: str, *, queue: str = DEFAULT_QUEUE) -> bool:
        """Remove a schedule (the tasks it fired stay). False: there was none."""
        sid = check_schedule_id(schedule_id)
        return codec_admin.unschedule_reply(await self._conn.script("unschedule", queue, [sid]))

    async def _stored(self, queue: str, ids: list[str]) -> list[StoredSchedule | None]:
        if not ids:
            return []
        k = self._conn.keys(queue)
        with guard():
            async with self._conn.redis.pipeline(transaction=False) as pipe:
                for sid in ids:
                    pipe.hgetall(k.schedule(sid))
                raw = await pipe.execute()
        return [codec_admin.stored_schedule(sid, r) for sid, r in zip(ids, raw, strict=True)]

    async def fire_due_schedules(self, *, queue: str = DEFAULT_QUEUE) -> Tick:
        """Fire every due schedule of ``queue`` (up to FIRE_BATCH), each slot exactly once
        however many processes call this at the same time; says when the next one falls due."""
        conn = self._conn
        k = conn.keys(queue)
        now = await conn.server_now(queue)
        with guard():
            rows: list[Any] = await conn.redis.zrange(k.schedules, 0, FIRE_BATCH, withscores=True)
        due = [(text(m), int(score)) for m, score in rows if score <= now]
        ahead = [int(score) for _, score in rows if score > now]
        firings = [f for f in [await self._fire(queue, sid, now) for sid, _ in due[:FIRE_BATCH]] if f is not None]
        return Tick(firings, min(ahead) if ahead else None, now)

    async def _fire(self, queue: str, sid: str, now: int) -> Firing | None:
        (stored,) = await self._stored(queue, [sid])
        if stored is None or stored.schedule.next_run_at is None:
            return None
        sched = stored.schedule
        expected = sched.next_run_at
        assert expected is not None
        cadence = _cadence(sched, stored.anchor)
        # The latest slot by now, and never past end_at (a schedule that ended meanwhile fires its last).
        until = now if sched.end_at is None else min(now, sched.end_at)
        slot = max(cadence.latest_at_or_before(until), expected)
        following = cadence.after(slot)
        missed = cadence.count_between(expected, slot)
        task_id = f"{sid}-{slot}"
        payload = json.dumps(
            {**sched.payload, "schedule": {"schedule_id": sid, "slot": slot, "missed": missed}},
            separators=(",", ":"),
        )
        s = self._conn.settings
        args = codec_admin.fire_args(
            s.priority_threshold,
            s.max_attempts,
            sid,
            stored.version,
            expected,
            slot,
            following,
            task_id,
            payload,
            missed,
            SCHEDULE_GRACE_MS,
        )
        got = codec_admin.fire_reply(await self._conn.script("fire_schedule", queue, args))
        if isinstance(got, codec_admin.FireLost):
            return None  # another process fired or skipped it, or it changed meanwhile
        return Firing(sid, slot, got.task_id, got.skipped)

    async def _tick_schedules_from_read(self, queue: str) -> None:
        """Reads fire due schedules too, at most once per SCHEDULE_TICK_S per queue and instance;
        a failure here never fails the read."""
        seen = self._schedules_seen
        at = time.monotonic()
        if at - seen.get(queue, -SCHEDULE_TICK_S) < SCHEDULE_TICK_S:
            return
        seen[queue] = at
        try:
            await self.fire_due_schedules(queue=queue)
        except QueueError as exc:
            logger.debug("schedules of %s not fired from a read: %s", queue, exc)


def _checked_fields(schedule: NewSchedule, max_payload_bytes: int) -> tuple[dict[str, str | int], str]:
    """The schedule hash's definition fields, and the canonical definition a repeat is told by."""
    if (schedule.cron is None) == (schedule.every_ms is None):
        raise InvalidInput(
            f"give exactly one of cron (5 fields, UTC, e.g. '0 * * * *') and every_ms (at least {MIN_EVERY_MS})"
        )
    if not isinstance(schedule.payload, dict):
        raise InvalidInput("payload must be a JSON object")
    if "schedule" in schedule.payload:
        raise InvalidInput('payload must not have a "schedule" key: each task gets its schedule_id and slot there')
    if schedule.catch_up not in CATCH_UP:
        raise InvalidInput(f"catch_up must be skip or once, got {schedule.catch_up!r}")
    fields: dict[str, str | int] = {
        "type": check_task_type(schedule.task_type),
        "payload": dump_json("payload", schedule.payload, max_payload_bytes),
        "priority": check_int("priority", schedule.priority, *PRIORITY_RANGE),
        "catch_up": schedule.catch_up,
    }
    if schedule.cron is not None:
        fields["cron"] = check_cron(schedule.cron)
    if schedule.every_ms is not None:
        every = schedule.every_ms
        if isinstance(every, int) and not isinstance(every, bool) and every < MIN_EVERY_MS:
            raise InvalidInput(f"every_ms is {every}, at least {MIN_EVERY_MS}: schedule less often")
        fields["every_ms"] = check_int("every_ms", every, MIN_EVERY_MS, MAX_DELAY_MS)
    for name in ("start_at", "end_at"):
        value = getattr(schedule, name)
        if value is not None:
            fields[name] = check_int(name, value, 0, _MAX_TIME_MS)
    if schedule.start_at is not None and schedule.end_at is not None and schedule.end_at <= schedule.start_at:
        raise InvalidInput(f"end_at ({schedule.end_at}) must be after start_at ({schedule.start_at})")
    fields |= _task_fields(schedule)
    definition = json.dumps({k: v for k, v in fields.items()}, sort_keys=True, separators=(",", ":"))
    return fields, definition


def _task_fields(schedule: NewSchedule) -> dict[str, str | int]:
    """The optional fields each slot's task gets (unset: the queue's default, or none)."""
    fields: dict[str, str | int] = {}
    if schedule.max_attempts is not None:
        fields["max_attempts"] = check_int("max_attempts", schedule.max_attempts, 1, MAX_ATTEMPTS)
    if schedule.deadline_ms is not None:
        fields["deadline_ms"] = check_int("deadline_ms", schedule.deadline_ms, 1, MAX_DEADLINE_MS)
    if schedule.limit_key is not None:
        fields["limit_key"] = check_limit_key(schedule.limit_key)
    return fields


class Firer(Protocol):
    async def fire_due_schedules(self, *, queue: str = DEFAULT_QUEUE) -> Tick: ...


async def fire_schedules_forever(ops: Firer, queues: Callable[[], Awaitable[Iterable[str]]]) -> None:
    """The ticker of a long-running process (the MCP server, the Worker runtime): fire the due
    schedules of ``queues()`` (asked again every time, so new queues are seen), then sleep until
    the next slot, at most SCHEDULE_TICK_S. A store outage is logged at debug and waited out."""
    while True:
        pause = SCHEDULE_TICK_S
        try:
            for name in await queues():
                tick = await ops.fire_due_schedules(queue=name)
                for f in tick.firings:
                    logger.debug("schedule %s of %s: slot %d -> %s", f.schedule_id, name, f.slot, f.task_id)
                pause = min(pause, tick.sleep_s())
        except QueueError as exc:
            logger.debug("schedules not fired this time: %s", exc)
        await anyio.sleep(max(pause, 0.002))  # never a busy loop, even with a slot due right now
