"""limit_key on saga steps (and their branches and compensations) and on schedules: the task the
saga or the schedule creates carries the key, so the read script holds it back like any other."""

from __future__ import annotations

import json

import pytest
from mcp import Client

from mcp_queue_server import (
    InvalidInput,
    NewSchedule,
    SagaAction,
    SagaStep,
    Settings,
    TaskNotFound,
    TaskQueue,
    TaskStatus,
)
from mcp_queue_server.server.app import build_server
from tests.conftest import FakeClock
from tests.test_cli import cli
from tests.test_limits import ids, keyed
from tests.test_server_tools import call


async def test_a_keyed_saga_step_waits_while_its_key_is_full_and_runs_after_the_holder_acks(queue: TaskQueue) -> None:
    await queue.set_limit("api", max_working=1)
    await keyed(queue, "api", "holder")
    assert ids(await queue.read_messages(count=10)) == ["holder"]

    await queue.start_saga("s", [SagaStep("call", {}, limit_key="api"), SagaStep("free", {})])
    assert ids(await queue.read_messages(count=10)) == []  # s.s1 is held back, not lost
    step = await queue.get_task("s.s1")
    assert (step.status, step.limit_key) == (TaskStatus.QUEUED, "api")

    await queue.acknowledge("holder")
    assert ids(await queue.read_messages(count=10)) == ["s.s1"]
    await queue.acknowledge("s.s1")
    [free] = await queue.read_messages(count=10)
    assert (free.task_id, (await queue.get_task("s.s2")).limit_key) == ("s.s2", None)  # unkeyed steps stay unkeyed


async def test_a_compensation_takes_its_steps_key_unless_it_names_its_own(queue: TaskQueue) -> None:
    steps = [
        SagaStep("a", {}, SagaAction("undo_a", {}), limit_key="api"),
        SagaStep("b", {}, SagaAction("undo_b", {}, limit_key="slow"), limit_key="api"),
        SagaStep("boom", {}),
    ]
    await queue.set_limit("slow", max_working=1)
    await keyed(queue, "slow", "holder")
    assert ids(await queue.read_messages(count=10)) == ["holder"]
    await queue.start_saga("s", steps)
    for step in ("s.s1", "s.s2"):
        assert ids(await queue.read_messages(count=10)) == [step]
        await queue.acknowledge(step)
    assert ids(await queue.read_messages(count=10)) == ["s.s3"]
    await queue.fail("s.s3", "boom", retry=False)

    assert ids(await queue.read_messages(count=10)) == []  # s.c2 (key slow) waits behind the holder
    assert (await queue.get_task("s.c2")).limit_key == "slow"
    await queue.acknowledge("holder")
    assert ids(await queue.read_messages(count=10)) == ["s.c2"]
    await queue.acknowledge("s.c2")
    assert ids(await queue.read_messages(count=10)) == ["s.c1"]
    assert (await queue.get_task("s.c1")).limit_key == "api"


async def test_parallel_branches_and_on_complete_carry_their_own_keys(queue: TaskQueue) -> None:
    await queue.set_limit("api", max_working=1)
    branches = [SagaStep("x", {}, limit_key="api"), SagaStep("y", {}, limit_key="api"), SagaStep("z", {})]
    await queue.start_saga("p", [SagaStep(parallel=branches)], on_complete=SagaAction("done", {}, limit_key="api"))
    first = ids(await queue.read_messages(count=10))
    assert first == ["p.s1.b1", "p.s1.b3"]  # b2 shares b1's key at max_working 1
    await queue.acknowledge("p.s1.b1")
    assert ids(await queue.read_messages(count=10)) == ["p.s1.b2"]
    await queue.acknowledge("p.s1.b2")
    await queue.acknowledge("p.s1.b3")
    assert (await queue.get_task("p.done")).limit_key == "api"


async def test_a_saga_refuses_a_bad_limit_key_and_one_on_a_parallel_step(queue: TaskQueue) -> None:
    with pytest.raises(InvalidInput, match=r"steps\[0\]\.limit_key"):
        await queue.start_saga("s", [SagaStep("a", {}, limit_key="bad key!")])
    with pytest.raises(InvalidInput, match="give each branch its own limit_key"):
        await queue.start_saga("s", [SagaStep(parallel=[SagaStep("a", {}), SagaStep("b", {})], limit_key="api")])
    with pytest.raises(TaskNotFound):
        await queue.get_task("s")


async def test_a_scheduled_slot_task_carries_the_key_and_waits_while_the_key_is_full(
    queue: TaskQueue, clock: FakeClock
) -> None:
    await queue.set_limit("api", max_working=1)
    got = await queue.set_schedule(NewSchedule("tick", "ping", {}, every_ms=10_000, limit_key="api"))
    assert (await queue.get_schedule("tick")).limit_key == "api"
    await keyed(queue, "api", "holder")
    assert ids(await queue.read_messages(count=10)) == ["holder"]

    clock.advance(10_000)
    [firing] = (await queue.fire_due_schedules()).firings
    slot_task = f"tick-{got.next_run_at}"
    assert firing.task_id == slot_task
    assert ids(await queue.read_messages(count=10)) == []  # fired, but held back by the key
    task = await queue.get_task(slot_task)
    assert (task.status, task.limit_key) == (TaskStatus.QUEUED, "api")

    await queue.acknowledge("holder")
    assert ids(await queue.read_messages(count=10)) == [slot_task]


async def test_changing_only_a_schedules_limit_key_replaces_it_and_none_removes_it(
    queue: TaskQueue, clock: FakeClock
) -> None:
    await queue.set_schedule(NewSchedule("tick", "ping", {}, every_ms=10_000, limit_key="api"))
    again = await queue.set_schedule(NewSchedule("tick", "ping", {}, every_ms=10_000))
    assert (again.replaced, again.unchanged) == (True, False)
    assert (await queue.get_schedule("tick")).limit_key is None
    clock.advance(10_000)
    [firing] = (await queue.fire_due_schedules()).firings
    assert firing.task_id is not None
    assert (await queue.get_task(firing.task_id)).limit_key is None
    with pytest.raises(InvalidInput, match="limit_key"):
        await queue.set_schedule(NewSchedule("t2", "ping", {}, every_ms=10_000, limit_key="bad key!"))


async def test_start_saga_and_schedule_task_take_limit_key_over_mcp(settings: Settings, queue: TaskQueue) -> None:
    steps = [
        {"task_type": "a", "payload": {}, "limit_key": "api"},
        {"parallel": [{"task_type": "b", "limit_key": "llm"}, {"task_type": "c"}]},
    ]
    async with Client(build_server(settings)) as client:
        await call(client, "start_saga", saga_id="m", steps=steps)
        await call(
            client, "schedule_task", schedule_id="n", task_type="t", payload={}, every_ms=60_000, limit_key="api"
        )
    assert (await queue.get_task("m.s1")).limit_key == "api"
    assert (await queue.get_schedule("n")).limit_key == "api"
    await queue.acknowledge((await queue.read_messages(count=1))[0].task_id)
    assert [(await queue.get_task(f"m.s2.b{j}")).limit_key for j in (1, 2)] == ["llm", None]


async def test_the_cli_adds_a_schedule_with_a_limit_key(settings: Settings, queue: TaskQueue) -> None:
    added = await cli(settings, "schedules", "add", "n", "t", "--every-ms", "60000", "--limit-key", "api")
    assert added.code == 0, added.err
    listed = await cli(settings, "schedules", "list", "--json")
    [row] = json.loads(listed.out)
    assert row["limit_key"] == "api"
