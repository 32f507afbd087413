"""`limits set|list|remove`: the limits per limit key of a queue (see TaskQueue.set_limit)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from mcp_queue_server.cli.common import EXIT_OK, UsageError, print_table
from mcp_queue_server.core.models import LimitInfo
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.settings import Settings
from mcp_queue_server.store.open import open_queue

HEADERS = ["KEY", "MAX WORKING", "MAX PER MINUTE", "WORKING", "WAITING", "STARTED (1 MIN)"]


def check(args: argparse.Namespace) -> None:
    """Refuse a `limits set` that sets nothing, before anything connects."""
    if args.action == "set" and args.max_working is None and args.max_per_minute is None:
        raise UsageError("limits set: give --max-working and/or --max-per-minute (`limits remove KEY` removes one)")


def _row(info: LimitInfo) -> list[str]:
    def n(value: int | None) -> str:
        return "-" if value is None else str(value)

    return [info.key, n(info.max_working), n(info.max_per_minute), str(info.working), str(info.waiting),
            str(info.started_last_minute)]  # fmt: skip


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `limits` action against the queue store."""
    check(args)  # before anything connects (or starts the embedded Redis)
    async with open_queue(settings) as queue:
        return await _run(queue, args)


async def _run(queue: TaskQueue, args: argparse.Namespace) -> int:
    if args.action == "set":
        existed = await queue.set_limit(args.key, args.max_working, args.max_per_minute, queue=args.queue)
        print(f"{'replaced' if existed else 'set'} the limit of {args.key} in queue {args.queue}", file=sys.stderr)
    elif args.action == "remove":
        for key in args.keys:
            existed = await queue.remove_limit(key, queue=args.queue)
            print(f"removed the limit of {key}" if existed else f"{key} had no limit", file=sys.stderr)
        return EXIT_OK
    found = await queue.get_limits(args.queue)
    if args.action == "set":
        found = [info for info in found if info.key == args.key]
    if args.json:
        print(json.dumps([dataclasses.asdict(info) for info in found], indent=2))
    elif found:
        print_table(HEADERS, [_row(info) for info in found])
    else:
        print(f"no limits in queue {args.queue}")
    return EXIT_OK
