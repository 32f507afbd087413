"""What every command module shares: exit codes, the usage error, the error line and tables.

It sits below :mod:`mcp_queue_server.cli.main` and the command modules (``ops``, ``top``,
``worker``, ``demo``), which import it and nothing else from the CLI: no import cycles.

Tables: drawn with ``rich`` on a terminal; plain aligned text when the output is piped (what
scripts parse, stable). ``rich`` is imported only to draw on a terminal, so the commands (and the
worker processes a pool restarts) start without it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from mcp_queue_server.core.models import QueueStats

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

PROG = "mcp-queue-server"


class UsageError(Exception):
    """A command was given arguments or settings it cannot use (exit status 2)."""


def error(message: str) -> None:
    """Report a failure as one line on stderr, in argparse's own format."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


def age_text(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    return (
        f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"
    )


def table(headers: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """A plain aligned table; columns from ``numeric_from`` on are right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        parts = [c.rjust(w) if i >= numeric_from else c.ljust(w) for i, (c, w) in pairs]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def is_terminal(out: TextIO) -> bool:
    """Whether ``out`` is a terminal (a person is watching) rather than a pipe or a file."""
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # no such method, or closed
        return False


def rich_table(
    headers: list[str],
    rows: list[list[str]],
    numeric_from: int = 1,
    title: str | None = None,
    *,
    wrap_last: bool = False,
) -> Table:
    """The same table for a terminal: bold headers, numbers right-aligned, cells never read as markup.

    No cell is cut or folded (a number must not lose digits on a narrow terminal), except the
    last column's with ``wrap_last`` (free text, such as an error message).
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    drawn = Table(
        box=box.SIMPLE_HEAD, header_style="bold", title=title, title_justify="left", pad_edge=False, show_edge=False
    )
    for i, header in enumerate(headers):
        wraps = wrap_last and i == len(headers) - 1
        widest = max([len(header), *(len(row[i]) for row in rows)])
        drawn.add_column(
            header,
            justify="right" if i >= numeric_from and not wraps else "left",
            no_wrap=not wraps,
            min_width=None if wraps else widest,
        )
    for row in rows:
        drawn.add_row(*(Text(cell) for cell in row))
    return drawn


def fit_console(console: Console, renderable: RenderableType, columns: int) -> None:
    """Let ``renderable`` be as wide as it needs (the terminal wraps it, as it would a plain table)
    rather than have rich cut cells to the terminal's ``columns``."""
    console.width = 10_000  # measured against the console's width: unbounded here
    console.width = max(columns, console.measure(renderable).minimum)


def print_table(
    headers: list[str],
    rows: list[list[str]],
    numeric_from: int = 1,
    out: TextIO | None = None,
    *,
    wrap_last: bool = False,
) -> None:
    """Print a table: drawn with rich on a terminal, plain aligned text otherwise (for scripts)."""
    out = out or sys.stdout
    if not is_terminal(out):
        print(table(headers, rows, numeric_from), file=out)
        return
    from rich.console import Console

    console = Console(file=out)
    drawn = rich_table(headers, rows, numeric_from, wrap_last=wrap_last)
    fit_console(console, drawn, console.width)
    console.print(drawn)


# One queue's row, shared by `stats` and `top`.
STATS_HEADERS = [
    "QUEUE", "WAITING", "HIGH", "LOW", "DELAYED", "IN FLIGHT", "DEAD", "LATE", "OLDEST", "CONSUMERS",
    "ENQUEUED", "COMPLETED", "RETRIED", "DEAD-LETTERED", "REPLAYED",
]  # fmt: skip


#: The lifetime counters every queue has, 0 until first counted (the core records only those counted).
TOTAL_NAMES = ("enqueued", "completed", "retried", "dead_lettered", "replayed")


def totals(s: QueueStats) -> dict[str, int]:
    """The queue's lifetime counters, every name in :data:`TOTAL_NAMES` present (0 when never counted)."""
    return {name: s.totals.get(name, 0) for name in TOTAL_NAMES} | dict(s.totals)


def late_text(s: QueueStats) -> str:
    """Tasks past their deadline, and how late the worst is: ``3 (2m)``; ``0`` when none."""
    if not s.past_deadline:
        return "0"
    return f"{s.past_deadline} ({age_text(s.most_past_deadline_ms)})"


def stats_row(s: QueueStats) -> list[str]:
    t = totals(s)
    return [
        s.queue,
        *map(str, (s.available, s.high.available, s.low.available, s.delayed, s.in_flight, s.dead_letter)),
        late_text(s),
        age_text(s.oldest_waiting_age_ms),
        str(len(s.consumers)),
        *(str(t[k]) for k in TOTAL_NAMES),
    ]
