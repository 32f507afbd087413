"""The worker runtime against a real Redis: acks, failures, lease renewal, checkpoints, stopping."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mcp_queue_server import NewTask, Settings, Task, TaskQueue, TaskStatus
from mcp_queue_server.core import codec
from mcp_queue_server.core.connection import request_id
from mcp_queue_server.core.scripts import script_sha, script_source
from mcp_queue_server.worker.runtime import PermanentFailure, TaskContext, Worker, WorkerEvent
from tests.conftest import QueueFactory

WAIT_S = 15


class Events:
    """Records worker events; tests wait for them instead of sleeping."""

    def __init__(self) -> None:
        self.seen: list[WorkerEvent] = []
        self._changed = anyio.Event()

    def __call__(self, event: WorkerEvent) -> None:
        self.seen.append(event)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, kind: str, count: int = 1) -> list[WorkerEvent]:
        with anyio.fail_after(WAIT_S):
            while True:
                found = [e for e in self.seen if e.kind == kind]
                if len(found) >= count:
                    return found
                await self._changed.wait()


class LogLines(logging.Handler):
    """The worker's log messages; tests wait for a line instead of sleeping."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._changed = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, pattern: str) -> str:
        with anyio.fail_after(WAIT_S):
            while True:
                found = [line for line in self.lines if re.search(pattern, line)]
                if found:
                    return found[0]
                await self._changed.wait()


@pytest.fixture
def worker_log() -> Iterator[LogLines]:
    handler = LogLines()
    log = logging.getLogger("mcp_queue_server.worker.runtime")
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run ``worker`` for the block; stop it (no grace) at the end."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(WAIT_S):
            await worker.ready.wait()
        yield worker
        worker.stop(0)


def blocking_handler(release: anyio.Event, started: Callable[[Task, TaskContext], Any] | None = None) -> Any:
    async def handle(task: Task, ctx: TaskContext) -> dict[str, Any]:
        if started is not None:
            await started(task, ctx)
        await release.wait()
        return {"done": task.task_id}

    return handle


async def test_a_handler_result_is_acked_and_stored(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    await queue.enqueue("add", {"a": 2, "b": 3}, task_id="sum")
    events = Events()

    async def add(task: Task, ctx: TaskContext) -> int:
        return int(task.payload["a"]) + int(task.payload["b"])

    async with running(Worker(queue, {"add": add}, on_event=events)):
        [acked] = await events.wait_for("acked")

    info = await queue.get_task("sum")
    assert (acked.task.task_id, info.status, info.result) == ("sum", TaskStatus.COMPLETED, 5)


async def test_a_worker_given_settings_opens_its_own_queue(settings: Settings, make_queue: QueueFactory) -> None:
    producer: TaskQueue = await make_queue("producer", real_clock=True)
    await producer.enqueue("echo", {"x": 1}, task_id="e1")
    events = Events()

    async def echo(task: Task, ctx: TaskContext) -> dict[str, Any]:
        return task.payload

    async with running(Worker(settings, {"*": echo}, name="own-queue", on_event=events)):
        [acked] = await events.wait_for("acked")

    assert acked.worker == "own-queue"
    assert (await producer.get_task("e1")).result == {"x": 1}


async def test_concurrency_runs_that_many_handlers_at_once(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    for i in range(3):
        await queue.enqueue("t", {}, task_id=f"c{i}")
    all_in = anyio.Event()
    inside: list[str] = []

    async def handle(task: Task, ctx: TaskContext) -> None:
        inside.append(task.task_id)
        if len(inside) == 3:
            all_in.set()
        await all_in.wait()  # returns only once all three run at the same time

    events = Events()
    async with running(Worker(queue, {"t": handle}, concurrency=3, on_event=events)):
        await events.wait_for("acked", 3)

    assert sorted(inside) == ["c0", "c1", "c2"]


async def test_concurrency_above_what_one_read_may_lease_runs_that_many_handlers_at_once(
    make_queue: QueueFactory,
) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True, max_read_count=2)
    for i in range(5):
        await queue.enqueue("t", {}, task_id=f"c{i}")
    all_in = anyio.Event()
    inside: list[str] = []

    async def handle(task: Task, ctx: TaskContext) -> None:
        inside.append(task.task_id)
        if len(inside) == 5:
            all_in.set()
        await all_in.wait()  # returns only once all five run at the same time

    events = Events()
    async with running(Worker(queue, {"t": handle}, concurrency=5, on_event=events)):
        await events.wait_for("acked", 5)  # reads of at most 2 each filled the 5 slots

    assert sorted(inside) == [f"c{i}" for i in range(5)]


async def test_many_quick_handlers_are_each_acked_once_at_every_concurrency(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    await queue.enqueue_batch([NewTask("t", {"n": i}, task_id=f"q{i}") for i in range(300)])

    async def handle(task: Task, ctx: TaskContext) -> int:
        if task.payload["n"] % 3 == 0:
            await anyio.lowlevel.checkpoint()  # some handlers yield, most do not
        return int(task.payload["n"])

    acked: list[str] = []
    for concurrency, until in ((1, 100), (7, 200), (100, 300)):  # each worker stopped midway but the last
        events = Events()
        async with running(Worker(queue, {"t": handle}, concurrency=concurrency, on_event=events)):
            await events.wait_for("acked", until - len(acked))
        acked += [e.task.task_id for e in events.seen if e.kind == "acked"]
    assert sorted(acked) == sorted(f"q{i}" for i in range(300))  # each once
    infos = [await queue.get_task(f"q{i}") for i in range(300)]
    assert all(info.status == TaskStatus.COMPLETED and info.result == i for i, info in enumerate(infos))


async def test_lease_renewal_keeps_a_long_handler_from_being_redelivered(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    thief: TaskQueue = await make_queue("thief", real_clock=True)
    await queue.enqueue("slow", {}, task_id="long")
    release = anyio.Event()
    events = Events()

    async with running(Worker(queue, {"slow": blocking_handler(release)}, lease_ms=300, on_event=events)):
        await events.wait_for("started")
        # The read blocks past three leases; it would take the task the moment a lease expired.
        stolen = await thief.read_messages(count=1, block_ms=1200)
        release.set()
        await events.wait_for("acked")

    info = await queue.get_task("long")
    assert stolen == []
    assert (info.status, info.attempt) == (TaskStatus.COMPLETED, 1)


async def test_a_failing_handler_retries_then_dead_letters_with_the_error(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True, max_attempts=2)
    await queue.enqueue("boom", {}, task_id="bad")
    events = Events()

    async def boom(task: Task, ctx: TaskContext) -> None:
        raise ValueError(f"broken on attempt {task.attempt}")

    async with running(Worker(queue, {"boom": boom}, on_event=events)):
        first, last = await events.wait_for("failed", 2)

    info = await queue.get_task("bad")
    dlq = await queue.inspect_dlq()
    assert first.detail.startswith("queued, will retry: ValueError: broken on attempt 1")
    assert last.detail == "dead-lettered: ValueError: broken on attempt 2"
    assert (info.status, info.attempt) == (TaskStatus.FAILED, 2)
    assert info.error is not None
    assert info.error.startswith("ValueError: broken on attempt 2")
    assert [t.task_id for t in dlq.tasks] == ["bad"]


async def test_a_permanent_failure_dead_letters_at_once(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    await queue.enqueue("t", {}, task_id="hopeless")
    events = Events()

    async def refuse(task: Task, ctx: TaskContext) -> None:
        raise PermanentFailure("payload names no document")

    async with running(Worker(queue, {"t": refuse}, on_event=events)):
        await events.wait_for("failed")

    info = await queue.get_task("hopeless")
    assert (info.status, info.attempt) == (TaskStatus.FAILED, 1)
    assert info.error is not None
    assert info.error.startswith("PermanentFailure: payload names no document")


async def test_a_worker_hands_back_tasks_it_has_no_handler_for_uncharged_and_another_worker_completes_them(
    make_queue: QueueFactory,
) -> None:
    # One attempt only: failing the foreign task even once would dead-letter it.
    only_a: TaskQueue = await make_queue("only-a", real_clock=True, max_attempts=1)
    only_b: TaskQueue = await make_queue("only-b", real_clock=True, max_attempts=1)
    await only_a.enqueue("b", {"n": 7}, task_id="foreign")
    a_events, b_events = Events(), Events()

    async def never(task: Task, ctx: TaskContext) -> None:
        raise AssertionError("worker a must not run a task of type b")

    async def handle_b(task: Task, ctx: TaskContext) -> int:
        return int(task.payload["n"])

    async with running(Worker(only_a, {"a": never}, on_event=a_events)):
        # Read and handed back twice (the second time after backing off): still uncharged.
        first, _ = await a_events.wait_for("released", 2)
        waiting = await only_a.get_task("foreign")
        async with running(Worker(only_b, {"b": handle_b}, on_event=b_events)):
            [acked] = await b_events.wait_for("acked")

    done = await only_a.get_task("foreign")
    assert "no handler for task type 'b'" in first.detail
    assert (waiting.status, waiting.attempt, waiting.max_attempts) == (TaskStatus.QUEUED, 0, 1)
    assert [e.kind for e in a_events.seen] == ["released"] * len(a_events.seen)
    assert acked.task.attempt == 1
    assert (done.status, done.result, done.attempt) == (TaskStatus.COMPLETED, 7, 1)
    assert (await only_a.inspect_dlq()).tasks == []


async def test_a_worker_reaches_its_own_low_priority_tasks_behind_foreign_high_priority_ones(
    make_queue: QueueFactory,
) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    await queue.enqueue("b", {}, priority=20, task_id="high-foreign")
    await queue.enqueue("a", {}, priority=0, task_id="low-own")
    events = Events()

    async def handle_a(task: Task, ctx: TaskContext) -> str:
        return "mine"

    async with running(Worker(queue, {"a": handle_a}, on_event=events)):
        [acked] = await events.wait_for("acked")

    foreign = await queue.get_task("high-foreign")
    assert acked.task.task_id == "low-own"
    assert (foreign.status, foreign.attempt) == (TaskStatus.QUEUED, 0)


async def test_each_finished_task_gets_one_log_line_with_type_attempt_duration_and_outcome(
    make_queue: QueueFactory, worker_log: LogLines
) -> None:
    queue: TaskQueue = await make_queue("logger", real_clock=True, max_attempts=2)
    await queue.enqueue("add", {}, priority=20, task_id="fine")
    await queue.enqueue("boom", {}, task_id="broken")
    await queue.enqueue("hold", {}, task_id="held")
    events = Events()

    async def add(task: Task, ctx: TaskContext) -> int:
        return 1

    async def boom(task: Task, ctx: TaskContext) -> None:
        raise ValueError("no")

    handlers = {"add": add, "boom": boom, "hold": blocking_handler(anyio.Event())}
    async with running(Worker(queue, handlers, concurrency=3, on_event=events)) as worker:
        await events.wait_for("acked")
        await events.wait_for("failed", 2)
        await events.wait_for("started", 4)
        worker.stop(0)
    await events.wait_for("released")

    lines = [line for line in worker_log.lines if " task " in line]
    took = r"in \d+\.\d{3} s"
    expected = [
        rf"logger: task fine \(type add, attempt 1\) acked {took}",
        rf"logger: task broken \(type boom, attempt 1\) failed-retry {took}: ValueError: no",
        rf"logger: task broken \(type boom, attempt 2\) dead-lettered {took}: ValueError: no",
        rf"logger: task held \(type hold, attempt 1\) handed back {took}: .*",
    ]
    assert len(lines) == 4, lines
    for pattern in expected:  # the handlers run at once: in any order
        assert len([line for line in lines if re.fullmatch(pattern, line)]) == 1, (pattern, lines)


async def test_the_worker_logs_a_summary_of_each_interval(make_queue: QueueFactory, worker_log: LogLines) -> None:
    queue: TaskQueue = await make_queue("summing", real_clock=True)
    await queue.enqueue("t", {}, task_id="one")
    events = Events()

    async def handle(task: Task, ctx: TaskContext) -> None:
        return None

    async with running(Worker(queue, {"t": handle}, summary_interval_s=0.05, on_event=events)):
        await events.wait_for("acked")
        line = await worker_log.wait_for(r"1 done")

    assert re.fullmatch(
        r"summing: last [\d.]+ s: 1 done, 0 failed \(0 dead-lettered\), 0 lease lost, [\d.]+ tasks/s; 0 running", line
    )


async def test_stop_lets_running_handlers_finish_within_the_grace_period(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    await queue.enqueue("t", {}, task_id="finish-me")
    release = anyio.Event()
    events = Events()
    worker = Worker(queue, {"t": blocking_handler(release)}, grace_period_s=WAIT_S, on_event=events)

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await events.wait_for("started")
        worker.stop()
        release.set()  # the handler finishes after the stop request, within the grace period

    assert [e.kind for e in events.seen] == ["started", "acked"]
    assert (await queue.get_task("finish-me")).status == TaskStatus.COMPLETED


async def test_stop_hands_a_task_still_running_after_the_grace_period_back_at_once(
    make_queue: QueueFactory,
) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    other: TaskQueue = await make_queue("other", real_clock=True)
    await queue.enqueue("t", {}, task_id="stuck")
    events = Events()
    worker = Worker(queue, {"t": blocking_handler(anyio.Event())}, grace_period_s=0.2, on_event=events)

    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await events.wait_for("started")
            worker.stop()

    info = await queue.get_task("stuck")
    [again] = await other.read_messages(count=1)
    assert [e.kind for e in events.seen] == ["started", "released"]
    assert (info.status, info.attempt) == (TaskStatus.QUEUED, 0)  # handing back is not charged
    assert (again.task_id, again.attempt) == ("stuck", 1)


async def test_a_stopped_worker_leaves_the_consumer_group(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("leaving", real_clock=True)
    observer: TaskQueue = await make_queue("observer", real_clock=True)
    await queue.enqueue("t", {})
    events = Events()

    async def handle(task: Task, ctx: TaskContext) -> None:
        return None

    async with running(Worker(queue, {"t": handle}, on_event=events)):
        await events.wait_for("acked")
        assert "leaving" in [c.name for c in await observer.get_consumer_info()]

    assert "leaving" not in [c.name for c in await observer.get_consumer_info()]


async def test_cancelling_run_hands_running_tasks_back(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    await queue.enqueue("t", {}, task_id="cancelled")
    events = Events()
    worker = Worker(queue, {"t": blocking_handler(anyio.Event())}, on_event=events)

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await events.wait_for("started")
        tg.cancel_scope.cancel()

    assert (await queue.get_task("cancelled")).status == TaskStatus.QUEUED


async def test_a_killed_workers_task_is_redelivered_with_its_checkpoint(make_queue: QueueFactory) -> None:
    first: TaskQueue = await make_queue("first", real_clock=True)
    second: TaskQueue = await make_queue("second", real_clock=True)
    await first.enqueue("steps", {"steps": 3}, task_id="resumable")
    events = Events()
    resumed_from: list[dict[str, Any] | None] = []
    crash = anyio.Event()

    async def steps(task: Task, ctx: TaskContext) -> dict[str, int]:
        start = (task.checkpoint or {}).get("step", 0)
        resumed_from.append(task.checkpoint)
        for step in range(start + 1, int(task.payload["steps"]) + 1):
            await ctx.checkpoint({"step": step})
            if step == 2 and task.attempt == 1:
                crash.set()
                await anyio.sleep_forever()
        return {"attempt": task.attempt}

    doomed = Worker(first, {"steps": steps}, lease_ms=300, recover_interval_s=None, on_event=events)
    async with anyio.create_task_group() as tg:
        tg.start_soon(doomed.run)
        with anyio.fail_after(WAIT_S):
            await crash.wait()
        doomed.kill()
    async with running(Worker(second, {"steps": steps}, lease_ms=300, on_event=events)):
        [acked] = await events.wait_for("acked")

    info = await second.get_task("resumable")
    assert acked.worker == "second"
    assert resumed_from == [None, {"step": 2}]
    assert (info.status, info.result) == (TaskStatus.COMPLETED, {"attempt": 2})


async def _recover_as_if_idle(thief: TaskQueue, task_id: str) -> None:
    """``recover(min_idle_ms=30_000)`` on a task made to look untouched for a minute, in one
    transaction: the holder renews its short lease every ~100 ms, which resets the idle time."""
    k, group = thief.keys("default"), thief.settings.group
    stream, entry, holder = await thief.redis.hmget(k.task(task_id), "stream", "entry", "consumer")
    assert entry is not None
    assert holder is not None
    await thief.redis.script_load(script_source("recover"))
    argv = [k.base, group, thief.consumer, "", *codec.recover_args(30_000, 100, request_id())]
    async with thief.redis.pipeline(transaction=True) as pipe:
        pipe.xclaim(k.high if stream == b"high" else k.low, group, holder, 0, [entry], idle=60_000, justid=True)
        pipe.evalsha(script_sha("recover"), len(k.script_keys), *k.script_keys, *argv)
        await pipe.execute()


async def test_a_worker_that_loses_its_lease_cancels_the_handler_and_does_not_ack(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    other: TaskQueue = await make_queue("other", real_clock=True)
    await queue.enqueue("t", {}, task_id="taken")
    events = Events()
    cancelled = anyio.Event()

    async def handle(task: Task, ctx: TaskContext) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with running(Worker(queue, {"t": handle}, lease_ms=300, on_event=events)):
        await events.wait_for("started")
        # An operator's recovery takes the task away whatever its lease; another worker reads it.
        await _recover_as_if_idle(other, "taken")
        [stolen] = await other.read_messages(count=1)
        [lost] = await events.wait_for("lease_lost")
        with anyio.fail_after(WAIT_S):
            await cancelled.wait()

    info = await queue.get_task("taken")
    assert stolen.task_id == lost.task.task_id == "taken"
    assert (info.status, info.lease_holder) == (TaskStatus.WORKING, "other")


async def test_a_handler_can_fan_out_and_the_children_finish_the_parent(make_queue: QueueFactory) -> None:
    from mcp_queue_server import NewTask

    queue: TaskQueue = await make_queue("w", real_clock=True)
    await queue.enqueue("split", {"n": 2}, task_id="parent")
    events = Events()

    async def split(task: Task, ctx: TaskContext) -> None:
        await ctx.fanout([NewTask("part", {"i": i}, task_id=f"part-{i}") for i in range(int(task.payload["n"]))])

    async def part(task: Task, ctx: TaskContext) -> int:
        return int(task.payload["i"]) * 10

    async with running(Worker(queue, {"split": split, "part": part}, concurrency=2, on_event=events)):
        await events.wait_for("acked", 2)

    info = await queue.get_task("parent")
    assert [e.kind for e in events.seen if e.task.task_id == "parent"] == ["started", "handed_off"]
    assert (info.status, info.result) == (TaskStatus.COMPLETED, {"part-0": 0, "part-1": 10})


def test_a_worker_needs_handlers_and_a_positive_concurrency(settings: Settings) -> None:
    from mcp_queue_server import InvalidInput

    with pytest.raises(InvalidInput, match="handler"):
        Worker(settings, {})
    with pytest.raises(InvalidInput, match="concurrency"):
        Worker(settings, {"*": blocking_handler(anyio.Event())}, concurrency=0)


async def test_a_cancelled_task_s_handler_is_cancelled_and_the_task_ends_cancelled(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    producer: TaskQueue = await make_queue("producer", real_clock=True)
    await queue.enqueue("t", {}, task_id="long")
    events = Events()
    cancelled = anyio.Event()

    async def handle(task: Task, ctx: TaskContext) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with running(Worker(queue, {"t": handle}, lease_ms=300, on_event=events)):
        await events.wait_for("started")
        assert (await producer.cancel("long", "no longer needed")).status == "cancel_requested"
        with anyio.fail_after(WAIT_S):
            await cancelled.wait()  # the next lease renewal (within 100 ms) says so
        [ended] = await events.wait_for("failed")

    info = await queue.get_task("long")
    assert (info.status, info.error) == (TaskStatus.CANCELLED, "no longer needed")
    assert ended.detail == "cancelled: cancelled"
