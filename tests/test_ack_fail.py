"""Ack, fail, retries with backoff, the dead-letter queue: inspect, replay, purge."""

from __future__ import annotations

import pytest

from mcp_queue_server import InvalidInput, InvalidState, NewTask, TaskNotFound, TaskQueue, TaskStatus
from mcp_queue_server.errors import NotLeaseHolder
from tests.conftest import FakeClock, QueueFactory


async def test_ack_stores_the_result_and_removes_the_stream_entry(queue: TaskQueue) -> None:
    await queue.enqueue_batch([NewTask("t", {}, task_id=f"k{i}") for i in range(20)])
    for task in await queue.read_messages(count=20):
        await queue.acknowledge(task.task_id, {"out": task.task_id})
    k = queue.keys("default")
    assert await queue.redis.xlen(k.low) == 0
    assert await queue.redis.xpending(k.low, queue.settings.group) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }
    info = await queue.get_task("k7")
    assert (info.status, info.result) == (TaskStatus.COMPLETED, {"out": "k7"})


async def _entries(q: TaskQueue) -> dict[str, str]:
    """The low stream's entries: entry id -> task id."""
    rows = await q.redis.xrange(q.keys("default").low)
    return {e.decode(): f[b"id"].decode() for e, f in rows}


async def test_a_bulk_ack_takes_only_its_own_entries_out_while_others_hold_older_ones(
    make_queue: QueueFactory,
) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue_batch([NewTask("t", {}, task_id=f"o{i}") for i in range(12)])
    older = await w1.read_messages(count=4)  # o0..o3, held by w1 while w2 acks newer ones
    newer = await w2.read_messages(count=4)  # o4..o7; o8..o11 never read
    await w2.ack_many([t.task_id for t in newer])
    assert set((await _entries(w1)).values()) == {"o0", "o1", "o2", "o3", "o8", "o9", "o10", "o11"}
    # Now the oldest pending ones, given out of order: all four leave, the unread stay.
    await w1.ack_many([t.task_id for t in reversed(older)])
    assert set((await _entries(w1)).values()) == {"o8", "o9", "o10", "o11"}
    assert [t.task_id for t in await w2.read_messages(count=10)] == ["o8", "o9", "o10", "o11"]


async def test_a_bulk_ack_keeps_a_held_back_task_s_older_entry(queue: TaskQueue) -> None:
    await queue.set_limit("k", max_working=1)
    await queue.enqueue("t", {}, task_id="first", limit_key="k")
    await queue.enqueue("t", {}, task_id="parked", limit_key="k")
    await queue.enqueue_batch([NewTask("t", {}, task_id=f"p{i}") for i in range(3)])
    got = await queue.read_messages(count=10)
    assert [t.task_id for t in got] == ["first", "p0", "p1", "p2"]  # 'parked' waits for k's slot
    await queue.ack_many(["p0", "p1", "p2"])
    assert set((await _entries(queue)).values()) == {"first", "parked"}
    await queue.acknowledge("first")
    [task] = await queue.read_messages(count=10)
    assert task.task_id == "parked"
    await queue.acknowledge("parked")
    assert await _entries(queue) == {}


async def test_a_completed_tasks_record_expires_after_the_result_ttl(make_queue: QueueFactory) -> None:
    q = await make_queue(result_ttl_s=120)
    await q.enqueue("t", {}, task_id="r")
    await q.read_messages()
    await q.acknowledge("r", [1, 2, 3])
    assert 0 < await q.redis.ttl(q.keys("default").task("r")) <= 120


async def test_a_second_ack_reports_the_stored_outcome(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="twice")
    await queue.read_messages()
    assert (await queue.acknowledge("twice", "first")).status == "acked"
    assert (await queue.acknowledge("twice", "second")).status == "already_completed"
    assert (await queue.get_task("twice")).result == "first"
    assert (await queue.get_queue_stats()).totals["completed"] == 1


async def test_bulk_ack_is_one_round_trip_with_an_outcome_per_task(make_queue: QueueFactory) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue_batch([NewTask("t", {}, task_id=f"b{i}") for i in range(3)])
    await w1.read_messages(count=2)
    await w2.read_messages(count=1)
    outcomes = await w1.ack_many(["b0", ("b1", {"r": 1}), "b2", "nope"])
    assert [getattr(o, "status", type(o).__name__) for o in outcomes] == [
        "acked",
        "acked",
        "NotLeaseHolder",
        "TaskNotFound",
    ]
    assert (await w1.get_task("b2")).status == TaskStatus.WORKING


async def test_a_failed_task_is_retried_with_exponential_backoff(make_queue: QueueFactory, clock: FakeClock) -> None:
    q = await make_queue(retry_backoff_ms=10_000, max_attempts=4)
    await q.enqueue("t", {}, task_id="flaky")
    for attempt, delay in ((1, 10_000), (2, 20_000), (3, 40_000)):
        [task] = await q.read_messages()
        assert task.attempt == attempt
        before = await q.server_now()
        result = await q.fail("flaky", f"error {attempt}")
        after = await q.server_now()
        assert result.status == TaskStatus.DELAYED
        assert result.retry_at is not None
        assert before + delay <= result.retry_at <= after + delay  # due `delay` after the failure
        clock.advance(delay - 5_000)  # a margin: real time runs on underneath the test clock
        assert await q.read_messages() == []
        clock.advance(5_000)
    [task] = await q.read_messages()
    assert task.attempt == 4
    assert (await q.get_task("flaky")).error == "error 3"


async def test_a_failure_without_retry_dead_letters_at_once(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="fatal")
    await queue.read_messages()
    result = await queue.fail("fatal", "unrecoverable", retry=False)
    assert (result.status, result.attempt) == (TaskStatus.FAILED, 1)
    assert (await queue.get_queue_stats()).dead_letter == 1


async def test_a_poison_task_is_dead_lettered_after_exactly_max_attempts_without_dragging_others(
    queue: TaskQueue,
) -> None:
    await queue.enqueue("t", {"poison": True}, task_id="poison")
    await queue.enqueue_batch([NewTask("t", {}, task_id=f"ok{i}") for i in range(5)])
    deliveries = 0
    while tasks := await queue.read_messages(count=2):
        for task in tasks:
            if task.payload.get("poison"):
                deliveries += 1
                await queue.fail(task.task_id, "cannot parse")
            else:
                await queue.acknowledge(task.task_id)
    assert deliveries == queue.settings.max_attempts == 3
    stats = await queue.get_queue_stats()
    assert (stats.dead_letter, stats.totals["completed"], stats.totals["dead_lettered"]) == (1, 5, 1)
    [dead] = (await queue.inspect_dlq()).tasks
    assert (dead.task_id, dead.attempt, dead.error) == ("poison", 3, "cannot parse (attempt 3 of 3)")
    assert (dead.payload, dead.source_stream, dead.task_type) == ({"poison": True}, "low", "t")


async def _dead(queue: TaskQueue, n: int) -> list[str]:
    ids = [f"d{i}" for i in range(n)]
    await queue.enqueue_batch([NewTask("t", {"i": i}, task_id=t) for i, t in enumerate(ids)])
    for task in await queue.read_messages(count=n):
        await queue.fail(task.task_id, f"bad {task.task_id}", retry=False)
    return ids


async def test_the_dead_letter_queue_pages_newest_or_oldest_first(queue: TaskQueue) -> None:
    ids = await _dead(queue, 5)
    seen, cursor = [], None
    while True:
        page = await queue.inspect_dlq(count=2, cursor=cursor)
        seen += [t.task_id for t in page.tasks]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids[::-1]
    oldest = await queue.inspect_dlq(count=3, newest_first=False)
    assert [t.task_id for t in oldest.tasks] == ids[:3]


async def test_replay_resets_attempts_and_counts_replays(queue: TaskQueue) -> None:
    await _dead(queue, 3)
    assert await queue.replay_dlq(["d1"]) == ["d1"]
    [task] = await queue.read_messages()
    assert (task.task_id, task.attempt) == ("d1", 1)
    info = await queue.get_task("d1")
    assert (info.replays, info.status) == (1, TaskStatus.WORKING)
    assert (await queue.get_queue_stats()).dead_letter == 2
    assert sorted(await queue.replay_dlq()) == ["d0", "d2"]
    assert (await queue.get_queue_stats()).dead_letter == 0


async def test_replaying_a_task_that_is_not_dead_is_refused_and_changes_nothing(queue: TaskQueue) -> None:
    await _dead(queue, 1)
    await queue.enqueue("t", {}, task_id="alive")
    with pytest.raises(InvalidState, match="alive is queued"):
        await queue.replay_dlq(["d0", "alive"])
    with pytest.raises(TaskNotFound):
        await queue.replay_dlq(["d0", "ghost"])
    assert (await queue.get_queue_stats()).dead_letter == 1


async def test_purge_deletes_dead_tasks_for_good(queue: TaskQueue) -> None:
    await _dead(queue, 4)
    assert await queue.purge_dlq(["d0"]) == 1
    with pytest.raises(TaskNotFound):
        await queue.get_task("d0")
    assert await queue.purge_dlq() == 3
    assert (await queue.inspect_dlq()).tasks == []


async def test_a_cursor_that_was_not_returned_by_inspect_is_refused(queue: TaskQueue) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        await queue.inspect_dlq(cursor="+ or *")


async def test_fail_by_a_non_holder_is_rejected(make_queue: QueueFactory) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue("t", {}, task_id="x")
    await w1.read_messages()
    with pytest.raises(NotLeaseHolder):
        await w2.fail("x", "not mine")
    assert (await w1.get_task("x")).error is None
