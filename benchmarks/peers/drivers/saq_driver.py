"""saq driver: Queue.enqueue one at a time (saq has no batch enqueue) / one Worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _driver import Finish, emit, parse, payload
from saq import Queue, Worker
from saq.job import Status

BEST_CONCURRENCY = 10  # its default; 1, 20, 50 were no faster here
FINISH = Finish(0)


async def noop(ctx: Any, *, payload: dict[str, Any]) -> None:
    """saq registers functions by qualified name: module level, so the worker finds it."""
    FINISH.started()


async def main() -> None:
    args = parse()
    queue = Queue.from_url(args.url)
    await queue.connect()
    if args.mode == "enqueue_one":
        await queue.enqueue("noop", payload=payload(0))
        t0 = time.perf_counter()
        for i in range(args.n):
            await queue.enqueue("noop", payload=payload(i))
        emit(rate=args.n / (time.perf_counter() - t0))
    elif args.mode == "enqueue_batch":
        emit(rate=None, unsupported="saq has no batch enqueue")
    elif args.mode == "drain":
        for i in range(args.n):
            await queue.enqueue("noop", payload=payload(i))
        # Below the Worker: Queue.dequeue (one job per call) + Queue.finish.
        t0 = time.perf_counter()
        for _ in range(args.n):
            job = await queue.dequeue(timeout=5)
            assert job is not None, "saq: a prefilled job is missing"
            await queue.finish(job, Status.COMPLETE, result=None)
        emit(rate=args.n / (time.perf_counter() - t0), api="Queue.dequeue + Queue.finish")
    else:
        for i in range(args.n):
            await queue.enqueue("noop", payload=payload(i))
        finish = FINISH
        finish.n = args.n
        concurrency = args.concurrency or BEST_CONCURRENCY

        async def after(ctx: Any) -> None:
            if finish.done():
                worker.event.set()

        worker = Worker(queue, functions=[noop], concurrency=concurrency, after_process=after)
        await worker.start()
        emit(rate=finish.rate, concurrency=concurrency, completed=finish.count, ran=finish.ran)
    await queue.disconnect()


asyncio.run(main())
