"""streaq driver: task.enqueue / Worker.enqueue_many / one Worker in burst mode."""

from __future__ import annotations

import time
from typing import Any

import anyio
from _driver import Finish, emit, parse, payload
from streaq import Worker

BEST_CONCURRENCY = 8  # 32 (default 16) and 100 were slower here


async def main() -> None:
    args = parse()
    concurrency = args.concurrency or BEST_CONCURRENCY
    worker = Worker(redis_url=args.url, queue_name="bench", concurrency=concurrency, handle_signals=False)
    finish = Finish(args.n)

    @worker.task()
    async def noop(payload: dict[str, Any]) -> None:
        finish.started()

    if args.mode == "drain":
        emit(rate=None, unsupported="streaq has no public consume API below its Worker")
        return
    async with worker:
        if args.mode == "enqueue_one":
            await noop.enqueue(payload(0))
            t0 = time.perf_counter()
            for i in range(args.n):
                await noop.enqueue(payload(i))
            emit(rate=args.n / (time.perf_counter() - t0))
            return
        if args.mode == "enqueue_batch":
            await worker.enqueue_many([noop.enqueue(payload(0))])
            t0 = time.perf_counter()
            for start in range(0, args.n, 100):
                await worker.enqueue_many([noop.enqueue(payload(i)) for i in range(start, start + 100)])
            emit(rate=args.n / (time.perf_counter() - t0))
            return
        for start in range(0, args.n, 100):
            await worker.enqueue_many([noop.enqueue(payload(i)) for i in range(start, start + 100)])
    # Burst mode: the worker returns once the stream is empty and nothing runs.
    worker.burst = True
    await worker.run_async()
    finish.t1 = time.perf_counter()
    emit(rate=finish.rate, concurrency=concurrency, ran=finish.ran, completed=worker.counters.get("completed"))


anyio.run(main)
