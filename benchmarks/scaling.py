"""Horizontal scaling: 1, 2 and 3 consumer processes on one Redis, and the same work on a
3-master Redis Cluster (each consumer on its own queue, the queues on different masters)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
import redis

from benchmarks import floor, library
from benchmarks.common import Report, bench_settings, log, make_figure
from benchmarks.procs import WorkerProc
from benchmarks.sections import STREAM, Bench, Plan, _consumers, alternate, run_together
from mcp_queue_server import TaskQueue
from mcp_queue_server.store.binaries import find_redis_server
from mcp_queue_server.testing import ClusterProc, RedisProc


async def scaling(report: Report, server: RedisProc, plan: Plan) -> None:
    """Batched processing with k = 1, 2, 3 consumer processes, each beside the raw floor."""
    log(f"scaling: 1/2/3 consumer processes, {plan.multi_batched} tasks each run")
    async with Bench(server) as b:
        for k in (1, 2, 3):

            async def ours(k: int = k) -> float:
                b.fresh()
                await library.prefill(b.q, plan.multi_batched)
                return await _consumers(server, "lib", b.settings.key_prefix, k, 100)

            async def raw(k: int = k) -> float:
                b.fresh()
                await floor.prefill(b.r, STREAM, plan.multi_batched)
                return await _consumers(server, "raw", b.settings.key_prefix, k, 100)

            mine, base = await alternate(plan.reps, ours, raw)
            report.add(
                make_figure(
                    f"scaling: process no-op, {k} consumer process(es), read 100 + ack_many",
                    "tasks/s",
                    mine,
                    f"{k} process(es) XREADGROUP COUNT 100 + XACK per batch",
                    base,
                    consumers=k,
                )
            )


async def _spread_queues(q: TaskQueue, cluster: ClusterProc, count: int) -> list[str]:
    """``count`` queue names whose slots live on different masters."""
    chosen: dict[int, str] = {}
    for i in range(200):
        name = f"scale{i}"
        chosen.setdefault(cluster.node_of(q.keys(name).base).port, name)
        if len(chosen) == count:
            break
    return list(chosen.values())


async def _per_queue_consumers(url: str, prefix: str, queues: list[str]) -> float:
    return await run_together(
        [
            WorkerProc("consume", impl="lib", url=url, prefix=prefix, consumer=f"c{i}", batch=100, queue=name)
            for i, name in enumerate(queues)
        ]
    )


async def cluster(report: Report, binary: str | None, plan: Plan) -> None:
    """3 consumers on 3 queues: on a 3-master cluster, against one Redis (the baseline)."""
    n = plan.multi_batched // 3
    proc = ClusterProc(Path(tempfile.mkdtemp(prefix="bench-cluster-", dir="/tmp")), masters=3, replicas=False)
    with RedisProc(binary=find_redis_server(binary)) as single:
        proc.start()
        try:
            log(f"cluster: 3 masters on ports {[node.port for node in proc.nodes]}; {n} tasks per queue")

            async def run(url: str) -> float:
                prefix = f"scale{anyio.current_time():.0f}"
                async with TaskQueue(bench_settings(url, prefix)) as q:
                    queues = await _spread_queues(q, proc, 3)
                    for name in queues:
                        await library.prefill(q, n, queue=name)
                    await q.disconnect(release=False)
                return await _per_queue_consumers(url, prefix, queues)

            async def on_cluster() -> float:
                for node in proc.nodes:
                    with redis.Redis(port=node.port) as c:
                        c.flushall()
                return await run(proc.url)

            async def on_single() -> float:
                single.flush()
                return await run(single.url)

            mine, base = await alternate(plan.reps, on_cluster, on_single)
        finally:
            proc.stop()
    report.add(
        make_figure(
            "cluster: process no-op, 3 consumers on 3 queues, 3 masters",
            "tasks/s",
            mine,
            "the same on one Redis",
            base,
            masters=3,
            tasks_per_rep=3 * n,
        )
    )
