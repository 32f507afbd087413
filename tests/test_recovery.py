"""Recovery, statistics, graceful shutdown."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio

from mcp_queue_server import InvalidInput, NewTask, Settings, TaskQueue, TaskStatus
from mcp_queue_server.core.keys import QueueKeys
from mcp_queue_server.limits import MIN_RECOVER_IDLE_MS
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


async def _make_idle(queue: TaskQueue, task_id: str, idle_ms: int) -> None:
    """Set the idle time Redis keeps for a leased task's stream entry (XCLAIM ... IDLE, to its
    own holder, JUSTID: no delivery counted), as if nobody had touched it for ``idle_ms``."""
    k = queue.keys("default")
    stream, entry, holder = await queue.redis.hmget(k.task(task_id), "stream", "entry", "consumer")
    assert entry is not None
    assert holder is not None
    key = k.high if stream == b"high" else k.low
    await queue.redis.xclaim(key, queue.settings.group, holder, 0, [entry], idle=idle_ms, justid=True)


async def age_pending_entries(settings: Settings, idle_ms: int, queue: str = "default") -> None:
    """Make every leased task of ``queue`` look untouched for ``idle_ms`` (see :func:`_make_idle`),
    for tests that reach the queue only through an MCP client."""
    k = QueueKeys.for_queue(settings.key_prefix, queue)
    async with redis.asyncio.Redis.from_url(settings.redis_url_value() or "") as r:
        for stream in k.streams:
            for p in await r.xpending_range(stream, settings.group, "-", "+", 1000):
                holder, entry = p["consumer"], p["message_id"]
                assert isinstance(holder, bytes)
                assert isinstance(entry, bytes)
                await r.xclaim(stream, settings.group, holder, 0, [entry], idle=idle_ms, justid=True)


async def test_recover_with_min_idle_takes_tasks_untouched_that_long(make_queue: QueueFactory) -> None:
    w1 = await make_queue("w1", real_clock=True)
    await w1.enqueue_batch([NewTask("t", {}, task_id="quiet"), NewTask("t", {}, task_id="busy")])
    await w1.read_messages(count=2, lease_ms=600_000)
    await _make_idle(w1, "quiet", 5_000)
    report = await w1.recover(min_idle_ms=2_000)
    assert report.requeued == ["quiet"]


@pytest.mark.parametrize("too_short", [0, 1, MIN_RECOVER_IDLE_MS - 1])
async def test_recover_by_idle_time_refuses_less_than_a_second(queue: TaskQueue, too_short: int) -> None:
    with pytest.raises(InvalidInput, match="min_idle_ms"):
        await queue.recover(min_idle_ms=too_short)


async def test_a_task_taken_back_for_idle_time_while_its_lease_ran_says_so_not_lease_expired(
    make_queue: QueueFactory,
) -> None:
    w1 = await make_queue("w1", real_clock=True)
    await w1.enqueue("t", {}, task_id="slow", max_attempts=1)
    [task] = await w1.read_messages(lease_ms=600_000)
    await _make_idle(w1, "slow", 1_500)
    report = await w1.recover(min_idle_ms=MIN_RECOVER_IDLE_MS)
    assert report.dead_lettered == ["slow"]
    error = (await w1.get_task("slow")).error or ""
    assert "lease expired" not in error
    assert f"while its lease ran to {task.lease_expires_at}" in error
    assert error.startswith("stuck on attempt 1 of 1 (idle for 1.5 s")


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
