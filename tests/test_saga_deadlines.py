"""deadline_ms on saga steps: each step's task gets its deadline when the step starts (not when the
saga does), a parallel step's applies to the branches that name none, and a late step is shown,
never dropped."""

from __future__ import annotations

import pytest
from mcp import Client

from mcp_queue_server import InvalidInput, SagaStep, Settings, TaskNotFound, TaskQueue
from mcp_queue_server.server.app import build_server
from tests.conftest import FakeClock
from tests.test_server_tools import call


async def test_a_step_deadline_counts_from_the_steps_start_and_a_late_step_still_runs(
    queue: TaskQueue, clock: FakeClock
) -> None:
    await queue.start_saga("s", [SagaStep("first", {}), SagaStep("second", {}, deadline_ms=60_000)])
    assert (await queue.get_task("s.s1")).deadline_at is None

    clock.advance(600_000)  # the first step takes ten minutes: the second's deadline has not started
    [first] = await queue.read_messages()
    await queue.acknowledge(first.task_id)
    second = await queue.get_task("s.s2")
    assert second.deadline_at is not None
    assert second.overdue is False
    assert (await queue.get_queue_stats()).past_deadline == 0

    clock.advance(90_000)
    assert (await queue.get_task("s.s2")).overdue is True
    assert (await queue.get_queue_stats()).past_deadline == 1
    [late] = await queue.read_messages()
    assert late.task_id == "s.s2"
    await queue.acknowledge(late.task_id)
    assert (await queue.get_queue_stats()).past_deadline == 0


async def test_a_parallel_steps_deadline_goes_to_the_branches_that_name_none(
    queue: TaskQueue, clock: FakeClock
) -> None:
    branches = [SagaStep("a", {}), SagaStep("b", {}, deadline_ms=300_000)]
    await queue.start_saga("p", [SagaStep(parallel=branches, deadline_ms=60_000)])
    clock.advance(90_000)
    assert (await queue.get_task("p.s1.b1")).overdue is True
    assert (await queue.get_task("p.s1.b2")).overdue is False
    assert (await queue.get_queue_stats()).past_deadline == 1


@pytest.mark.parametrize("bad", [0, 366 * 24 * 3_600_000])
async def test_a_step_deadline_out_of_bounds_is_refused_and_nothing_starts(queue: TaskQueue, bad: int) -> None:
    with pytest.raises(InvalidInput, match=r"steps\[0\]\.deadline_ms"):
        await queue.start_saga("s", [SagaStep("t", {}, deadline_ms=bad)])
    with pytest.raises(TaskNotFound):
        await queue.get_task("s")


async def test_start_saga_takes_deadline_ms_on_steps_over_mcp(settings: Settings, queue: TaskQueue) -> None:
    async with Client(build_server(settings)) as client:
        started = await call(
            client, "start_saga", saga_id="m", steps=[{"task_type": "t", "payload": {}, "deadline_ms": 5_000}]
        )
    assert started["saga_id"] == "m"
    assert (await queue.get_task("m.s1")).deadline_at is not None
