"""BullMQ (Python port) driver: Queue.add / Queue.addBulk / one Worker with concurrency."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _driver import Finish, emit, parse, payload
from bullmq import Queue, Worker

NAME = "bench"
BEST_CONCURRENCY = 1  # its default; 10, 50, 200 were slower here (CPU-bound no-op tasks)


async def main() -> None:
    args = parse()
    queue = Queue(NAME, {"connection": args.url})
    if args.mode == "enqueue_one":
        await queue.add("noop", payload(0))  # warm-up: scripts loaded
        t0 = time.perf_counter()
        for i in range(args.n):
            await queue.add("noop", payload(i))
        emit(rate=args.n / (time.perf_counter() - t0))
    elif args.mode == "enqueue_batch":
        await queue.addBulk([{"name": "noop", "data": payload(0)}])
        t0 = time.perf_counter()
        for start in range(0, args.n, 100):
            await queue.addBulk([{"name": "noop", "data": payload(i)} for i in range(start, start + 100)])
        emit(rate=args.n / (time.perf_counter() - t0))
    elif args.mode == "fill":
        for start in range(0, args.n, 100):
            jobs = [{"name": "noop", "data": payload(i)} for i in range(start, min(start + 100, args.n))]
            await queue.addBulk(jobs)
        emit(jobs=args.n)
    elif args.mode == "drain":
        for start in range(0, args.n, 100):
            await queue.addBulk([{"name": "noop", "data": payload(i)} for i in range(start, start + 100)])
        # Below the worker loop: manual processing, Worker.getNextJob + Job.moveToCompleted.
        worker = Worker(NAME, None, {"connection": args.url, "autorun": False})
        token = "bench-token"
        t0 = time.perf_counter()
        for _ in range(args.n):
            job = await worker.getNextJob(token)
            assert job is not None, "bullmq: a prefilled job is missing"
            await job.moveToCompleted(None, token, False)
        rate = args.n / (time.perf_counter() - t0)
        await worker.close()
        emit(rate=rate, api="Worker.getNextJob + Job.moveToCompleted (manual processing)")
    else:
        for start in range(0, args.n, 100):
            await queue.addBulk([{"name": "noop", "data": payload(i)} for i in range(start, start + 100)])
        finish = Finish(args.n)
        stop = asyncio.Event()

        async def noop(job: Any, token: str) -> None:
            finish.started()

        def completed(job: Any, result: Any) -> None:
            if finish.done():
                stop.set()

        concurrency = args.concurrency or BEST_CONCURRENCY
        worker = Worker(NAME, noop, {"connection": args.url, "concurrency": concurrency})
        worker.on("completed", completed)
        await stop.wait()
        await worker.close()
        counts = await queue.getJobCounts("completed")
        emit(rate=finish.rate, concurrency=concurrency, ran=finish.ran, completed=counts.get("completed"))
    await queue.close()


asyncio.run(main())
