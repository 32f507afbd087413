"""What every command module shares: exit codes, the usage error, the error line and tables.

It sits below :mod:`mcp_queue_server.cli.main` and the command modules (``ops``, ``top``,
``worker``, ``demo``), which import it and nothing else from the CLI: no import cycles.
"""

from __future__ import annotations

import sys

from mcp_queue_server.core.models import QueueStats

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


# One queue's row, shared by `stats` and `top`.
STATS_HEADERS = [
    "QUEUE", "WAITING", "HIGH", "LOW", "DELAYED", "IN FLIGHT", "DEAD", "OLDEST", "CONSUMERS",
    "ENQUEUED", "COMPLETED", "RETRIED", "DEAD-LETTERED", "REPLAYED",
]  # fmt: skip


#: The lifetime counters every queue has, 0 until first counted (the core records only those counted).
TOTAL_NAMES = ("enqueued", "completed", "retried", "dead_lettered", "replayed")


def totals(s: QueueStats) -> dict[str, int]:
    """The queue's lifetime counters, every name in :data:`TOTAL_NAMES` present (0 when never counted)."""
    return {name: s.totals.get(name, 0) for name in TOTAL_NAMES} | dict(s.totals)


def stats_row(s: QueueStats) -> list[str]:
    t = totals(s)
    return [
        s.queue,
        *map(str, (s.available, s.high.available, s.low.available, s.delayed, s.in_flight, s.dead_letter)),
        age_text(s.oldest_waiting_age_ms),
        str(len(s.consumers)),
        *(str(t[k]) for k in TOTAL_NAMES),
    ]
