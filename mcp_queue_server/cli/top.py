"""``mcp-queue-server top``: a terminal view of the queues, redrawn every few seconds.

On a terminal the view is drawn with ``rich`` and redrawn in place; piped (or with ``--once``)
each frame is plain text, without escape codes.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, TextIO

import anyio

from mcp_queue_server.cli.common import (
    EXIT_OK,
    STATS_HEADERS,
    age_text,
    fit_console,
    is_terminal,
    rich_table,
    stats_row,
    table,
)
from mcp_queue_server.core.models import QueueStats
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.errors import QueueUnavailable
from mcp_queue_server.settings import Settings
from mcp_queue_server.store.open import open_queue

if TYPE_CHECKING:
    from rich.console import RenderableType

HEADERS = [*STATS_HEADERS, "IN/S", "DONE/S"]
CONSUMER_HEADERS = ["NAME", "IN FLIGHT", "IDLE", "LAST SEEN"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--queue", action="append", metavar="NAME", help="queue name (repeatable; default: every known queue)"
    )
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


def _title(settings: Settings) -> str:
    return f"mcp-queue-server top   key prefix {settings.key_prefix}   {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _rows(stats: list[QueueStats], per_second: dict[str, tuple[float, float]]) -> list[list[str]]:
    rows: list[list[str]] = []
    for s in stats:
        enq, done = per_second.get(s.queue, (None, None))
        rows.append([*stats_row(s), "-" if enq is None else f"{enq:.1f}", "-" if done is None else f"{done:.1f}"])
    return rows


def _consumer_rows(s: QueueStats) -> list[list[str]]:
    busy = sorted(s.consumers, key=lambda c: (-c.pending, c.idle_ms))
    return [[c.name, str(c.pending), age_text(c.idle_ms), age_text(c.last_seen_ms)] for c in busy]


def frame(settings: Settings, stats: list[QueueStats], per_second: dict[str, tuple[float, float]]) -> str:
    """One frame as plain text (``--once``, or piped): what scripts may parse."""
    lines = [_title(settings), "", table(HEADERS, _rows(stats, per_second))]
    for s in stats:
        if s.consumers:
            lines += ["", f"consumers of {s.queue}", table(CONSUMER_HEADERS, _consumer_rows(s))]
    return "\n".join(lines)


def rich_frame(
    settings: Settings, stats: list[QueueStats], per_second: dict[str, tuple[float, float]], interval: float
) -> RenderableType:
    """One frame for a terminal, drawn with rich."""
    from rich.console import Group
    from rich.text import Text

    consumers = [
        rich_table(CONSUMER_HEADERS, _consumer_rows(s), title=f"consumers of {s.queue}") for s in stats if s.consumers
    ]
    return Group(
        Text(_title(settings), style="bold"),
        rich_table(HEADERS, _rows(stats, per_second)),
        *consumers,
        Text(f"every {interval:g} s; Ctrl-C to quit", style="dim"),
    )


async def _snapshot(queue: TaskQueue, names: list[str]) -> list[QueueStats]:
    """The named queues; none named: every known queue (looked up each frame, so new ones appear)."""
    if not names:
        return await queue.all_queue_stats()
    return await queue.stats_of(names)


async def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Redraw until Ctrl-C; a store outage shows on screen and the view keeps trying."""
    out = out or sys.stdout
    names: list[str] = args.queue or []
    async with open_queue(settings) as queue:
        if args.once:
            print(frame(settings, await _snapshot(queue, names), {}), file=out)
            return EXIT_OK
        if not is_terminal(out):
            await _print_frames(queue, names, settings, args.interval, out)
            return EXIT_OK  # not reached: it prints until Ctrl-C
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        console = Console(file=out)
        columns = console.width  # the terminal's (a frame may widen the console past it)
        with Live(Text("reading the queues..."), console=console, auto_refresh=False) as live:
            before: list[QueueStats] | None = None
            then = time.monotonic()
            while True:  # until Ctrl-C (exit status 130)
                try:
                    stats = await _snapshot(queue, names)
                except QueueUnavailable as exc:
                    live.update(Text(str(exc), style="bold red"), refresh=True)
                else:
                    now = time.monotonic()
                    per_second = rates(stats, before, now - then)
                    drawn = rich_frame(settings, stats, per_second, args.interval)
                    fit_console(console, drawn, columns)
                    live.update(drawn, refresh=True)
                    before, then = stats, now
                await anyio.sleep(args.interval)


async def _print_frames(queue: TaskQueue, names: list[str], settings: Settings, interval: float, out: TextIO) -> None:
    """Piped: one plain frame after another, a blank line between them, until Ctrl-C."""
    before: list[QueueStats] | None = None
    then = time.monotonic()
    while True:
        try:
            stats = await _snapshot(queue, names)
        except QueueUnavailable as exc:
            print(exc, file=out, flush=True)
        else:
            now = time.monotonic()
            print(f"{frame(settings, stats, rates(stats, before, now - then))}\n", file=out, flush=True)
            before, then = stats, now
        await anyio.sleep(interval)
