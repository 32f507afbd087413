"""Fanout: children enqueued atomically, results aggregated, the parent finished exactly once."""

from __future__ import annotations

import anyio
import pytest

from mcp_queue_server import ConflictingRequest, InvalidInput, NewTask, NotLeaseHolder, TaskQueue, TaskStatus
from mcp_queue_server.errors import InvalidState
from tests.conftest import QueueFactory

VARIANTS = ("conservative", "moderate", "aggressive")


def _children() -> list[NewTask]:
    return [NewTask("codegen", {"variant": v}, task_id=f"s-{v}") for v in VARIANTS]


async def test_fanout_enqueues_every_child_with_its_parent(queue: TaskQueue) -> None:
    result = await queue.fanout("strategy", _children(), {"concept": "x"})
    assert result.subtask_ids == [f"s-{v}" for v in VARIANTS]
    tasks = await queue.read_messages(count=10)
    assert {t.task_id: t.parent_task_id for t in tasks} == dict.fromkeys(result.subtask_ids, "strategy")
    parent = await queue.get_task("strategy")
    assert parent.status == TaskStatus.WAITING_CHILDREN
    assert parent.fanout is not None
    assert (parent.fanout.total, parent.fanout.completed, parent.fanout.done) == (3, 0, False)


async def test_repeating_a_fanout_returns_the_same_children_and_adds_none(queue: TaskQueue) -> None:
    first = await queue.fanout("p", [NewTask("c", {"i": i}) for i in range(3)])
    again = await queue.fanout("p", [NewTask("c", {"i": i}) for i in range(3)])
    assert (again.subtask_ids, again.duplicate) == (first.subtask_ids, True)
    assert (await queue.get_queue_stats()).available == 3


async def test_a_fanout_whose_child_id_is_taken_creates_nothing(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="s-moderate")
    with pytest.raises(ConflictingRequest, match="s-moderate"):
        await queue.fanout("p", _children())
    assert (await queue.get_queue_stats()).available == 1


async def test_the_last_child_ack_finishes_the_parent_with_all_results(queue: TaskQueue) -> None:
    await queue.fanout("p", _children())
    acks = [await queue.acknowledge(t.task_id, {"score": i}) for i, t in enumerate(await queue.read_messages(count=3))]
    progress = [a.fanout for a in acks]
    assert [(p.completed, p.done, p.finished_parent) for p in progress if p] == [
        (1, False, False),
        (2, False, False),
        (3, True, True),
    ]
    parent = await queue.get_task("p")
    assert parent.status == TaskStatus.COMPLETED
    assert parent.result == {"s-conservative": {"score": 0}, "s-moderate": {"score": 1}, "s-aggressive": {"score": 2}}


async def test_concurrent_duplicate_acks_of_the_last_child_finish_the_parent_once(make_queue: QueueFactory) -> None:
    holder = await make_queue("w1")
    await holder.fanout("p", [NewTask("c", {}, task_id="only")], on_complete=NewTask("merge", {}, task_id="merge"))
    await holder.read_messages()
    clients = [await make_queue("w1") for _ in range(8)]
    outcomes: list[bool] = []

    async def ack(q: TaskQueue) -> None:
        result = await q.acknowledge("only", {"v": 1})
        outcomes.append(bool(result.fanout and result.fanout.finished_parent))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for q in clients:
                tg.start_soon(ack, q)
    assert outcomes.count(True) == 1
    assert (await holder.get_queue_stats()).totals["enqueued"] == 2
    [cont] = await holder.read_messages(count=10)
    assert cont.task_id == "merge"


async def test_the_continuation_is_enqueued_once_with_the_results(queue: TaskQueue) -> None:
    await queue.fanout(
        "p",
        _children(),
        {"concept": "momentum"},
        on_complete=NewTask("tournament", {"rounds": 3}, priority=12, task_id="select"),
    )
    for task in await queue.read_messages(count=3):
        await queue.acknowledge(task.task_id, task.payload["variant"])
    [cont] = await queue.read_messages(count=10)
    assert (cont.task_id, cont.task_type, cont.priority) == ("select", "tournament", 12)
    assert cont.payload == {
        "rounds": 3,
        "fanout": {
            "parent_task_id": "p",
            "results": {f"s-{v}": v for v in VARIANTS},
            "parent_task_data": {"concept": "momentum"},
        },
    }


async def test_a_dead_lettered_child_fails_the_parent_by_default(queue: TaskQueue) -> None:
    await queue.fanout("p", _children(), on_complete=NewTask("merge", {}, task_id="merge"))
    tasks = await queue.read_messages(count=3)
    failed = await queue.fail(tasks[0].task_id, "sandbox crashed", retry=False)
    assert failed.fanout is not None
    assert (failed.fanout.failed, failed.fanout.done, failed.fanout.finished_parent) == (1, True, True)
    for task in tasks[1:]:
        await queue.acknowledge(task.task_id, "ok")
    parent = await queue.get_task("p")
    assert parent.status == TaskStatus.FAILED
    assert parent.fanout is not None
    assert parent.fanout.failed_child == tasks[0].task_id
    assert await queue.read_messages(count=10) == []


async def test_a_fanout_may_count_a_dead_child_as_done_with_an_error(queue: TaskQueue) -> None:
    await queue.fanout(
        "p", _children(), on_complete=NewTask("merge", {}, task_id="merge"), fail_parent_on_child_failure=False
    )
    tasks = await queue.read_messages(count=3)
    await queue.fail(tasks[0].task_id, "sandbox crashed", retry=False)
    for task in tasks[1:]:
        await queue.acknowledge(task.task_id, "ok")
    parent = await queue.get_task("p")
    assert parent.status == TaskStatus.COMPLETED
    assert parent.fanout is not None
    assert (parent.fanout.completed, parent.fanout.failed) == (2, 1)
    assert parent.fanout.results[tasks[0].task_id] == {"error": "sandbox crashed"}
    [cont] = await queue.read_messages(count=10)
    assert cont.payload["fanout"]["results"][tasks[0].task_id] == {"error": "sandbox crashed"}


async def test_a_held_task_can_fan_out_and_then_waits_for_its_children(make_queue: QueueFactory) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.enqueue("plan", {}, task_id="root")
    await w1.read_messages()
    with pytest.raises(NotLeaseHolder):
        await w2.fanout("root", [NewTask("c", {})])
    await w1.fanout("root", [NewTask("c", {}, task_id="leaf")])
    assert (await w1.get_task("root")).status == TaskStatus.WAITING_CHILDREN
    [leaf] = await w2.read_messages(count=5)
    assert leaf.task_id == "leaf"
    await w2.acknowledge("leaf", 42)
    assert (await w1.get_task("root")).result == {"leaf": 42}


async def test_a_queued_task_cannot_be_made_a_fanout_parent(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="queued")
    with pytest.raises(InvalidState):
        await queue.fanout("queued", [NewTask("c", {})])


async def test_fanout_complete_returns_the_aggregate_to_the_last_child(queue: TaskQueue) -> None:
    await queue.fanout("p", [NewTask("c", {}, task_id="a"), NewTask("c", {}, task_id="b")])
    await queue.read_messages(count=2)
    assert await queue.fanout_complete("p", "a", 1) is None
    assert await queue.fanout_complete("p", "b", 2) == {"a": 1, "b": 2}


async def test_a_finished_fanouts_records_expire_like_a_completed_task(make_queue: QueueFactory) -> None:
    q = await make_queue(result_ttl_s=300)
    await q.fanout("p", [NewTask("c", {}, task_id="a")])
    await q.read_messages()
    await q.acknowledge("a", 1)
    k = q.keys("default")
    for key in (k.task("p"), k.fanout("p"), k.fanout_results("p"), k.task("a")):
        assert 0 < await q.redis.ttl(key) <= 300, key


async def test_subtasks_keep_their_own_attempt_budget_and_the_continuation_its_id(queue: TaskQueue) -> None:
    made = await queue.fanout(
        "p",
        [NewTask("c", {}, task_id="once", max_attempts=1), NewTask("c", {}, task_id="default")],
        on_complete=NewTask("merge", {}, task_id="merge", max_attempts=5),
        fail_parent_on_child_failure=False,
    )
    assert made.continuation_task_id == "merge"
    assert (await queue.fanout("p", [NewTask("c", {})])).continuation_task_id == "merge"
    assert ((await queue.get_task("once")).max_attempts, (await queue.get_task("default")).max_attempts) == (1, 3)
    await queue.read_messages(count=2)
    assert (await queue.fail("once", "boom")).status == TaskStatus.FAILED
    await queue.acknowledge("default")
    assert (await queue.get_task("merge")).max_attempts == 5


async def test_a_delayed_subtask_is_refused(queue: TaskQueue) -> None:
    with pytest.raises(InvalidInput, match="delay_ms"):
        await queue.fanout("p", [NewTask("c", {}, delay_ms=10)])
