"""Profile one library workload: ``python -m benchmarks.profile WORKLOAD [--n N] [--top K]``.

Runs the workload under cProfile against a fresh redis-server and prints the functions
with the most own time (``tottime``) and cumulative time, plus the client CPU per task
(process time / tasks) beside the wall time, and Redis's own time per call
(``INFO commandstats``) for the commands the workload used.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections.abc import Awaitable, Callable

import anyio
import redis

from benchmarks import library
from benchmarks.common import bench_settings
from mcp_queue_server import TaskQueue
from mcp_queue_server.testing import RedisProc

Workload = Callable[[TaskQueue, int], Awaitable[object]]


async def _process_batched(q: TaskQueue, n: int) -> None:
    await library.drain_batched(q)


async def _process_single(q: TaskQueue, n: int) -> None:
    await library.drain_one_by_one(q)


async def _enqueue_one(q: TaskQueue, n: int) -> None:
    await library.enqueue_one(q, n)


async def _enqueue_batch(q: TaskQueue, n: int) -> None:
    await library.enqueue_batches(q, n)


async def redis_usec(q: TaskQueue) -> float:
    """Redis CPU spent in EVALSHA so far (``INFO commandstats``), in microseconds."""
    stats = await q.redis.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec", 0))


async def _read_then_ack(q: TaskQueue, n: int) -> None:
    """Read everything (count 100), then ack it in batches of 100: Redis time of each script."""
    u0 = await redis_usec(q)
    held = []
    while tasks := await q.read_messages(100, queue=library.QUEUE):
        held += [t.task_id for t in tasks]
    u1 = await redis_usec(q)
    for start in range(0, len(held), 100):
        await q.ack_many(held[start : start + 100], queue=library.QUEUE)
    u2 = await redis_usec(q)
    print(f"Redis CPU in read.lua {(u1 - u0) / n:.1f} us/task, in ack.lua {(u2 - u1) / n:.1f} us/task (batches of 100)")


#: name -> (prefill before profiling?, workload)
WORKLOADS: dict[str, tuple[bool, Workload]] = {
    "enqueue_one": (False, _enqueue_one),
    "enqueue_batch": (False, _enqueue_batch),
    "process_batched": (True, _process_batched),
    "process_single": (True, _process_single),
    "read_then_ack": (True, _read_then_ack),
}


async def run(name: str, n: int, top: int) -> None:
    prefill, workload = WORKLOADS[name]
    with RedisProc() as server:
        async with TaskQueue(bench_settings(server.url), consumer="main") as q:
            await library.prefill(q, 200)  # warm-up: scripts loaded, connections open
            await library.drain_batched(q)
            if prefill:
                await library.prefill(q, n)
            with redis.Redis(port=server.port) as r:
                r.config_resetstat()
            profiler = cProfile.Profile()
            wall, cpu = time.perf_counter(), time.process_time()
            profiler.enable()
            await workload(q, n)
            profiler.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            await q.disconnect(release=False)
        with redis.Redis(port=server.port) as r:
            stats = r.info("commandstats")
    print(f"{name}: {n} tasks, {n / wall:,.0f} tasks/s; client CPU {cpu / n * 1e6:.1f} us/task, "
          f"wall {wall / n * 1e6:.1f} us/task")  # fmt: skip
    for cmd, s in sorted(stats.items(), key=lambda kv: -kv[1]["usec"]):
        print(f"  redis {cmd}: {s['calls']} calls, {s['usec_per_call']:.1f} us/call, {s['usec'] / n:.1f} us/task")
    out = io.StringIO()
    st = pstats.Stats(profiler, stream=out).strip_dirs()
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    print(out.getvalue())


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("workload", choices=sorted(WORKLOADS))
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    anyio.run(run, args.workload, args.n, args.top)


if __name__ == "__main__":
    main()
