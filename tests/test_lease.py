"""Leases: per-task deadlines, extension, checkpoints renewing them, fencing of stale holders."""

from __future__ import annotations

import pytest

from mcp_queue_server import NewTask, NotLeaseHolder, TaskNotFound, TaskQueue, TaskStatus
from tests.conftest import FakeClock, QueueFactory


async def _expired_and_taken(make_queue: QueueFactory, clock: FakeClock) -> tuple[TaskQueue, TaskQueue]:
    """w1 reads task "job" with a 1 s lease; it expires; w2 takes it over."""
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue("t", {}, task_id="job")
    await w1.read_messages(lease_ms=1_000)
    clock.advance(1_001)
    [task] = await w2.read_messages()
    assert (task.task_id, task.attempt) == ("job", 2)
    return w1, w2


async def test_a_lease_is_not_taken_over_before_it_expires(make_queue: QueueFactory, clock: FakeClock) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue("t", {}, task_id="job")
    await w1.read_messages(lease_ms=60_000)
    clock.advance(50_000)  # a margin: real time runs on underneath the test clock
    assert await w2.read_messages() == []
    clock.advance(10_000)
    assert [t.task_id for t in await w2.read_messages()] == ["job"]


async def test_a_stale_holders_ack_is_rejected_and_changes_nothing(make_queue: QueueFactory, clock: FakeClock) -> None:
    w1, w2 = await _expired_and_taken(make_queue, clock)
    with pytest.raises(NotLeaseHolder, match=r"leased by another worker \(w2\)"):
        await w1.acknowledge("job", {"late": True})
    info = await w2.get_task("job")
    assert (info.status, info.lease_holder, info.result) == (TaskStatus.WORKING, "w2", None)
    assert (await w2.acknowledge("job", {"by": "w2"})).status == "acked"
    assert (await w2.get_task("job")).result == {"by": "w2"}


async def test_a_stale_holder_cannot_fail_extend_or_checkpoint(make_queue: QueueFactory, clock: FakeClock) -> None:
    w1, w2 = await _expired_and_taken(make_queue, clock)
    with pytest.raises(NotLeaseHolder):
        await w1.fail("job", "late failure")
    with pytest.raises(NotLeaseHolder):
        await w1.extend_lease("job", 60_000)
    with pytest.raises(NotLeaseHolder):
        await w1.checkpoint("job", {"step": 99})
    with pytest.raises(NotLeaseHolder):
        await w1.delete_checkpoint("job")
    info = await w2.get_task("job")
    assert (info.status, info.attempt, info.error, info.checkpoint) == (TaskStatus.WORKING, 2, None, None)


async def test_a_holder_may_still_ack_after_expiry_when_nobody_took_the_task(
    make_queue: QueueFactory, clock: FakeClock
) -> None:
    w1 = await make_queue("w1")
    await w1.enqueue("t", {}, task_id="job")
    await w1.read_messages(lease_ms=1_000)
    clock.advance(5_000)
    assert (await w1.acknowledge("job")).status == "acked"


async def test_acking_a_task_that_was_never_delivered_is_rejected(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="fresh")
    with pytest.raises(NotLeaseHolder, match="is queued"):
        await queue.acknowledge("fresh")
    assert (await queue.get_task("fresh")).status == TaskStatus.QUEUED


async def test_acking_an_unknown_task_says_so(queue: TaskQueue) -> None:
    with pytest.raises(TaskNotFound, match="ghost"):
        await queue.acknowledge("ghost")


async def test_extending_a_lease_moves_the_deadline(make_queue: QueueFactory, clock: FakeClock) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue("t", {}, task_id="long")
    await w1.read_messages(lease_ms=10_000)
    clock.advance(9_000)
    before = await w1.server_now()
    deadline = await w1.extend_lease("long", 60_000)
    assert before + 60_000 <= deadline <= await w1.server_now() + 60_000
    clock.advance(50_000)
    assert await w2.read_messages() == []
    assert (await w1.get_task("long")).lease_expires_at == deadline


async def test_saving_a_checkpoint_renews_the_holders_lease(make_queue: QueueFactory, clock: FakeClock) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue("t", {}, task_id="ck")
    await w1.read_messages(lease_ms=30_000)
    clock.advance(25_000)
    before = await w1.server_now()
    deadline = await w1.checkpoint("ck", {"step": 1})
    assert deadline is not None
    assert before + 30_000 <= deadline <= await w1.server_now() + 30_000
    clock.advance(25_000)
    assert await w2.read_messages() == []


async def test_a_redelivered_task_carries_its_last_checkpoint(make_queue: QueueFactory, clock: FakeClock) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue("t", {}, task_id="ck")
    await w1.read_messages(lease_ms=1_000)
    await w1.checkpoint("ck", {"step": 1})
    await w1.checkpoint("ck", {"step": 2, "partial": [1, 2]})
    clock.advance(1_001)
    [task] = await w2.read_messages()
    assert (task.attempt, task.checkpoint) == (2, {"step": 2, "partial": [1, 2]})
    assert await w2.get_checkpoint("ck") == {"step": 2, "partial": [1, 2]}


async def test_checkpoints_expire_after_their_ttl(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="ck")
    await queue.read_messages()
    await queue.checkpoint("ck", {"s": 1}, ttl_seconds=60)
    ttl = await queue.redis.ttl(queue.keys("default").checkpoint("ck"))
    assert 0 < ttl <= 60


async def test_a_checkpoint_can_be_deleted_by_its_holder(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="ck")
    await queue.read_messages()
    await queue.checkpoint("ck", {"s": 1})
    await queue.delete_checkpoint("ck")
    assert await queue.get_checkpoint("ck") is None


async def test_attempts_count_deliveries_of_each_task_only(make_queue: QueueFactory, clock: FakeClock) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue_batch([NewTask("t", {}, task_id=f"a{i}") for i in range(3)])
    await w1.read_messages(count=1, lease_ms=1_000)
    clock.advance(1_001)
    tasks = await w2.read_messages(count=3)
    assert {t.task_id: t.attempt for t in tasks} == {"a0": 2, "a1": 1, "a2": 1}


async def test_a_task_whose_last_lease_expires_is_dead_lettered_by_the_next_read(
    make_queue: QueueFactory, clock: FakeClock
) -> None:
    w = await make_queue("w1", max_attempts=2)
    await w.enqueue("t", {}, task_id="crashy")
    for attempt in (1, 2):
        [task] = await w.read_messages(lease_ms=100)
        assert task.attempt == attempt
        clock.advance(101)
    assert await w.read_messages() == []
    info = await w.get_task("crashy")
    assert info.status == TaskStatus.FAILED
    assert info.error == "lease expired on attempt 2 of 2"


async def test_a_former_holder_cannot_overwrite_the_checkpoint_of_a_requeued_task(
    make_queue: QueueFactory, clock: FakeClock
) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue("t", {}, task_id="ck")
    await w1.read_messages(lease_ms=1_000)
    await w1.checkpoint("ck", {"by": "w1", "step": 1})
    clock.advance(1_001)
    assert (await w2.recover()).requeued == ["ck"]
    with pytest.raises(NotLeaseHolder, match="is queued"):
        await w1.checkpoint("ck", {"by": "stale w1"})
    [task] = await w2.read_messages()
    assert task.checkpoint == {"by": "w1", "step": 1}


async def test_a_checkpoint_may_seed_a_task_before_its_first_delivery(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="seeded", delay_ms=10)
    assert await queue.checkpoint("seeded", {"hint": "start at page 3"}) is None
    assert await queue.get_checkpoint("seeded") == {"hint": "start at page 3"}


async def test_expired_leases_on_both_streams_move_to_the_new_holder_in_one_read(
    make_queue: QueueFactory, clock: FakeClock
) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue_batch([NewTask("t", {"n": i}, priority=10 if i % 2 else 0, task_id=f"m{i}") for i in range(6)])
    assert len(await w1.read_messages(count=6, lease_ms=1_000)) == 6
    clock.advance(1_001)
    taken = await w2.read_messages(count=6)
    assert sorted((t.task_id, t.attempt, t.payload["n"]) for t in taken) == [(f"m{i}", 2, i) for i in range(6)]
    stats = await w2.get_queue_stats()
    assert {c.name: c.pending for c in stats.consumers} == {"w1": 0, "w2": 6}
    with pytest.raises(NotLeaseHolder):
        await w1.acknowledge("m1")
    outcomes = await w2.ack_many([t.task_id for t in taken])
    assert [getattr(o, "status", o) for o in outcomes] == ["acked"] * 6
    stats = await w2.get_queue_stats()
    assert (stats.in_flight, stats.available, stats.high.length, stats.low.length) == (0, 0, 0, 0)
