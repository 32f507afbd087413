"""Waiting without polling (issue 13, part 3): ack with read_next, get_task with wait_ms.

A model that must poll burns turns: ack hands the next tasks back in the same call, and
get_task waits on the queue's events stream until the task is completed or failed, woken by
whichever process finished it.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_queue_server import Settings, TaskQueue
from mcp_queue_server.core.models import NewTask, TaskInfo
from mcp_queue_server.server import keepalive
from mcp_queue_server.server.app import build_server
from tests.conftest import FakeClock, QueueFactory
from tests.test_server_holders import until_a_client_blocks
from tests.test_server_tools import call, error

# -- ack with read_next ---------------------------------------------------------------------


async def test_ack_and_read_acks_the_task_then_leases_the_next_ones_in_one_call(queue: TaskQueue) -> None:
    ids = [(await queue.enqueue("t", {"n": n})).task_id for n in range(4)]
    (first,) = await queue.read_tasks(1)

    done = await queue.ack_and_read([(first.task_id, {"ok": 1})], 2)

    assert [o.status for o in done.outcomes] == ["acked"]  # type: ignore[union-attr]
    assert [t.task_id for t in done.tasks] == ids[1:3]
    assert all(t.attempt == 1 for t in done.tasks)
    assert (await queue.get_task(ids[0])).status == "completed"
    held = await queue.get_task(ids[1])
    assert (held.status, held.lease_holder) == ("working", "w1")
    assert (await queue.get_task(ids[3])).status == "queued"


async def test_ack_and_read_with_nothing_waiting_only_acks(queue: TaskQueue) -> None:
    task_id = (await queue.enqueue("t", {})).task_id
    await queue.read_tasks(1)

    done = await queue.ack_and_read([task_id], 5)

    assert done.tasks == []
    assert (await queue.get_task(task_id)).status == "completed"


async def test_ack_and_read_with_block_ms_waits_for_a_task_enqueued_meanwhile(make_queue: QueueFactory) -> None:
    worker = await make_queue("worker")
    producer = await make_queue("producer")
    observer = await make_queue("observer")
    first = (await producer.enqueue("t", {"n": 1})).task_id
    await worker.read_tasks(1)
    got: list[Any] = []

    async def ack_then_wait() -> None:
        got.append(await worker.ack_and_read([first], 5, block_ms=20_000))

    started = time.monotonic()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ack_then_wait)
            await _blocked_then(observer, lambda: producer.enqueue("t", {"n": 2}))

    (done,) = got
    assert [o.status for o in done.outcomes] == ["acked"]
    assert [t.payload for t in done.tasks] == [{"n": 2}]
    assert (await producer.get_task(done.tasks[0].task_id)).lease_holder == "worker"
    assert time.monotonic() - started < 10  # woken by the enqueue, not by the end of the 20 s wait


async def test_ack_and_read_with_block_ms_and_nothing_coming_acks_and_returns_no_tasks(queue: TaskQueue) -> None:
    task_id = (await queue.enqueue("t", {})).task_id
    await queue.read_tasks(1)

    with anyio.fail_after(10):
        done = await queue.ack_and_read([task_id], 5, block_ms=50)

    assert done.tasks == []
    assert (await queue.get_task(task_id)).status == "completed"


async def test_the_ack_tool_returns_next_tasks_shaped_like_read_tasks(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        first = (await call(client, "enqueue_task", task_type="t", payload={"n": 1}))["task_id"]
        second = (await call(client, "enqueue_task", task_type="t", payload={"n": 2}))["task_id"]
        await call(client, "read_tasks")

        acked = await call(client, "ack", task_id=first, result="done", read_next=3)
        plain = await call(client, "ack", task_id=second)

    assert acked["status"] == "acked"
    (nxt,) = acked["next_tasks"]
    assert nxt["task_id"] == second
    assert nxt["payload"] == {"n": 2}
    assert 0 < nxt["lease_ms_left"] <= 60_000
    assert set(nxt) >= {"task_type", "priority", "attempt", "lease_expires_at", "checkpoint", "parent_task_id"}
    assert "next_tasks" not in plain  # without read_next the result is as before


async def test_a_bulk_ack_with_read_next_returns_next_tasks_too(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        ids = [(await call(client, "enqueue_task", task_type="t", payload={}))["task_id"] for _ in range(3)]
        await call(client, "read_tasks", count=2)

        acked = await call(client, "ack", task_ids=ids[:2], read_next=1)

    assert [t["status"] for t in acked["tasks"]] == ["acked", "acked"]
    assert [t["task_id"] for t in acked["next_tasks"]] == [ids[2]]


async def test_a_refused_ack_with_read_next_leases_nothing(settings: Settings, make_queue: QueueFactory) -> None:
    other = await make_queue("other")
    taken = (await other.enqueue("t", {})).task_id
    waiting = (await other.enqueue("t", {})).task_id
    await other.read_tasks(1)
    async with Client(build_server(settings)) as client:
        text = await error(client, "ack", task_id=taken, read_next=1)

    assert "leased by another worker" in text
    assert (await other.get_task(waiting)).status == "queued"  # what the read took went back


# -- get_task with wait_ms ------------------------------------------------------------------


async def _blocked_then(observer: TaskQueue, action: Any) -> None:
    """Once the waiter blocks in Redis, act (finish the task from another process)."""
    await until_a_client_blocks(observer)
    await action()


async def test_wait_for_task_returns_when_another_process_acks_it(make_queue: QueueFactory) -> None:
    producer = await make_queue("producer")
    worker = await make_queue("worker")
    observer = await make_queue("observer")
    task_id = (await producer.enqueue("t", {})).task_id
    await worker.read_tasks(1)
    got: list[TaskInfo] = []

    async def wait() -> None:
        got.append(await producer.wait_for_task(task_id, 20_000))

    started = time.monotonic()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await _blocked_then(observer, lambda: worker.ack(task_id, {"answer": 42}))

    assert (got[0].status, got[0].result) == ("completed", {"answer": 42})
    assert time.monotonic() - started < 10  # woken by the ack, not by the end of the 20 s wait


async def test_wait_for_task_returns_when_the_task_is_dead_lettered(make_queue: QueueFactory) -> None:
    producer = await make_queue("producer")
    worker = await make_queue("worker")
    observer = await make_queue("observer")
    task_id = (await producer.enqueue("t", {})).task_id
    await worker.read_tasks(1)
    got: list[TaskInfo] = []

    async def wait() -> None:
        got.append(await producer.wait_for_task(task_id, 20_000))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await _blocked_then(observer, lambda: worker.fail(task_id, "broken", retry=False))

    assert (got[0].status, got[0].error) == ("failed", "broken")


async def test_wait_for_task_wakes_for_a_lease_that_expired_on_its_last_attempt(
    make_queue: QueueFactory, clock: FakeClock
) -> None:
    producer = await make_queue("producer")
    worker = await make_queue("worker")
    observer = await make_queue("observer")
    task_id = (await producer.enqueue("t", {}, max_attempts=1)).task_id
    await worker.read_tasks(1, lease_ms=1_000)
    got: list[TaskInfo] = []

    async def expire() -> None:
        clock.advance(5_000)
        await worker.read_tasks(1)  # a read dead-letters the expired task

    async def wait() -> None:
        got.append(await producer.wait_for_task(task_id, 20_000))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await _blocked_then(observer, expire)

    assert got[0].status == "failed"
    assert "lease expired" in (got[0].error or "")


async def test_wait_for_task_wakes_when_the_last_subtask_completes_the_fanout_parent(
    make_queue: QueueFactory,
) -> None:
    producer = await make_queue("producer")
    worker = await make_queue("worker")
    observer = await make_queue("observer")
    await producer.fanout("parent", [NewTask("t", {"n": 1})])
    (child,) = await worker.read_tasks(1)
    got: list[TaskInfo] = []

    async def wait() -> None:
        got.append(await producer.wait_for_task("parent", 20_000))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await _blocked_then(observer, lambda: worker.ack(child.task_id, "r"))

    assert got[0].status == "completed"
    assert got[0].result == {child.task_id: "r"}


async def test_wait_for_task_of_a_finished_task_returns_at_once(queue: TaskQueue) -> None:
    task_id = (await queue.enqueue("t", {})).task_id
    await queue.read_tasks(1)
    await queue.ack(task_id)

    with anyio.fail_after(5):
        info = await queue.wait_for_task(task_id, 20_000)

    assert info.status == "completed"


async def test_wait_for_task_returns_the_task_as_it_is_when_the_wait_ends(queue: TaskQueue) -> None:
    task_id = (await queue.enqueue("t", {})).task_id
    other = (await queue.enqueue("t", {})).task_id
    await queue.read_tasks(2)
    await queue.ack(other)  # an event about another task does not end the wait

    started = time.monotonic()
    info = await queue.get_task(task_id, wait_ms=300)

    assert info.status == "working"
    assert 0.25 <= time.monotonic() - started < 5


async def test_get_task_tool_waits_for_the_result(settings: Settings, make_queue: QueueFactory) -> None:
    worker = await make_queue("worker", real_clock=True)
    observer = await make_queue("observer", real_clock=True)
    task_id = (await worker.enqueue("t", {})).task_id
    await worker.read_tasks(1)
    got: list[dict[str, Any]] = []
    async with Client(build_server(settings)) as client:

        async def wait() -> None:
            got.append(await call(client, "get_task", task_id=task_id, wait_ms=20_000))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await _blocked_then(observer, lambda: worker.ack(task_id, [1, 2]))

    assert (got[0]["status"], got[0]["result"]) == ("completed", [1, 2])


async def test_get_task_tool_refuses_a_wait_longer_than_the_server_s_cap(settings: Settings) -> None:
    async with Client(build_server(settings.model_copy(update={"max_block_ms": 1_000}))) as client:
        text = await error(client, "get_task", task_id="x", wait_ms=1_001)

    assert "wait_ms" in text


# -- progress while waiting -----------------------------------------------------------------


async def test_a_blocking_read_with_a_progress_token_reports_progress_while_it_waits(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keepalive, "PROGRESS_EVERY_S", 0.2)  # two slices and more within block_ms
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with Client(build_server(settings)) as client:
        with anyio.fail_after(10):
            result = await client.call_tool("read_tasks", {"block_ms": 700}, progress_callback=on_progress)

    assert result.structured_content == {"queue": "default", "tasks": []}
    assert seen, "no progress notification arrived before the read returned"
    assert all(total == 700 and 0 < progress <= 700 for progress, total in seen)
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)


async def test_a_blocking_read_without_a_progress_callback_still_waits_its_whole_block_ms(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keepalive, "PROGRESS_EVERY_S", 0.1)
    async with Client(build_server(settings)) as client:
        started = time.monotonic()
        result = await client.call_tool("read_tasks", {"block_ms": 300})

    assert result.structured_content == {"queue": "default", "tasks": []}
    assert time.monotonic() - started >= 0.25


async def test_get_task_waiting_with_a_progress_token_reports_progress(
    settings: Settings, queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keepalive, "PROGRESS_EVERY_S", 0.2)
    task_id = (await queue.enqueue("t", {})).task_id
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(build_server(settings)) as client:
        with anyio.fail_after(10):
            result = await client.call_tool(
                "get_task", {"task_id": task_id, "wait_ms": 500}, progress_callback=on_progress
            )

    assert result.structured_content is not None
    assert result.structured_content["status"] == "queued"
    assert seen
