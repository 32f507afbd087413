"""Sagas: steps run one after another as tasks; a failed or cancelled step compensates the
completed ones in reverse order, each exactly once, with the original results."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_queue_server import ConflictingRequest, InvalidInput, SagaAction, SagaStep, TaskQueue, TaskStatus
from mcp_queue_server.core.models import Task


def _step(name: str, undo: bool = True) -> SagaStep:
    return SagaStep(name, {"do": name}, SagaAction(f"undo_{name}", {"undo": name}) if undo else None)


def _booking() -> list[SagaStep]:
    return [_step("flight"), _step("hotel"), _step("car"), _step("pay")]


async def _take(queue: TaskQueue, count: int = 10) -> list[Task]:
    return await queue.read_messages(count=count)


async def _one(queue: TaskQueue) -> Task:
    tasks = await _take(queue)
    assert len(tasks) == 1, [t.task_id for t in tasks]
    return tasks[0]


async def _run_steps(queue: TaskQueue, n: int) -> list[Task]:
    """Take and ack ``n`` steps in turn, each with result {"done": <task_type>}."""
    seen = []
    for _ in range(n):
        task = await _one(queue)
        seen.append(task)
        await queue.acknowledge(task.task_id, {"done": task.task_type})
    return seen


async def test_a_saga_runs_its_steps_in_order_each_seeing_the_earlier_results(queue: TaskQueue) -> None:
    started = await queue.start_saga(
        "trip", _booking(), {"user": 7}, on_complete=SagaAction("notify", {"channel": "mail"})
    )
    assert (started.saga_id, started.status, started.duplicate) == ("trip", TaskStatus.WORKING, False)

    seen = await _run_steps(queue, 4)

    assert [t.task_id for t in seen] == ["trip.s1", "trip.s2", "trip.s3", "trip.s4"]
    assert seen[2].payload == {
        "saga": {
            "saga_id": "trip",
            "step": 3,
            "results": [{"done": "flight"}, {"done": "hotel"}],
            "saga_data": {"user": 7},
        },
        "do": "car",
    }
    done = await _one(queue)
    assert (done.task_id, done.task_type) == ("trip.done", "notify")
    assert done.payload["saga"]["results"] == [{"done": t} for t in ("flight", "hotel", "car", "pay")]
    assert done.payload["channel"] == "mail"
    info = await queue.get_task("trip")
    assert info.status == TaskStatus.COMPLETED
    assert info.saga is not None
    assert [s.status for s in info.saga.steps] == ["completed"] * 4
    assert info.saga.steps[3].result == {"done": "pay"}
    assert (info.saga.current_step, info.saga.total_steps, info.saga.waiting_on) == (4, 4, None)


async def test_a_parallel_step_completes_when_every_branch_has(queue: TaskQueue) -> None:
    fan = SagaStep(parallel=[_step("a"), _step("b"), _step("c", undo=False)])
    await queue.start_saga("p", [_step("first"), fan, _step("last")])
    await _run_steps(queue, 1)

    branches = await _take(queue)
    assert sorted(t.task_id for t in branches) == ["p.s2.b1", "p.s2.b2", "p.s2.b3"]
    assert {t.payload["saga"]["branch"] for t in branches} == {1, 2, 3}
    assert all(t.payload["saga"]["results"] == [{"done": "first"}] for t in branches)
    for t in branches[:2]:
        await queue.acknowledge(t.task_id, {"branch": t.task_type})
    assert await _take(queue) == []  # the next step waits for the last branch
    await queue.acknowledge(branches[2].task_id, {"branch": branches[2].task_type})

    last = await _one(queue)
    assert last.task_id == "p.s3"
    assert last.payload["saga"]["results"][1] == [{"branch": "a"}, {"branch": "b"}, {"branch": "c"}]
    info = await queue.get_task("p")
    assert info.saga is not None
    assert [b.status for b in info.saga.steps[1].branches or []] == ["completed"] * 3


async def test_a_poison_step_compensates_the_completed_steps_in_reverse_order_once(queue: TaskQueue) -> None:
    await queue.start_saga("trip", _booking())
    await _run_steps(queue, 2)
    car = await _one(queue)
    await queue.fail(car.task_id, "no cars left", retry=False)

    info = await queue.get_task("trip")
    assert info.status == TaskStatus.COMPENSATING
    assert "step 3 (trip.s3) was dead-lettered: no cars left" in str(info.error)
    undone = []
    for _ in range(2):
        task = await _one(queue)  # one compensation at a time
        undone.append((task.task_id, task.task_type, task.payload))
        await queue.acknowledge(task.task_id, {"undone": True})
        again = await queue.acknowledge(task.task_id, {"undone": True})  # a repeat moves nothing
        assert again.status == "already_completed"

    assert undone == [
        (
            "trip.c2",
            "undo_hotel",
            {
                "saga": {
                    "saga_id": "trip",
                    "step": 2,
                    "compensate": True,
                    "result": {"done": "hotel"},
                    "saga_data": None,
                },
                "undo": "hotel",
            },
        ),
        (
            "trip.c1",
            "undo_flight",
            {
                "saga": {
                    "saga_id": "trip",
                    "step": 1,
                    "compensate": True,
                    "result": {"done": "flight"},
                    "saga_data": None,
                },
                "undo": "flight",
            },
        ),
    ]
    assert await _take(queue) == []
    info = await queue.get_task("trip")
    assert info.status == TaskStatus.COMPENSATED
    assert info.saga is not None
    assert [(s.status, s.compensation_task_id) for s in info.saga.steps] == [
        ("compensated", "trip.c1"),
        ("compensated", "trip.c2"),
        ("failed", None),
        ("pending", None),
    ]


async def test_a_failed_branch_compensates_the_completed_branches_and_earlier_steps(queue: TaskQueue) -> None:
    fan = SagaStep(parallel=[_step("a"), _step("b"), _step("c")])
    await queue.start_saga("p", [_step("first"), fan, _step("last")])
    await _run_steps(queue, 1)
    a, b, c = sorted(await _take(queue), key=lambda t: t.task_id)
    await queue.acknowledge(a.task_id, "A")
    await queue.fail(b.task_id, "boom", retry=False)
    assert (await queue.get_task("p")).status == TaskStatus.WORKING  # c still runs: no compensation yet
    await queue.acknowledge(c.task_id, "C")

    order = []
    for _ in range(3):
        task = await _one(queue)
        order.append((task.task_id, task.payload["saga"]["result"]))
        await queue.acknowledge(task.task_id)
    assert order == [("p.c2.3", "C"), ("p.c2.1", "A"), ("p.c1", {"done": "first"})]
    info = await queue.get_task("p")
    assert info.status == TaskStatus.COMPENSATED
    assert info.saga is not None
    assert [x.status for x in info.saga.steps[1].branches or []] == ["compensated", "failed", "compensated"]


async def test_a_dead_compensation_fails_the_saga_and_a_replay_resumes_it(queue: TaskQueue) -> None:
    await queue.start_saga("trip", _booking())
    await _run_steps(queue, 2)
    await queue.fail((await _one(queue)).task_id, "no cars", retry=False)
    hotel_undo = await _one(queue)
    await queue.fail(hotel_undo.task_id, "hotel api down", retry=False)

    info = await queue.get_task("trip")
    assert info.status == TaskStatus.FAILED
    assert str(info.error).startswith("compensation trip.c2 was dead-lettered")
    assert info.saga is not None
    assert info.saga.waiting_on == "trip.c2"
    assert info.saga.steps[1].status == "compensation_failed"
    assert [d.task_id for d in (await queue.inspect_dlq()).tasks] == ["trip.c2", "trip.s3"]
    assert await _take(queue) == []  # step 1 is not compensated past the dead one

    await queue.replay_dlq(["trip.c2"])
    await queue.acknowledge((await _one(queue)).task_id)
    flight_undo = await _one(queue)
    assert flight_undo.task_id == "trip.c1"
    await queue.acknowledge(flight_undo.task_id)
    assert (await queue.get_task("trip")).status == TaskStatus.COMPENSATED


async def test_cancelling_a_saga_mid_step_compensates_once_the_step_ends(queue: TaskQueue) -> None:
    await queue.start_saga("trip", _booking())
    await _run_steps(queue, 1)
    hotel = await _one(queue)

    cancelled = await queue.cancel("trip", "user changed plans")
    assert (cancelled.status, cancelled.changed) == ("cancel_requested", True)
    assert (await queue.cancel("trip")).changed is False
    await queue.acknowledge(hotel.task_id, {"done": "hotel"})  # the running step finished anyway

    undo = [await _one(queue) for _ in range(1)]
    assert undo[0].task_id == "trip.c2"  # the step that completed during the cancel is undone too
    await queue.acknowledge(undo[0].task_id)
    undo_flight = await _one(queue)
    assert undo_flight.task_id == "trip.c1"
    await queue.acknowledge(undo_flight.task_id)
    info = await queue.get_task("trip")
    assert (info.status, info.error) == (TaskStatus.CANCELLED, "user changed plans")


async def test_cancelling_a_saga_whose_step_is_queued_compensates_at_once(queue: TaskQueue) -> None:
    await queue.start_saga("trip", _booking())
    await _run_steps(queue, 1)

    cancelled = await queue.cancel("trip")

    assert cancelled.status == "compensating"
    assert (await queue.get_task("trip.s2")).status == TaskStatus.CANCELLED
    undo = await _one(queue)
    assert undo.task_id == "trip.c1"
    await queue.acknowledge(undo.task_id)
    assert (await queue.get_task("trip")).status == TaskStatus.CANCELLED


async def test_cancelling_a_saga_on_its_first_step_ends_it_cancelled(queue: TaskQueue) -> None:
    await queue.start_saga("s", _booking())
    assert (await queue.cancel("s")).status == "cancelled"
    assert await _take(queue) == []


async def test_cancelling_a_parallel_step_cancels_its_branches_and_waits_for_running_ones(queue: TaskQueue) -> None:
    await queue.start_saga("p", [_step("first"), SagaStep(parallel=[_step("a"), _step("b")])])
    await _run_steps(queue, 1)
    (a,) = await _take(queue, count=1)

    assert (await queue.cancel("p")).status == "cancel_requested"
    await queue.acknowledge(a.task_id, "A")  # the running branch completed: it is compensated too

    order = []
    for _ in range(2):
        task = await _one(queue)
        order.append(task.task_id)
        await queue.acknowledge(task.task_id)
    assert order == [f"{a.task_id.replace('.s2.b', '.c2.')}", "p.c1"]
    assert (await queue.get_task("p")).status == TaskStatus.CANCELLED


async def test_a_finished_saga_cannot_be_cancelled(queue: TaskQueue) -> None:
    await queue.start_saga("s", [_step("only")])
    await _run_steps(queue, 1)
    with pytest.raises(Exception, match="already completed"):
        await queue.cancel("s")


async def test_starting_a_saga_again_returns_the_existing_one(queue: TaskQueue) -> None:
    await queue.start_saga("s", _booking())
    await _run_steps(queue, 1)

    again = await queue.start_saga("s", [_step("other")])

    assert (again.duplicate, again.status) == (True, TaskStatus.WORKING)
    assert [t.task_id for t in await _take(queue)] == ["s.s2"]


async def test_a_saga_id_that_is_a_task_s_is_refused(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="taken")
    with pytest.raises(ConflictingRequest, match="taken"):
        await queue.start_saga("taken", [_step("x")])


async def test_a_step_without_compensation_is_skipped_when_compensating(queue: TaskQueue) -> None:
    await queue.start_saga("s", [_step("a"), _step("b", undo=False), _step("c")])
    await _run_steps(queue, 2)
    await queue.fail((await _one(queue)).task_id, "x", retry=False)
    assert (await _one(queue)).task_id == "s.c1"


async def test_retried_steps_move_the_saga_only_when_they_finish(queue: TaskQueue) -> None:
    await queue.start_saga("s", [_step("a"), _step("b")])
    first = await _one(queue)
    await queue.fail(first.task_id, "flaky")  # retried: the saga still waits on it
    again = await _one(queue)
    assert (again.task_id, again.attempt) == ("s.s1", 2)
    await queue.acknowledge(again.task_id, 1)
    assert (await _one(queue)).task_id == "s.s2"


BAD: list[tuple[Any, str]] = [
    ([], "a saga takes 1 to 50 steps, got 0"),
    ([_step("x")] * 51, "a saga takes 1 to 50 steps, got 51"),
    ([SagaStep("x")], "steps[0] needs task_type and payload, or parallel"),
    ([SagaStep(parallel=[_step("x")])], "steps[0].parallel takes 2 to 100 branches, got 1"),
    ([SagaStep(parallel=[_step("x")] * 101)], "steps[0].parallel takes 2 to 100 branches, got 101"),
    ([SagaStep("t", {}, parallel=[_step("x")] * 2)], "steps[0] has parallel: put task_type, payload and"),
    ([SagaStep(parallel=[_step("x"), SagaStep(parallel=[_step("y")] * 2)])], "a branch cannot have parallel"),
    ([SagaStep("t", {"saga": 1})], 'steps[0].payload must not have a "saga" key'),
    ([SagaStep("t", {}, SagaAction("u", {"saga": 1}))], 'steps[0].compensate.payload must not have a "saga"'),
    ([SagaStep("bad type!", {})], "invalid task type"),
]


@pytest.mark.parametrize(("steps", "message"), BAD)
async def test_bad_saga_definitions_are_refused_with_one_line_and_nothing_starts(
    queue: TaskQueue, steps: Any, message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await queue.start_saga("s", steps)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert await _take(queue) == []


async def test_a_bad_saga_id_is_refused(queue: TaskQueue) -> None:
    with pytest.raises(InvalidInput, match="1-118 characters"):
        await queue.start_saga("x" * 119, [_step("a")])
