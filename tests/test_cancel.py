"""Cancelling tasks (cancel.lua) and listing tasks by state (list_tasks.lua)."""

from __future__ import annotations

import anyio
import pytest

from mcp_queue_server import InvalidInput, InvalidState, NewTask, NotLeaseHolder, TaskNotFound, TaskQueue, TaskStatus
from tests.conftest import FakeClock, QueueFactory


async def test_a_queued_task_is_cancelled_at_once_and_never_delivered(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="a")
    after = await queue.last_event_id()

    got = await queue.cancel("a", "not needed")

    assert (got.status, got.changed, got.error) == ("cancelled", True, None)
    assert await queue.read_messages() == []
    info = await queue.get_task("a")
    assert (info.status, info.error) == (TaskStatus.CANCELLED, "not needed")
    assert info.finished_at is not None
    stats = await queue.get_queue_stats()
    assert (stats.available, stats.totals["cancelled"]) == (0, 1)
    [event] = await queue.read_events(after, 1)
    assert event.tasks == {"a": TaskStatus.CANCELLED}


async def test_a_delayed_task_leaves_the_delayed_set(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.enqueue("t", {}, task_id="a", delay_ms=1_000)

    assert (await queue.cancel("a")).status == "cancelled"

    clock.advance(2_000)
    assert await queue.read_messages() == []
    assert (await queue.get_queue_stats()).delayed == 0
    assert (await queue.get_task("a")).error == "cancelled"


async def test_cancelling_twice_changes_nothing(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="a")
    await queue.cancel("a", "first")

    again = await queue.cancel("a", "second")

    assert (again.status, again.changed) == ("cancelled", False)
    assert (await queue.get_task("a")).error == "first"
    assert (await queue.get_queue_stats()).totals["cancelled"] == 1


async def test_a_working_task_is_flagged_and_its_holder_learns_it_when_renewing(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="a")
    await queue.read_messages()
    assert (await queue.renew_lease("a")).cancel_requested is False

    got = await queue.cancel("a", "stop")

    assert (got.status, got.changed) == ("cancel_requested", True)
    assert (await queue.cancel("a")).changed is False
    assert (await queue.get_task("a")).status == TaskStatus.WORKING
    assert (await queue.renew_lease("a")).cancel_requested is True
    lease = await queue.checkpoint_lease("a", {"step": 1})
    assert lease is not None
    assert lease.cancel_requested


async def test_a_cancel_requested_task_that_fails_ends_cancelled_not_retried(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="a", max_attempts=5)
    await queue.read_messages()
    await queue.cancel("a", "stop")

    failed = await queue.fail("a", "interrupted")

    assert (failed.status, failed.retry_at) == (TaskStatus.CANCELLED, None)
    info = await queue.get_task("a")
    assert (info.status, info.error) == (TaskStatus.CANCELLED, "stop")
    assert await queue.read_messages() == []
    assert (await queue.get_queue_stats()).dead_letter == 0
    with pytest.raises(NotLeaseHolder, match="was cancelled"):
        await queue.ack("a")


async def test_a_cancel_requested_task_that_is_acked_completes(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="a")
    await queue.read_messages()
    await queue.cancel("a")

    assert (await queue.ack("a", {"done": True})).status == "acked"

    info = await queue.get_task("a")
    assert (info.status, info.result) == (TaskStatus.COMPLETED, {"done": True})


async def test_a_cancel_requested_task_ends_cancelled_when_released_or_its_lease_expires(
    make_queue: QueueFactory, clock: FakeClock
) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue_batch([NewTask("t", {}, task_id="a"), NewTask("t", {}, task_id="b")])
    await w1.read_messages(count=1, lease_ms=1_000)
    await w2.read_messages(count=1, lease_ms=60_000)
    await w1.cancel_many(["a", "b"])

    clock.advance(1_001)
    assert await w2.read_messages() == []  # a's lease expired: it ends cancelled, not redelivered
    assert await w2.release() == 1

    for task_id in ("a", "b"):
        assert (await w1.get_task(task_id)).status == TaskStatus.CANCELLED
    stats = await w1.get_queue_stats()
    assert (stats.in_flight, stats.available, stats.dead_letter) == (0, 0, 0)


async def test_recover_ends_a_cancel_requested_stuck_task_cancelled(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.enqueue("t", {}, task_id="a", max_attempts=1)
    await queue.read_messages(lease_ms=1_000)
    await queue.cancel("a")
    clock.advance(1_001)

    report = await queue.recover()

    assert (report.requeued, report.dead_lettered) == ([], [])
    assert (await queue.get_task("a")).status == TaskStatus.CANCELLED


async def test_cancelling_a_completed_or_failed_task_is_an_error_that_says_so(queue: TaskQueue) -> None:
    await queue.enqueue_batch([NewTask("t", {}, task_id="done"), NewTask("t", {}, task_id="dead")])
    await queue.read_messages(count=2)
    await queue.ack("done")
    await queue.fail("dead", "boom", retry=False)

    with pytest.raises(InvalidState, match="already completed"):
        await queue.cancel("done")
    with pytest.raises(InvalidState, match="is failed"):
        await queue.cancel("dead")
    with pytest.raises(TaskNotFound):
        await queue.cancel("nope")
    got = await queue.cancel_many(["done", "dead", "nope"])
    assert [(g.status, g.changed, g.error is not None) for g in got] == [
        ("completed", False, True),
        ("failed", False, True),
        ("not_found", False, True),
    ]


async def test_a_waiting_parent_cancels_its_children_and_never_enqueues_its_continuation(
    make_queue: QueueFactory,
) -> None:
    w = await make_queue("w1")
    children = [NewTask("c", {}, task_id=f"c{i}") for i in range(3)]
    await w.fanout("p", children, on_complete=NewTask("next", {}, task_id="cont"))
    [c0] = await w.read_messages(count=1)
    await w.ack(c0.task_id)
    [working] = await w.read_messages(count=1)

    got = await w.cancel("p", "changed my mind")

    assert (got.status, got.changed) == ("cancelled", True)
    statuses = {t: (await w.get_task(t)).status for t in ("p", "c0", "c1", "c2")}
    assert statuses == {
        "p": TaskStatus.CANCELLED,
        "c0": TaskStatus.COMPLETED,
        working.task_id: TaskStatus.WORKING,
        "c2": TaskStatus.CANCELLED,
    }
    assert (await w.renew_lease(working.task_id)).cancel_requested
    await w.ack(working.task_id)  # the work was done: it completes, the parent stays cancelled
    assert (await w.get_task("p")).status == TaskStatus.CANCELLED
    with pytest.raises(TaskNotFound):
        await w.get_task("cont")
    assert await w.read_messages() == []


async def test_cancelling_a_child_fails_a_parent_that_fails_on_child_failure(queue: TaskQueue) -> None:
    await queue.fanout("p", [NewTask("c", {}, task_id="c1"), NewTask("c", {}, task_id="c2")])

    await queue.cancel("c1")

    info = await queue.get_task("p")
    assert (info.status, info.error) == (TaskStatus.FAILED, "child c1 was cancelled")


async def test_a_cancel_requested_parent_cannot_fan_out(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="p")
    await queue.read_messages()
    await queue.cancel("p")

    with pytest.raises(InvalidState, match="cancel_requested"):
        await queue.fanout("p", [NewTask("c", {})])


async def test_a_get_task_waiter_wakes_when_the_task_is_cancelled(make_queue: QueueFactory) -> None:
    q, other = await make_queue("w1", real_clock=True), await make_queue("w2", real_clock=True)
    await q.enqueue("t", {}, task_id="a")
    seen: list[TaskStatus] = []

    async def wait() -> None:
        seen.append((await q.get_task("a", wait_ms=10_000)).status)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()  # the waiter waits on the events stream
            await other.cancel("a")
    assert seen == [TaskStatus.CANCELLED]


# -- list_tasks ---------------------------------------------------------------------------


async def _pages(q: TaskQueue, state: str, count: int, task_type: str | None = None) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = await q.list_tasks(state, task_type, count, cursor)
        pages.append([t.task_id for t in page.tasks])
        cursor = page.next_cursor
        if cursor is None:
            return pages


async def test_queued_tasks_are_listed_in_pages_high_priority_first(queue: TaskQueue) -> None:
    await queue.enqueue_batch([NewTask("t", {}, task_id=f"q{i}", priority=10 if i >= 3 else 0) for i in range(5)])
    await queue.enqueue("other", {}, task_id="x")

    assert await _pages(queue, "queued", 2) == [["q3", "q4"], ["q0", "q1"], ["q2", "x"]]
    assert await _pages(queue, "queued", 10, "other") == [["x"]]
    [first] = (await queue.list_tasks("queued", count=1)).tasks
    assert (first.task_type, first.status, first.priority, first.attempt, first.holder) == (
        "t",
        TaskStatus.QUEUED,
        10,
        0,
        None,
    )


async def test_read_tasks_leave_the_queued_list_and_join_the_working_one(queue: TaskQueue) -> None:
    await queue.enqueue_batch([NewTask("t", {}, task_id=f"q{i}") for i in range(4)])
    await queue.read_messages(count=2, lease_ms=60_000)

    assert await _pages(queue, "queued", 10) == [["q2", "q3"]]
    page = await queue.list_tasks("working")
    assert [(t.task_id, t.holder) for t in page.tasks] == [("q0", "w1"), ("q1", "w1")]
    assert all(t.lease_ms_left is not None and 0 < t.lease_ms_left <= 60_000 for t in page.tasks)


async def test_delayed_cancelled_waiting_and_failed_tasks_are_listed(queue: TaskQueue) -> None:
    await queue.enqueue_batch([NewTask("t", {}, task_id=f"d{i}", delay_ms=5_000) for i in range(5)])
    await queue.fanout("p", [NewTask("c", {}, task_id="c1")])
    await queue.enqueue("t", {}, task_id="gone")
    await queue.cancel_many(["d0", "d1"])
    await queue.read_messages(count=2)
    await queue.fail("gone", "boom", retry=False)

    assert await _pages(queue, "delayed", 2) == [["d2", "d3"], ["d4"]]
    assert await _pages(queue, "cancelled", 1) == [["d0"], ["d1"]]
    assert await _pages(queue, "waiting_children", 5) == [["p"]]
    assert await _pages(queue, "failed", 5) == [["gone"]]
    await queue.ack("c1")
    assert await _pages(queue, "waiting_children", 5) == [[]]


async def test_a_type_filter_may_leave_a_page_empty_yet_with_a_next_one(queue: TaskQueue) -> None:
    await queue.enqueue_batch([NewTask("a", {}, task_id="a1"), NewTask("a", {}, task_id="a2")])
    await queue.enqueue("b", {}, task_id="b1")

    assert await _pages(queue, "queued", 2, "b") == [[], ["b1"]]


async def test_list_tasks_refuses_a_bad_state_or_a_cursor_of_another_state(queue: TaskQueue) -> None:
    await queue.enqueue_batch([NewTask("t", {}, task_id=f"q{i}") for i in range(3)])
    cursor = (await queue.list_tasks("queued", count=1)).next_cursor
    assert cursor is not None

    with pytest.raises(InvalidInput, match="state must be one of"):
        await queue.list_tasks("completed")
    with pytest.raises(InvalidInput, match="cursor"):
        await queue.list_tasks("delayed", cursor=cursor)
    with pytest.raises(InvalidInput, match="cursor"):
        await queue.list_tasks("queued", cursor="queued:nope:1-0")
