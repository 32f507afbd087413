"""Deadlines (deadline_ms): a late task is shown, never dropped; a finished one is no longer watched."""

from __future__ import annotations

import pytest
from mcp import Client

from mcp_queue_server import InvalidInput, NewTask, Settings, TaskQueue, TaskStatus
from mcp_queue_server.cli.common import late_text
from mcp_queue_server.observe.metrics import Metrics, QueueView
from mcp_queue_server.observe.status_page import status_page
from mcp_queue_server.server.app import build_server
from tests.conftest import FakeClock, QueueFactory
from tests.test_cli import cli
from tests.test_metrics import parse, sample


async def test_a_task_past_its_deadline_is_overdue_and_still_delivered(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.enqueue("t", {}, task_id="a", deadline_ms=60_000)
    info = await queue.get_task("a")
    assert info.deadline_at is not None
    assert info.overdue is False
    assert (await queue.get_queue_stats()).past_deadline == 0

    clock.advance(90_000)

    info = await queue.get_task("a")
    assert info.overdue is True
    stats = await queue.get_queue_stats()
    assert stats.past_deadline == 1
    assert stats.most_past_deadline_ms is not None
    assert 30_000 <= stats.most_past_deadline_ms < 40_000  # real time runs underneath the offset
    [task] = await queue.read_messages()
    assert task.task_id == "a"


async def test_a_task_finished_late_is_no_longer_overdue_but_keeps_its_deadline(
    queue: TaskQueue, clock: FakeClock
) -> None:
    await queue.enqueue("t", {}, task_id="a", deadline_ms=1_000)
    await queue.read_messages()
    clock.advance(5_000)
    assert (await queue.get_queue_stats()).past_deadline == 1

    await queue.acknowledge("a", {"ok": 1})

    info = await queue.get_task("a")
    assert (info.status, info.overdue, info.deadline_at is not None) == (TaskStatus.COMPLETED, False, True)
    stats = await queue.get_queue_stats()
    assert (stats.past_deadline, stats.most_past_deadline_ms) == (0, None)


async def test_dead_lettered_and_cancelled_tasks_leave_the_deadlines_and_a_replay_brings_one_back(
    queue: TaskQueue, clock: FakeClock
) -> None:
    await queue.enqueue_batch([NewTask("t", {}, task_id=i, deadline_ms=1_000) for i in ("dead", "gone", "kept")])
    [*_] = await queue.read_messages(count=3)
    await queue.fail("dead", "boom", retry=False)
    await queue.cancel("gone")
    await queue.fail("gone", "stopped")  # a working task ends cancelled when its holder gives it up
    clock.advance(5_000)

    assert (await queue.get_queue_stats()).past_deadline == 1  # only "kept"

    await queue.replay_dlq(["dead"])
    assert (await queue.get_queue_stats()).past_deadline == 2
    assert (await queue.get_task("dead")).overdue is True


async def test_fanout_subtasks_carry_their_own_deadlines(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.fanout("p", [NewTask("c", {}, task_id="fast", deadline_ms=1_000), NewTask("c", {}, task_id="slow")])
    clock.advance(5_000)

    assert (await queue.get_task("fast")).overdue is True
    assert (await queue.get_task("slow")).deadline_at is None
    tasks = await queue.read_messages(count=2)
    await queue.ack_many([t.task_id for t in tasks])
    assert (await queue.get_queue_stats()).past_deadline == 0


async def test_a_fanout_parent_with_a_deadline_leaves_the_deadlines_when_its_children_finish(
    queue: TaskQueue, clock: FakeClock
) -> None:
    await queue.enqueue("job", {}, task_id="p", deadline_ms=1_000)
    await queue.read_messages()
    await queue.fanout("p", [NewTask("c", {}, task_id="c1")])
    clock.advance(5_000)
    assert (await queue.get_task("p")).overdue is True

    await queue.read_messages()
    await queue.acknowledge("c1")

    assert (await queue.get_task("p")).status == TaskStatus.COMPLETED
    assert (await queue.get_queue_stats()).past_deadline == 0


@pytest.mark.parametrize("bad", [0, -5, 400 * 86_400_000])
async def test_a_deadline_out_of_bounds_is_refused_with_its_limit(queue: TaskQueue, bad: int) -> None:
    with pytest.raises(InvalidInput, match="deadline_ms"):
        await queue.enqueue("t", {}, deadline_ms=bad)
    assert (await queue.get_queue_stats()).totals.get("enqueued", 0) == 0


async def test_on_complete_takes_no_deadline(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    with pytest.raises(InvalidInput, match="on_complete takes no deadline_ms"):
        await queue.fanout("p", [NewTask("c", {})], on_complete=NewTask("done", {}, deadline_ms=5))


async def test_metrics_status_and_top_show_tasks_past_their_deadline(
    settings: Settings, queue: TaskQueue, clock: FakeClock
) -> None:
    clock.advance(-3_600_000)  # enqueued an hour in the past by the store's clock: the deadline has passed
    await queue.enqueue_batch([NewTask("t", {}, task_id=f"t{i}", deadline_ms=1_000) for i in range(2)])
    await queue.enqueue("t", {}, task_id="open-ended")
    metrics = Metrics(settings)

    scraped = parse((await metrics.render()).decode())
    stats = await TaskQueue(settings).connect()  # the real clock, like an operator's view
    try:
        row = await stats.get_queue_stats()
    finally:
        await stats.disconnect(release=False)
    await metrics.aclose()

    assert sample(scraped, "mcp_queue_past_deadline_tasks", queue="default") == 2
    assert 3_590 < sample(scraped, "mcp_queue_most_past_deadline_seconds", queue="default") < 3_700
    page = status_page([QueueView(row, [], [])], True, "mcpq")
    assert "past deadline" in page
    assert "2 past their deadline" in page
    assert late_text(row).startswith("2 (")


async def test_the_tools_take_deadline_ms_and_get_task_says_overdue(settings: Settings, clock: FakeClock) -> None:
    clock.advance(-3_600_000)
    late = await TaskQueue(settings, clock=clock).connect()
    await late.enqueue("t", {}, task_id="old", deadline_ms=1_000)
    await late.disconnect(release=False)
    async with Client(build_server(settings)) as client:
        fresh = await client.call_tool("enqueue_task", {"task_type": "t", "payload": {}, "deadline_ms": 60_000})
        batch = await client.call_tool(
            "enqueue_batch", {"tasks": [{"task_type": "t", "payload": {}, "task_id": "b", "deadline_ms": 5_000}]}
        )
        old = await client.call_tool("get_task", {"task_id": "old"})
        new = await client.call_tool("get_task", {"task_id": fresh.structured_content["task_id"]})  # type: ignore[index]
        stats = await client.call_tool("queue_stats", {})
        bad = await client.call_tool("enqueue_task", {"task_type": "t", "payload": {}, "deadline_ms": 0})

    assert not batch.is_error
    assert old.structured_content is not None
    assert new.structured_content is not None
    assert old.structured_content["overdue"] is True
    assert (new.structured_content["overdue"], new.structured_content["deadline_at"] is not None) == (False, True)
    assert stats.structured_content is not None
    assert stats.structured_content["past_deadline"] == 1
    assert bad.is_error
    assert "deadline_ms" in bad.content[0].text


async def test_the_cli_enqueues_with_a_deadline(settings: Settings, queue: TaskQueue) -> None:
    done = await cli(settings, "enqueue", "t", "--task-id", "d1", "--deadline-ms", "60000")
    piped = await cli(settings, "enqueue", stdin='{"task_type": "t", "task_id": "d2", "deadline_ms": 5000}')

    assert (done.code, piped.code) == (0, 0), done.err + piped.err
    assert (await queue.get_task("d1")).deadline_at is not None
    assert (await queue.get_task("d2")).deadline_at is not None
