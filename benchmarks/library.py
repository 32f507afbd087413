"""Library-level workloads on :class:`~mcp_queue_server.TaskQueue` (one process, no MCP)."""

from __future__ import annotations

import time

from benchmarks.common import payload
from mcp_queue_server import NewTask, TaskQueue

QUEUE = "bench"


async def enqueue_one(q: TaskQueue, n: int, queue: str = QUEUE) -> float:
    """``enqueue`` awaited one at a time; returns tasks/s."""
    t0 = time.perf_counter()
    for i in range(n):
        await q.enqueue("noop", payload(i), queue=queue)
    return n / (time.perf_counter() - t0)


async def enqueue_batches(q: TaskQueue, n: int, batch: int = 100, queue: str = QUEUE) -> float:
    """``enqueue_batch`` of ``batch`` tasks per call; returns tasks/s."""
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        tasks = [NewTask("noop", payload(i)) for i in range(start, min(start + batch, n))]
        await q.enqueue_batch(tasks, queue=queue)
    return n / (time.perf_counter() - t0)


async def prefill(q: TaskQueue, n: int, queue: str = QUEUE) -> None:
    """``n`` queued tasks (not timed)."""
    await enqueue_batches(q, n, queue=queue)


async def drain_batched(q: TaskQueue, batch: int = 100, queue: str = QUEUE) -> int:
    """Read ``batch`` at a time and ack each batch with one ``ack_many``, until empty."""
    done = 0
    while tasks := await q.read_messages(batch, queue=queue):
        outcomes = await q.ack_many([t.task_id for t in tasks], queue=queue)
        done += len(outcomes)
    return done


async def drain_one_by_one(q: TaskQueue, queue: str = QUEUE) -> int:
    """Read one task, ack it, repeat until empty (an agent's pattern)."""
    done = 0
    while tasks := await q.read_messages(1, queue=queue):
        await q.acknowledge(tasks[0].task_id, queue=queue)
        done += 1
    return done


async def drain_rate(q: TaskQueue, *, batch: int, queue: str = QUEUE) -> float:
    t0 = time.perf_counter()
    n = await (drain_batched(q, batch, queue) if batch > 1 else drain_one_by_one(q, queue))
    return n / (time.perf_counter() - t0)


async def fanout_roundtrip(q: TaskQueue, parent: str, children: int, queue: str = QUEUE) -> float:
    """Fan out ``children`` no-op subtasks of a new parent, read them all, ack them in bulk,
    and stop when an ack reports the parent finished. Returns seconds."""
    subtasks = [NewTask("noop", payload(i)) for i in range(children)]
    t0 = time.perf_counter()
    await q.fanout(parent, subtasks, queue=queue)
    finished = False
    while not finished:
        tasks = await q.read_messages(children, queue=queue)
        assert tasks, "fanout children vanished"
        for outcome in await q.ack_many([(t.task_id, {"ok": True}) for t in tasks], queue=queue):
            assert not isinstance(outcome, Exception), outcome
            finished |= bool(outcome.fanout and outcome.fanout.finished_parent)
    return time.perf_counter() - t0
