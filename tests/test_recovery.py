"""Recovery, statistics, graceful shutdown."""

from __future__ import annotations

import anyio

from mcp_queue_server import NewTask, TaskQueue, TaskStatus
from tests.conftest import FakeClock, QueueFactory


async def test_recover_requeues_expired_leases_and_dead_letters_exhausted_tasks(
    make_queue: QueueFactory, clock: FakeClock
) -> None:
    w1 = await make_queue("w1", max_attempts=2)
    admin = await make_queue("admin", max_attempts=2)
    await w1.enqueue_batch([NewTask("t", {}, task_id="young"), NewTask("t", {}, task_id="old")])
    await w1.read_messages(count=1, lease_ms=1_000)  # "young": attempt 1
    clock.advance(1_001)
    await w1.read_messages(count=2, lease_ms=1_000)  # "young" again (attempt 2) and "old" (attempt 1)
    clock.advance(1_001)
    report = await admin.recover()
    assert (report.requeued, report.dead_lettered) == (["old"], ["young"])
    assert (await admin.get_task("old")).status == TaskStatus.QUEUED
    assert (await admin.get_task("young")).status == TaskStatus.FAILED
    assert await admin.recover() == type(report)([], [])


async def test_recover_leaves_live_leases_alone(make_queue: QueueFactory, clock: FakeClock) -> None:
    w1 = await make_queue("w1")
    await w1.enqueue("t", {}, task_id="busy")
    await w1.read_messages(lease_ms=10_000)
    clock.advance(5_000)
    report = await w1.recover()
    assert report.requeued == report.dead_lettered == []


async def test_recover_with_min_idle_takes_tasks_untouched_that_long(make_queue: QueueFactory) -> None:
    w1 = await make_queue("w1", real_clock=True)
    await w1.enqueue("t", {}, task_id="quiet")
    await w1.read_messages(lease_ms=600_000)
    report = await w1.recover(min_idle_ms=0)
    assert report.requeued == ["quiet"]


async def test_statistics_describe_the_queue(make_queue: QueueFactory, clock: FakeClock) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue_batch([NewTask("t", {}, priority=p) for p in (0, 0, 0, 10, 10)])
    await w1.enqueue("t", {}, delay_ms=60_000)
    await w1.read_messages(count=1)
    await w2.read_messages(count=2, prefer_high_priority=False)
    [t] = await w2.read_messages(count=1, prefer_high_priority=False)
    await w2.fail(t.task_id, "x", retry=False)
    clock.advance(50)
    stats = await w1.get_queue_stats()
    assert (stats.high.length, stats.high.pending, stats.high.available) == (2, 1, 1)
    assert (stats.low.length, stats.low.pending, stats.low.available) == (2, 2, 0)
    assert (stats.in_flight, stats.available, stats.delayed, stats.dead_letter) == (3, 1, 1, 1)
    assert {c.name: c.pending for c in stats.consumers} == {"w1": 1, "w2": 2}
    assert stats.oldest_waiting_age_ms is not None
    assert stats.totals == {"enqueued": 6, "dead_lettered": 1}


async def test_statistics_of_an_unused_queue_are_zero(queue: TaskQueue) -> None:
    stats = await queue.get_queue_stats("never-used")
    assert (stats.available, stats.in_flight, stats.dead_letter, stats.consumers) == (0, 0, 0, [])
    assert stats.oldest_waiting_age_ms is None


async def test_closing_a_consumer_hands_its_tasks_back_at_once(make_queue: QueueFactory) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue_batch([NewTask("t", {}, task_id=f"g{i}") for i in range(4)])
    await w1.read_messages(count=3, lease_ms=600_000)
    await w1.acknowledge("g0")
    await w1.disconnect()
    tasks = await w2.read_messages(count=10)
    assert sorted(t.task_id for t in tasks) == ["g1", "g2", "g3"]
    assert all(t.attempt == 1 for t in tasks)
    assert [c.name for c in (await w2.get_queue_stats()).consumers] == ["w2"]


async def test_release_handles_more_tasks_than_one_batch(make_queue: QueueFactory) -> None:
    w1 = await make_queue("w1", pending_batch_size=7, max_read_count=100)
    w2 = await make_queue("w2")
    await w1.enqueue_batch([NewTask("t", {}) for _ in range(30)])
    await w1.read_messages(count=30)
    assert await w1.release() == 30
    with anyio.fail_after(5):
        assert len(await w2.read_messages(count=100)) == 30
