"""Worker processes the suite starts: ``python -m benchmarks.workers MODE --impl lib|raw ...``.

Protocol on stdio, one JSON object per line: the worker prints ``{"ready": true}`` once
connected and warmed up, waits for a ``go`` line on stdin (consume mode only), then prints
its result. Times are ``time.time()`` / ``time.time_ns()`` (the same clock in every process).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import anyio
import anyio.to_thread

from benchmarks import floor
from benchmarks.common import bench_settings
from benchmarks.library import QUEUE, drain_batched, drain_one_by_one
from mcp_queue_server import TaskQueue


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def wait_for_go() -> None:
    line = await anyio.to_thread.run_sync(sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit(f"expected go, got {line!r}")


async def consume(args: argparse.Namespace) -> None:
    """Drain the queue (or raw stream) as one consumer; report count and wall times."""
    if args.impl == "lib":
        async with TaskQueue(bench_settings(args.url, args.prefix), consumer=args.consumer) as q:
            await q.read_messages(1, queue="warmup")  # loads the script, opens the connection
            emit({"ready": True})
            await wait_for_go()
            t0, c0 = time.time(), time.process_time()
            n = await (drain_batched(q, args.batch, args.queue) if args.batch > 1 else drain_one_by_one(q, args.queue))
            t1, c1 = time.time(), time.process_time()
            await q.disconnect(release=False)
    else:
        r = floor.connect(args.url)
        await r.ping()
        emit({"ready": True})
        await wait_for_go()
        t0, c0 = time.time(), time.process_time()
        n = await floor.consume(r, args.stream, args.consumer, args.batch)
        t1, c1 = time.time(), time.process_time()
        await r.aclose()
    emit({"count": n, "t0": t0, "t1": t1, "cpu_s": c1 - c0})


async def latency_reader(args: argparse.Namespace) -> None:
    """A blocking reader: for each delivered task, now - the producer's send time (ns)."""
    latencies: list[int] = []
    if args.impl == "next":
        # What issue 17 measures: ack(read_next=...) acks a batch and reads (or waits for) the next in one call.
        async with TaskQueue(bench_settings(args.url, args.prefix), consumer=args.consumer) as q:
            await q.read_messages(1, queue="warmup")
            emit({"ready": True})
            tasks = await q.read_messages(100, block_ms=args.block_ms, queue=QUEUE)
            while True:
                now = time.time_ns()
                latencies += [now - t.payload["t"] for t in tasks]
                if len(latencies) >= args.n:
                    break
                if not tasks:
                    tasks = await q.read_messages(100, block_ms=args.block_ms, queue=QUEUE)
                    continue
                ids = [t.task_id for t in tasks]
                tasks = (await q.ack_and_read(ids, 100, block_ms=args.block_ms, queue=QUEUE)).tasks
            if tasks:
                await q.ack_many([t.task_id for t in tasks], queue=QUEUE)
            await q.disconnect(release=False)
    elif args.impl == "lib":
        async with TaskQueue(bench_settings(args.url, args.prefix), consumer=args.consumer) as q:
            await q.read_messages(1, queue="warmup")
            emit({"ready": True})
            while len(latencies) < args.n:
                tasks = await q.read_messages(100, block_ms=args.block_ms, queue=QUEUE)
                now = time.time_ns()
                latencies += [now - t.payload["t"] for t in tasks]
                if tasks:
                    await q.ack_many([t.task_id for t in tasks], queue=QUEUE)
            await q.disconnect(release=False)
    else:
        r = floor.connect(args.url)
        await r.ping()
        emit({"ready": True})
        while len(latencies) < args.n:
            reply = await r.xreadgroup(floor.GROUP, args.consumer, {args.stream: ">"}, count=100, block=args.block_ms)
            now = time.time_ns()
            if reply:
                entries = reply[0][1]
                latencies += [now - json.loads(fields[b"payload"])["t"] for _, fields in entries]
                await r.xack(args.stream, floor.GROUP, *[entry_id for entry_id, _ in entries])
        await r.aclose()
    emit({"latencies_ns": latencies})


async def hold(args: argparse.Namespace) -> None:
    """Lease ``n`` tasks with a short lease, report when the last lease expires, then hang
    until SIGKILLed."""
    held = 0
    expires = 0.0
    if args.impl == "lib":
        q = await TaskQueue(bench_settings(args.url, args.prefix), consumer=args.consumer).connect()
        while held < args.n:
            tasks = await q.read_messages(100, lease_ms=args.lease_ms, queue=QUEUE)
            held += len(tasks)
            expires = max([expires, *(t.lease_expires_at / 1000 for t in tasks)])
    else:
        r = floor.connect(args.url)
        while held < args.n:
            reply = await r.xreadgroup(floor.GROUP, args.consumer, {args.stream: ">"}, count=100)
            held += len(reply[0][1]) if reply else 0
            expires = time.time() + args.lease_ms / 1000  # idle time counts from delivery
    emit({"held": held, "expires": expires})
    await anyio.sleep(3600)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["consume", "latency-reader", "hold"])
    p.add_argument("--impl", choices=["lib", "next", "raw"], required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--prefix", default="bench")
    p.add_argument("--stream", default="raw")
    p.add_argument("--consumer", default="c1")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--queue", default=QUEUE)
    p.add_argument("--n", type=int, default=0)
    p.add_argument("--block-ms", type=int, default=1000)
    p.add_argument("--lease-ms", type=int, default=300)
    args = p.parse_args()
    modes = {"consume": consume, "latency-reader": latency_reader, "hold": hold}
    anyio.run(modes[args.mode], args)


if __name__ == "__main__":
    main()
