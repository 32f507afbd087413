"""Reading: counts, blocking, priority preference, task records, delayed promotion."""

from __future__ import annotations

import time

import anyio
import pytest

from mcp_queue_server import InvalidInput, NewTask, TaskQueue, TaskStatus
from tests.conftest import FakeClock, QueueFactory


async def test_a_read_returns_the_full_task_record_on_first_delivery(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.enqueue("summarise", {"doc": "a"}, priority=3, task_id="r1")
    before = await queue.server_now()
    [task] = await queue.read_messages(lease_ms=30_000)
    after = await queue.server_now()
    assert task.task_id == "r1"
    assert task.task_type == "summarise"
    assert task.priority == 3
    assert task.payload == {"doc": "a"}
    assert task.attempt == 1
    assert before + 30_000 <= task.lease_expires_at <= after + 30_000  # leased on the queue's clock
    assert (await queue.get_task("r1")).lease_expires_at == task.lease_expires_at
    assert task.checkpoint is None
    assert task.parent_task_id is None


async def test_count_limits_how_many_tasks_one_read_leases(queue: TaskQueue) -> None:
    await queue.enqueue_batch([NewTask("t", {}) for _ in range(5)])
    assert len(await queue.read_messages(count=2)) == 2
    assert len(await queue.read_messages(count=10)) == 3


@pytest.mark.parametrize("count", [0, -1, 101, True, 2.0])
async def test_a_count_outside_one_to_the_maximum_is_refused(queue: TaskQueue, count: object) -> None:
    await queue.enqueue("t", {})
    with pytest.raises(InvalidInput, match="count"):
        await queue.read_messages(count=count)  # type: ignore[arg-type]
    assert (await queue.get_queue_stats()).in_flight == 0


@pytest.mark.parametrize("block_ms", [-1, 20_001])
async def test_a_block_outside_the_bounds_is_refused(queue: TaskQueue, block_ms: int) -> None:
    with pytest.raises(InvalidInput, match="block_ms"):
        await queue.read_messages(block_ms=block_ms)


async def test_high_priority_is_read_first_unless_the_reader_prefers_low(make_queue: QueueFactory) -> None:
    q = await make_queue()
    await q.enqueue("t", {}, priority=0, task_id="low")
    await q.enqueue("t", {}, priority=10, task_id="high")
    [first] = await q.read_messages(count=1)
    assert first.task_id == "high"
    await q.enqueue("t", {}, priority=10, task_id="high2")
    [second] = await q.read_messages(count=1, prefer_high_priority=False)
    assert second.task_id == "low"


async def test_a_read_without_block_returns_at_once_when_empty(queue: TaskQueue) -> None:
    with anyio.fail_after(2):
        assert await queue.read_messages(block_ms=0) == []


async def test_a_blocking_read_wakes_when_a_task_arrives(make_queue: QueueFactory) -> None:
    reader = await make_queue("reader", real_clock=True)
    producer = await make_queue("producer", real_clock=True)
    got: list[str] = []

    async def read() -> None:
        tasks = await reader.read_messages(block_ms=10_000)
        got.extend(t.task_id for t in tasks)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await _wait_until_blocked(reader)
            await producer.enqueue("t", {}, task_id="wake")
    assert got == ["wake"]


async def test_a_blocking_read_gives_up_after_block_ms(make_queue: QueueFactory) -> None:
    reader = await make_queue("reader", real_clock=True)
    with anyio.fail_after(5):
        started = anyio.current_time()
        assert await reader.read_messages(block_ms=200) == []
        assert anyio.current_time() - started >= 0.19


async def test_a_blocking_read_wakes_for_a_delayed_task_that_becomes_due(make_queue: QueueFactory) -> None:
    q = await make_queue("reader", real_clock=True)
    await q.enqueue("t", {}, task_id="soon", delay_ms=150)
    with anyio.fail_after(5):
        [task] = await q.read_messages(block_ms=5_000)
    assert task.task_id == "soon"


async def test_a_cancelled_blocking_read_leaves_no_task_stranded(make_queue: QueueFactory) -> None:
    reader = await make_queue("reader", real_clock=True)
    other = await make_queue("other", real_clock=True)
    with anyio.move_on_after(0.2):
        await reader.read_messages(block_ms=5_000)
    await other.enqueue("t", {}, task_id="after-cancel")
    [task] = await other.read_messages()
    assert task.task_id == "after-cancel"


async def test_tasks_leased_by_a_read_that_is_cancelled_go_back_at_once(make_queue: QueueFactory) -> None:
    reader = await make_queue("reader")
    other = await make_queue("other")
    await reader.enqueue_batch([NewTask("t", {}, task_id=f"c{i}") for i in range(3)])
    with anyio.CancelScope() as scope:
        scope.cancel()
        await reader.read_messages(count=3)
    tasks = await other.read_messages(count=3)
    assert sorted(t.task_id for t in tasks) == ["c0", "c1", "c2"]
    assert [t.attempt for t in tasks] == [1, 1, 1]


async def test_due_delayed_tasks_are_promoted_by_a_read(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.enqueue("t", {}, task_id="d", delay_ms=1_000)
    assert (await queue.get_task("d")).status == TaskStatus.DELAYED
    clock.advance(1_000)
    [task] = await queue.read_messages()
    assert task.task_id == "d"
    assert (await queue.get_task("d")).status == TaskStatus.WORKING


async def test_queues_are_independent(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="a", queue="alpha")
    await queue.enqueue("t", {}, task_id="b", queue="beta")
    [task] = await queue.read_messages(count=10, queue="beta")
    assert task.task_id == "b"


async def _wait_until_blocked(reader: TaskQueue) -> None:
    """Wait until the reader's blocking XREAD is parked in Redis (CLIENT LIST shows cmd=xread)."""
    while True:
        clients = await reader.redis.client_list()
        if any(c.get("cmd") == "xread" for c in clients):
            return
        await anyio.sleep(0.005)


async def test_a_task_from_a_blocking_read_is_leased_from_its_delivery_not_from_the_start_of_the_wait(
    make_queue: QueueFactory,
) -> None:
    reader = await make_queue("reader", real_clock=True)
    producer = await make_queue("producer", real_clock=True)
    got: list[int] = []

    async def read() -> None:
        got.extend(t.lease_expires_at for t in await reader.read_messages(block_ms=10_000, lease_ms=1_000))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await _wait_until_blocked(reader)
            await anyio.sleep(0.3)  # not a synchronisation: the wait whose length must not shorten the lease
            enqueued_ms = time.time_ns() // 1_000_000
            await producer.enqueue("t", {}, task_id="late")
    [lease_expires_at] = got
    assert lease_expires_at >= enqueued_ms + 1_000 - 5


async def test_a_blocking_read_unblocked_by_the_server_keeps_waiting_instead_of_failing(
    make_queue: QueueFactory,
) -> None:
    reader = await make_queue("reader", real_clock=True)
    producer = await make_queue("producer", real_clock=True)
    got: list[str] = []

    async def read() -> None:
        got.extend(t.task_id for t in await reader.read_messages(block_ms=10_000))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await _wait_until_blocked(reader)
            # What a failover does to a blocked client: its XREAD fails with UNBLOCKED.
            [blocked] = [c for c in await reader.redis.client_list() if c.get("cmd") == "xread"]
            await reader.redis.execute_command("CLIENT", "UNBLOCK", blocked["id"], "ERROR")
            await _wait_until_blocked(reader)
            await producer.enqueue("t", {}, task_id="after-unblock")
    assert got == ["after-unblock"]
