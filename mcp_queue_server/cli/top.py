"""``mcp-queue-server top``: a terminal view of the queues, redrawn every few seconds (plain ANSI)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

import anyio

from mcp_queue_server.cli.common import EXIT_OK, STATS_HEADERS, age_text, stats_row, table
from mcp_queue_server.core.models import QueueStats
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.errors import QueueUnavailable
from mcp_queue_server.settings import Settings
from mcp_queue_server.store.open import open_queue

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen
BOLD, RESET = "\x1b[1m", "\x1b[0m"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", action="append", metavar="NAME", help="queue name (repeatable; default: default)")
    p.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between refreshes (2)")
    p.add_argument("--once", action="store_true", help="print one frame, without ANSI codes, and exit")


def rates(now: list[QueueStats], before: list[QueueStats] | None, seconds: float) -> dict[str, tuple[float, float]]:
    """Enqueued and completed tasks per second since the previous frame, by queue."""
    if not before or seconds <= 0:
        return {}
    old = {s.queue: s.totals for s in before}
    out = {}
    for s in now:
        prev = old.get(s.queue, {})
        enq = (s.totals.get("enqueued", 0) - prev.get("enqueued", 0)) / seconds
        done = (s.totals.get("completed", 0) - prev.get("completed", 0)) / seconds
        out[s.queue] = (enq, done)
    return out


def frame(settings: Settings, stats: list[QueueStats], per_second: dict[str, tuple[float, float]], ansi: bool) -> str:
    bold, reset = (BOLD, RESET) if ansi else ("", "")
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"{bold}mcp-queue-server top{reset}   key prefix {settings.key_prefix}   {when}", ""]
    headers = [*STATS_HEADERS, "IN/S", "DONE/S"]
    rows: list[list[str]] = []
    for s in stats:
        enq, done = per_second.get(s.queue, (None, None))
        rows.append([*stats_row(s), "-" if enq is None else f"{enq:.1f}", "-" if done is None else f"{done:.1f}"])
    lines.append(table(headers, rows))
    for s in stats:
        if s.consumers:
            lines += ["", f"{bold}consumers of {s.queue}{reset}"]
            busy = sorted(s.consumers, key=lambda c: (-c.pending, c.idle_ms))
            lines.append(
                table(["NAME", "IN FLIGHT", "IDLE"], [[c.name, str(c.pending), age_text(c.idle_ms)] for c in busy])
            )
    return "\n".join(lines)


async def _snapshot(queue: TaskQueue, names: list[str]) -> list[QueueStats]:
    return [await queue.get_queue_stats(name) for name in names]


async def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Redraw until Ctrl-C; a store outage shows on screen and the view keeps trying."""
    out = out or sys.stdout
    names = args.queue or ["default"]
    async with open_queue(settings) as queue:
        if args.once:
            print(frame(settings, await _snapshot(queue, names), {}, ansi=False), file=out)
            return EXIT_OK
        before: list[QueueStats] | None = None
        then = time.monotonic()
        while True:  # until Ctrl-C (exit status 130)
            try:
                stats = await _snapshot(queue, names)
            except QueueUnavailable as exc:
                print(f"{CLEAR}{exc}", file=out, flush=True)
            else:
                now = time.monotonic()
                shown = frame(settings, stats, rates(stats, before, now - then), ansi=True)
                print(f"{CLEAR}{shown}\n\n(every {args.interval:g} s; Ctrl-C to quit)", file=out, flush=True)
                before, then = stats, now
            await anyio.sleep(args.interval)
