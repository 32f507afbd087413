"""Memory: Redis ``used_memory`` before and after N tasks enqueued and completed.

Completed tasks keep a record (``<prefix>:{<queue>}:t:<id>``, with the result) for
``result_ttl_s``; that memory is measured separately by deleting exactly those keys,
which is what their expiry will do. Everything else must be back to the empty queue.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
from redis.asyncio import Redis

from benchmarks import library
from benchmarks.common import Report, Target, bench_settings, log, make_figure
from mcp_queue_server import TaskQueue
from mcp_queue_server.store.binaries import find_redis_server
from mcp_queue_server.testing import RedisProc

MIB = 1024 * 1024


def process_rss() -> int:
    """This process's resident set size (bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def used(r: Redis) -> dict[str, int]:
    info: dict[str, Any] = await r.info("memory")
    return {k: int(info[k]) for k in ("used_memory", "used_memory_rss", "used_memory_lua")}


async def settled(r: Redis) -> dict[str, int]:
    """``used_memory`` once the server cron has shrunk emptied hash tables (stable for 1 s)."""
    last = await used(r)
    for _ in range(20):
        await anyio.sleep(0.5)
        now = await used(r)
        if now["used_memory"] == last["used_memory"]:
            return now
        last = now
    return last


async def delete_matching(r: Redis, pattern: str) -> tuple[int, int]:
    """Delete keys matching ``pattern``; returns (count, how many had no TTL)."""
    count = no_ttl = 0
    batch: list[bytes] = []
    async for key in r.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) == 1000:
            no_ttl += await _drop(r, batch)
            count += len(batch)
            batch = []
    if batch:
        no_ttl += await _drop(r, batch)
        count += len(batch)
    return count, no_ttl


async def _drop(r: Redis, keys: list[bytes]) -> int:
    async with r.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.ttl(k)
        ttls = await pipe.execute()
    await r.delete(*keys)
    return sum(1 for t in ttls if t < 0)


async def run(report: Report, binary: str | None, n: int) -> None:
    log(f"memory: {n} tasks enqueued and completed on a fresh redis-server")
    with RedisProc(binary=find_redis_server(binary)) as server:
        settings = bench_settings(server.url)
        r = Redis.from_url(server.url)
        records = f"{settings.key_prefix}:{{{library.QUEUE}}}:t:*"
        async with TaskQueue(settings, consumer="main") as q:
            # Empty queue: streams and group exist, scripts loaded, no task record left.
            await library.prefill(q, 100)
            await library.drain_batched(q)
            await delete_matching(r, records)
            before, rss_before = await settled(r), process_rss()
            t0 = time.perf_counter()
            done = 0
            for start in range(0, n, 10_000):  # in waves, as a live queue would see them
                await library.enqueue_batches(q, min(10_000, n - start))
                done += await library.drain_batched(q)
            assert done == n, f"completed {done} of {n}"
            elapsed = time.perf_counter() - t0
            with_records, rss_after = await settled(r), process_rss()
            kept, without_ttl = await delete_matching(r, records)
            after = await settled(r)
            k = q.keys(library.QUEUE)
            lengths = [await r.xlen(k.high), await r.xlen(k.low)]
            keys_left = [key.decode() async for key in r.scan_iter(match=f"{settings.key_prefix}:*")]
            await q.disconnect(release=False)
        await r.aclose()
    records_mib = (with_records["used_memory"] - after["used_memory"]) / MIB
    report.add(
        make_figure(
            f"memory: Redis used_memory after {n:,} completed, TTL'd records excluded",
            "MiB",
            [after["used_memory"] / MIB],
            "empty queue",
            [before["used_memory"] / MIB],
            better="lower",
            target=Target(delta=1.0, text="within 1 MiB of the empty queue"),
            delta_bytes=after["used_memory"] - before["used_memory"],
            stream_lengths=lengths,
            keys_left=sorted(keys_left),
            seconds=round(elapsed, 1),
        )
    )
    report.add(
        make_figure(
            f"memory: completed-task records kept for result_ttl_s ({n:,} tasks)",
            "MiB",
            [records_mib],
            "empty queue",
            [before["used_memory"] / MIB],
            better="lower",
            bytes_per_task=round(records_mib * MIB / max(kept, 1)),
            records=kept,
            records_without_ttl=without_ttl,
            result_ttl_s=settings.result_ttl_s,
        )
    )
    report.add(
        make_figure(
            f"memory: redis-server RSS after {n:,} completed (records still held)",
            "MiB",
            [with_records["used_memory_rss"] / MIB],
            "RSS with the empty queue",
            [before["used_memory_rss"] / MIB],
            better="lower",
            rss_after_records_deleted_mib=round(after["used_memory_rss"] / MIB, 2),
        )
    )
    report.add(
        make_figure(
            f"memory: library process RSS after {n:,} completed",
            "MiB",
            [rss_after / MIB],
            "RSS with the empty queue",
            [rss_before / MIB],
            better="lower",
        )
    )
