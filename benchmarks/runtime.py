"""The Worker runtime (handlers, leases, acks per task) beside the library drain, same run.

``Worker(queue, {"noop": handler}, concurrency=C)`` with a no-op handler drains a prefilled
queue; its rate (from the first handler call to the n-th ack, the peers' drivers' clock) at
the best of a few concurrencies stands beside the library's own drain (``read_messages(100)``
+ one ``ack_many``) on the same server. Redis's CPU per task is reported beside both.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import anyio

from benchmarks import library
from benchmarks.common import Report, Target, log, make_figure
from benchmarks.sections import Bench, Plan, RedisCpu
from mcp_queue_server import TaskQueue
from mcp_queue_server.core.models import Task
from mcp_queue_server.testing import RedisProc
from mcp_queue_server.worker.runtime import TaskContext, Worker, WorkerEvent

CONCURRENCIES = (10, 50, 100)


async def worker_rate(q: TaskQueue, n: int, concurrency: int, queue: str = library.QUEUE) -> float:
    """Run a :class:`Worker` with a no-op handler until ``n`` tasks are acked; tasks/s."""
    t0 = t1 = 0.0
    acked = 0
    done = anyio.Event()

    async def noop(task: Task, ctx: TaskContext) -> Any:
        nonlocal t0
        if not t0:
            t0 = time.perf_counter()

    def on_event(event: WorkerEvent) -> None:
        nonlocal acked, t1
        if event.kind == "acked":
            acked += 1
            if acked == n:
                t1 = time.perf_counter()
                done.set()

    w = Worker(
        q,
        {"noop": noop},
        queue_name=queue,
        concurrency=concurrency,
        block_ms=100,
        recover_interval_s=None,
        summary_interval_s=None,
        on_event=on_event,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        with anyio.fail_after(600):
            await done.wait()
        w.stop(0)
    return n / (t1 - t0)


async def worker(report: Report, server: RedisProc, plan: Plan) -> None:
    n = plan.worker_tasks
    log(f"worker runtime, no-op handler, concurrency {'/'.join(map(str, CONCURRENCIES))}: {n} tasks per rep")
    async with Bench(server) as b:
        q = TaskQueue(b.settings, consumer="worker")
        await q.connect()
        try:
            await library.prefill(b.q, 300)  # warm-up: scripts loaded, connections open
            await library.drain_rate(b.q, batch=100)
            for c in CONCURRENCIES:
                await library.prefill(b.q, 200)
                await worker_rate(q, 200, c)
            drain: list[float] = []
            drain_cpu: list[float] = []
            rates: dict[int, list[float]] = {c: [] for c in CONCURRENCIES}
            cpu: dict[int, list[float]] = {c: [] for c in CONCURRENCIES}
            for rep in range(plan.reps):
                order = list(CONCURRENCIES) if rep % 2 == 0 else list(reversed(CONCURRENCIES))
                b.fresh()
                await library.prefill(b.q, n)
                with RedisCpu(server, n, drain_cpu):
                    drain.append(await library.drain_rate(b.q, batch=100))
                for c in order:
                    b.fresh()
                    await library.prefill(b.q, n)
                    with RedisCpu(server, n, cpu[c]):
                        rates[c].append(await worker_rate(q, n, c))
            b.fresh()
        finally:
            await q.disconnect(release=False)
    best = max(CONCURRENCIES, key=lambda c: statistics.median(rates[c]))
    for c in CONCURRENCIES:
        log(f"  worker runtime, concurrency {c}: {statistics.median(rates[c]):,.0f} tasks/s "
            f"(Redis CPU {statistics.median(cpu[c]):.1f} us/task)")  # fmt: skip
    report.add(
        make_figure(
            "worker runtime: process no-op, 1 worker, best concurrency",
            "tasks/s",
            rates[best],
            "library drain, read 100 + ack_many (same run)",
            drain,
            target=Target(ratio=0.8, text=">= 0.8 x library drain"),
            tasks_per_rep=n,
            concurrency=best,
            by_concurrency={str(c): round(statistics.median(rates[c]), 1) for c in CONCURRENCIES},
            drain_redis_cpu_us_per_task=RedisCpu.extra(drain_cpu).get("redis_cpu_us_per_task"),
            **RedisCpu.extra(cpu[best]),
        )
    )
