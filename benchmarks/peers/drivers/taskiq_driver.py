"""taskiq-redis driver (RedisStreamBroker): task.kiq one at a time (no batch API) / one Receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _driver import Finish, emit, parse, payload
from taskiq.receiver import Receiver
from taskiq_redis import RedisStreamBroker

BEST_CONCURRENCY = 10  # 100 was as fast, 500 slower


async def main() -> None:
    args = parse()
    finish = Finish(args.n)
    stop = asyncio.Event()

    class CountingBroker(RedisStreamBroker):
        """Counts acks: a task is done when its stream entry is acknowledged."""

        def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
            ack = super()._ack_generator(id, queue_name)

            async def counted() -> None:
                await ack()
                if finish.done():
                    stop.set()

            return counted

    # consumer_id "0": the group starts at the stream's beginning (default "$" skips a prefill).
    broker = CountingBroker(args.url, queue_name="bench", consumer_id="0")

    @broker.task(task_name="noop")
    async def noop(payload: dict[str, Any]) -> None:
        finish.started()

    await broker.startup()
    if args.mode == "enqueue_one":
        await noop.kiq(payload(0))
        t0 = time.perf_counter()
        for i in range(args.n):
            await noop.kiq(payload(i))
        emit(rate=args.n / (time.perf_counter() - t0))
    elif args.mode == "enqueue_batch":
        emit(rate=None, unsupported="taskiq has no batch enqueue")
    elif args.mode == "drain":
        for i in range(args.n):
            await noop.kiq(payload(i))
        # Below the Receiver: the broker's own stream, broker.listen() + message.ack().
        t0 = time.perf_counter()
        got = 0
        async for message in broker.listen():
            await message.ack()  # type: ignore[union-attr]
            got += 1
            if got == args.n:
                break
        emit(rate=args.n / (time.perf_counter() - t0), api="RedisStreamBroker.listen + AckableMessage.ack")
    else:
        for i in range(args.n):
            await noop.kiq(payload(i))
        concurrency = args.concurrency or BEST_CONCURRENCY
        broker.is_worker_process = True
        with ThreadPoolExecutor() as pool:
            receiver = Receiver(broker, executor=pool, max_async_tasks=concurrency, run_startup=False)
            finish_event = asyncio.Event()
            listening = asyncio.create_task(receiver.listen(finish_event))
            await stop.wait()
            finish_event.set()
            listening.cancel()
        emit(rate=finish.rate, concurrency=concurrency, ran=finish.ran, completed=finish.count)
    await broker.shutdown()


asyncio.run(main())
