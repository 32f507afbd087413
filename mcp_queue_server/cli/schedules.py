"""``mcp-queue-server schedules list|add|remove``: recurring tasks, as the schedule tools set them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from mcp_queue_server.cli.common import EXIT_FAILED, EXIT_OK, UsageError, print_table
from mcp_queue_server.cli.ops import emit_json
from mcp_queue_server.core.models import NewSchedule, Schedule
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.settings import Settings
from mcp_queue_server.store.open import open_queue

SUMMARY = "List, add or remove recurring tasks: `schedules list|add|remove`."
DESCRIPTION = (
    "Recurring tasks: one task per slot of a cron expression (5 fields, UTC) or of an interval, each slot "
    "exactly once across every process. The running servers and workers fire them; slots missed while none "
    "ran are skipped, or fired once with --catch-up once."
)


def add_actions(actions: Any, command: Any, queue_flag: Any, json_flag: Any) -> None:
    """The actions under ``schedules`` (``command``, ``queue_flag``, ``json_flag``: main's helpers)."""
    c = command("list", "Every schedule of the queue, by id, with its next and last run.", actions)
    queue_flag(c)
    json_flag(c)
    c = command(
        "add",
        "Set a schedule (the same id again replaces it; the same definition changes nothing).",
        actions,
    )
    c.add_argument("schedule_id", metavar="SCHEDULE_ID")
    c.add_argument("task_type", metavar="TASK_TYPE")
    when = c.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help="5 fields, UTC, e.g. '*/15 * * * *'")
    when.add_argument("--every-ms", type=int, metavar="MS", help="an interval of at least 1000 ms")
    c.add_argument("--payload", default="{}", metavar="JSON", help="each task's payload, a JSON object (default {})")
    c.add_argument("--priority", type=int, default=0, metavar="N", help="each task's priority")
    c.add_argument("--start-at", type=int, metavar="MS", help="no slot before (ms since the epoch)")
    c.add_argument("--end-at", type=int, metavar="MS", help="no slot after (ms since the epoch)")
    c.add_argument("--catch-up", choices=["skip", "once"], default="skip",
                   help="slots missed while nothing ran: skip them (default) or fire one task for them")  # fmt: skip
    c.add_argument("--deadline-ms", type=int, metavar="MS", help="each task's deadline, from its firing")
    c.add_argument("--limit-key", metavar="KEY", help="each task's limit_key (see limits set)")
    queue_flag(c)
    json_flag(c)
    c = command("remove", "Remove schedules (the tasks they fired stay).", actions)
    c.add_argument("schedule_ids", nargs="+", metavar="SCHEDULE_ID")
    queue_flag(c)


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--payload is not JSON ({exc.msg} at character {exc.pos}): give an object") from None
    if not isinstance(value, dict):
        raise UsageError("--payload must be a JSON object, like '{\"n\": 1}'")
    return value


def _row(s: Schedule) -> list[str]:
    when = s.cron if s.cron is not None else f"every {s.every_ms} ms"
    return [s.schedule_id, s.task_type, when, s.catch_up, _at(s.next_run_at), _at(s.last_run_at),
            str(s.fired), str(s.missed)]  # fmt: skip


def _at(ms: int | None) -> str:
    if ms is None:
        return "-"
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    new = None
    if args.action == "add":  # bad input fails before anything connects
        new = NewSchedule(
            args.schedule_id,
            args.task_type,
            _payload(args.payload),
            args.cron,
            args.every_ms,
            args.priority,
            args.start_at,
            args.end_at,
            args.catch_up,
            deadline_ms=args.deadline_ms,
            limit_key=args.limit_key,
        )
    async with open_queue(settings) as queue:
        if new is not None:
            return await _add(queue, args, new)
        if args.action == "remove":
            return await _remove(queue, args)
        return await _list(queue, args)


async def _add(queue: TaskQueue, args: argparse.Namespace, new: NewSchedule) -> int:
    got = await queue.set_schedule(new, queue=args.queue)
    if args.json:
        emit_json(dataclasses.asdict(got))
    else:
        verb = "unchanged" if got.unchanged else "replaced" if got.replaced else "added"
        print(f"{verb} schedule {got.schedule_id}; next run {_at(got.next_run_at)} UTC")
    return EXIT_OK


async def _remove(queue: TaskQueue, args: argparse.Namespace) -> int:
    status = EXIT_OK
    for sid in args.schedule_ids:
        if await queue.remove_schedule(sid, queue=args.queue):
            print(f"removed schedule {sid}")
        else:
            print(f"no schedule {sid} in queue {args.queue}", file=sys.stderr)
            status = EXIT_FAILED
    return status


async def _list(queue: TaskQueue, args: argparse.Namespace) -> int:
    found: list[Schedule] = []
    cursor = None
    while True:  # every page: operators want the whole list
        page = await queue.list_schedules(100, cursor, queue=args.queue)
        found += page.schedules
        cursor = page.next_cursor
        if cursor is None:
            break
    if args.json:
        emit_json([dataclasses.asdict(s) for s in found])
    elif found:
        headers = ["SCHEDULE", "TYPE", "WHEN", "CATCH-UP", "NEXT (UTC)", "LAST (UTC)", "FIRED", "MISSED"]
        print_table(headers, [_row(s) for s in found], 6)
    else:
        print(f"no schedule in queue {args.queue}")
    return EXIT_OK
