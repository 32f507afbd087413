"""Progress notifications while a tool waits, so hosts with idle timeouts keep the call alive.

A blocking ``read_tasks`` (``block_ms``) or ``get_task`` (``wait_ms``) may wait up to the
server's ``max_block_ms`` (20 s by default); some hosts drop a call that says nothing for a
few seconds. A wait longer than :data:`PROGRESS_EVERY_S` is split into slices of at most
that, and ``ctx.report_progress`` (progress: ms waited, total: the wait asked for) runs
between slices: a ``notifications/progress`` when the request carries a progress token (the
in-memory client passes a callback instead, with no token in ``_meta``), a no-op otherwise.
Slicing costs one more non-blocking script call per slice, so it is done whatever the request.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp.server.mcpserver import Context

T = TypeVar("T")

#: Longest a wait goes without a progress notification (a test lowers it).
PROGRESS_EVERY_S = 5.0


async def wait_in_slices(
    ctx: Context[Any, Any],
    wait_ms: int,
    step: Callable[[int], Awaitable[T]],
    done: Callable[[T], bool],
    message: str,
) -> T:
    """``step(ms)`` waits up to ``ms`` and returns what it got; run it until ``done`` says so or
    ``wait_ms`` is spent, reporting progress between slices."""
    slice_ms = max(int(PROGRESS_EVERY_S * 1000), 1)
    if wait_ms <= slice_ms:
        return await step(wait_ms)
    started = time.monotonic()
    while True:
        left_ms = wait_ms - int((time.monotonic() - started) * 1000)
        got = await step(max(min(slice_ms, left_ms), 0))
        if done(got) or left_ms <= slice_ms:
            return got
        waited_ms = min(int((time.monotonic() - started) * 1000), wait_ms)
        await ctx.report_progress(waited_ms, wait_ms, message)
