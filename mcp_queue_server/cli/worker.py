"""``mcp-queue-server worker MODULE:ATTR``: run handlers in one process, or a supervised pool of them."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from mcp_queue_server.cli.common import EXIT_INTERRUPTED, EXIT_OK, UsageError
from mcp_queue_server.settings import Settings
from mcp_queue_server.worker.pool import ScalePolicy, WorkerPool, write_heartbeats
from mcp_queue_server.worker.runtime import ANY_TYPE, Handler, Worker

DESCRIPTION = (
    "Run task handlers: MODULE:ATTR names an async function `handler(task, ctx)` (every task type) or a "
    "dict {task_type: handler}; tasks of other types are handed back, uncharged, for the workers that "
    "handle them (give each set of types its own --queue). SIGTERM/SIGINT: finish running tasks within the "
    "grace period, then hand them back; a second signal hands them back at once. With --processes or "
    "--max-processes: a supervised "
    "pool of worker processes (restarted when they die or stop heartbeating; autoscaled between "
    "--min-processes and --max-processes by queue depth and oldest-task age)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("handler", metavar="MODULE:ATTR", help="the handler (module importable from the current dir)")
    p.add_argument("--queue", default="default", metavar="NAME", help="queue name (default: default)")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="tasks run at once per process (1)")
    p.add_argument("--grace-period", type=float, default=30.0, metavar="S", help="time to finish at stop (30)")
    p.add_argument("--recover-interval", type=float, default=30.0, metavar="S", help="stuck-task recovery (30)")
    p.add_argument(
        "--summary-interval",
        type=float,
        default=60.0,
        metavar="S",
        help="log a summary (tasks done and failed, rate) every S seconds; 0: never (60)",
    )
    pool = p.add_argument_group("worker pool")
    pool.add_argument("--processes", type=int, metavar="N", help="run N supervised worker processes")
    pool.add_argument("--min-processes", type=int, metavar="N", help="autoscale: fewest processes")
    pool.add_argument("--max-processes", type=int, metavar="N", help="autoscale: most processes")
    pool.add_argument("--tasks-per-process", type=int, default=10, metavar="N", help="waiting tasks per process (10)")
    pool.add_argument(
        "--max-wait-ms", type=int, default=30_000, metavar="MS", help="a task waiting longer adds one (30000)"
    )
    pool.add_argument("--scale-interval", type=float, default=5.0, metavar="S", help="look at the queue every S (5)")
    pool.add_argument("--scale-down-after", type=float, default=60.0, metavar="S", help="quiet time per step down (60)")
    pool.add_argument("--health-timeout", type=float, default=30.0, metavar="S", help="restart a silent worker (30)")
    pool.add_argument("--heartbeat-interval", type=float, default=2.0, metavar="S", help=argparse.SUPPRESS)
    pool.add_argument("--heartbeat-file", type=Path, metavar="PATH", help=argparse.SUPPRESS)  # set by the pool
    pool.add_argument("--parent-pid", type=int, metavar="PID", help=argparse.SUPPRESS)  # set by the pool


def load_handlers(spec: str) -> dict[str, Handler]:
    """Import ``module:attr``: an async function (every task type) or a mapping type -> handler.

    Raises:
        UsageError: the spec is malformed, the module cannot be imported or the attribute is unusable.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"handler must be MODULE:ATTR (e.g. myapp.tasks:handle), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the project's own modules
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    try:
        target: Any = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    handlers = dict(target) if isinstance(target, Mapping) else {ANY_TYPE: target}
    for task_type, fn in handlers.items():
        if not callable(fn):
            raise UsageError(f"{spec}: the handler for {task_type!r} must be an async function (task, ctx)")
    return handlers


def _pool_size(args: argparse.Namespace) -> ScalePolicy | None:
    if args.processes is None and args.min_processes is None and args.max_processes is None:
        return None
    if args.processes is not None and (args.min_processes is not None or args.max_processes is not None):
        raise UsageError("give --processes, or --min-processes/--max-processes, not both")
    low = args.processes or args.min_processes or 1
    high = args.processes or args.max_processes or low
    try:
        return ScalePolicy(
            min_workers=low,
            max_workers=high,
            tasks_per_worker=args.tasks_per_process,
            max_wait_ms=args.max_wait_ms or None,
            scale_down_after_s=args.scale_down_after,
            interval_s=args.scale_interval,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one worker (with heartbeats when a pool supervises it) or a pool; returns at shutdown."""
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.summary_interval < 0:
        raise UsageError("--summary-interval must be 0 (no summary) or more seconds")
    handlers = load_handlers(args.handler)  # in the pool too: a bad spec fails once, not per restart
    policy = _pool_size(args)
    if policy is not None:
        pool = WorkerPool(
            args.handler,
            settings,
            size=policy,
            queue_name=args.queue,
            concurrency=args.concurrency,
            grace_period_s=args.grace_period,
            heartbeat_interval_s=args.heartbeat_interval,
            health_timeout_s=args.health_timeout,
            extra_args=[
                *("--recover-interval", str(args.recover_interval)),
                *("--summary-interval", str(args.summary_interval)),
            ],
        )
        await pool.serve()
        return _status(pool.stopped_by)
    worker = Worker(
        settings,
        handlers,
        queue_name=args.queue,
        concurrency=args.concurrency,
        grace_period_s=args.grace_period,
        recover_interval_s=args.recover_interval or None,
        summary_interval_s=args.summary_interval or None,
    )
    async with anyio.create_task_group() as tg:
        if args.heartbeat_file is not None:
            tg.start_soon(write_heartbeats, worker, args.heartbeat_file, args.heartbeat_interval, args.parent_pid)
        await worker.serve()
        tg.cancel_scope.cancel()
    return _status(worker.stopped_by)


def _status(stopped_by: signal.Signals | None) -> int:
    """Ctrl-C (SIGINT) exits 130 like every command; SIGTERM, the supervisor's graceful stop, exits 0."""
    return EXIT_INTERRUPTED if stopped_by == signal.SIGINT else EXIT_OK
