"""Recurring schedules: each slot fires exactly once, whoever fires it, and catch_up decides
what happens to the slots nobody fired in time. Time moves with the FakeClock only."""

from __future__ import annotations

import json

import anyio
import pytest
from mcp import Client

from mcp_queue_server import InvalidInput, NewSchedule, Role, Settings, Task, TaskQueue, TaskStatus, Worker
from mcp_queue_server.core.cadence import Cadence
from mcp_queue_server.limits import SCHEDULE_GRACE_MS
from mcp_queue_server.server.app import build_server
from mcp_queue_server.worker.context import TaskContext
from tests.conftest import FakeClock, QueueFactory
from tests.test_cli import cli
from tests.test_worker import Events, running

MIN = 60_000


async def scheduled_task_ids(queue: TaskQueue) -> list[str]:
    """Every task the schedules fired so far, in firing order (read and acked)."""
    tasks = await queue.read_messages(count=100)
    await queue.ack_many([t.task_id for t in tasks]) if tasks else None
    return [t.task_id for t in tasks]


async def test_an_interval_schedule_fires_one_task_per_slot_with_its_slot_in_the_payload(
    queue: TaskQueue, clock: FakeClock
) -> None:
    got = await queue.set_schedule(NewSchedule("tick", "ping", {"n": 1}, every_ms=10_000))
    first = got.next_run_at
    assert (await queue.fire_due_schedules()).firings == []  # nothing is due yet

    clock.advance(10_000)
    [firing] = (await queue.fire_due_schedules()).firings
    assert (firing.slot, firing.task_id, firing.missed) == (first, f"tick-{first}", 0)
    clock.advance(10_000)
    await queue.fire_due_schedules()

    tasks = await queue.read_messages(count=10)
    assert [t.task_id for t in tasks] == [f"tick-{first}", f"tick-{first + 10_000}"]
    assert tasks[0].payload == {"n": 1, "schedule": {"schedule_id": "tick", "slot": first, "missed": 0}}
    s = await queue.get_schedule("tick")
    assert (s.last_run_at, s.last_task_id, s.next_run_at, s.fired) == (
        first + 10_000,
        f"tick-{first + 10_000}",
        first + 20_000,
        2,
    )


async def test_many_concurrent_firers_make_one_task_per_slot(make_queue: QueueFactory, clock: FakeClock) -> None:
    firers = [await make_queue(f"p{i}") for i in range(6)]
    await firers[0].set_schedule(NewSchedule("s", "t", {}, every_ms=1_000))

    for _ in range(5):
        clock.advance(1_000)
        async with anyio.create_task_group() as tg:
            for q in firers:
                for _ in range(3):
                    tg.start_soon(q.fire_due_schedules)

    ids = await scheduled_task_ids(firers[0])
    assert len(ids) == len(set(ids)) == 5
    assert (await firers[0].get_queue_stats()).totals["enqueued"] == 5


async def test_reads_fire_due_schedules_without_any_ticker(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.set_schedule(NewSchedule("s", "t", {}, every_ms=5_000))
    clock.advance(5_000)

    [task] = await queue.read_messages()

    assert task.payload["schedule"]["schedule_id"] == "s"


async def test_a_restart_neither_repeats_nor_loses_a_slot(make_queue: QueueFactory, clock: FakeClock) -> None:
    before = await make_queue("a")
    await before.set_schedule(NewSchedule("s", "t", {}, every_ms=1_000))
    clock.advance(1_000)
    await before.fire_due_schedules()
    await before.disconnect(release=False)

    after = await make_queue("b")  # a new process: nothing kept in memory
    await after.fire_due_schedules()  # the same slot again: nothing
    clock.advance(1_000)
    await after.fire_due_schedules()

    assert len(await scheduled_task_ids(after)) == 2


async def test_with_catch_up_skip_the_slots_missed_while_nothing_ran_fire_nothing(
    queue: TaskQueue, clock: FakeClock
) -> None:
    await queue.set_schedule(NewSchedule("hourly", "t", {}, cron="0 * * * *"))
    first = (await queue.get_schedule("hourly")).next_run_at
    assert first is not None

    # The store (or every process) was down from before the first slot to 3.5 hours later.
    clock.advance(first - await queue.server_now() + 3 * 3_600_000 + 30 * MIN)
    [firing] = (await queue.fire_due_schedules()).firings

    assert (firing.task_id, firing.missed) == (None, 4)  # 4 slots, each over the grace: none fires
    assert await scheduled_task_ids(queue) == []
    s = await queue.get_schedule("hourly")
    assert (s.next_run_at, s.missed, s.fired) == (first + 4 * 3_600_000, 4, 0)
    clock.advance(30 * MIN + 1_000)
    await queue.fire_due_schedules()
    assert await scheduled_task_ids(queue) == [f"hourly-{first + 4 * 3_600_000}"]  # the next one fires


async def test_with_catch_up_skip_a_short_gap_fires_only_the_latest_slot(queue: TaskQueue, clock: FakeClock) -> None:
    got = await queue.set_schedule(NewSchedule("s", "t", {}, every_ms=1_000))
    clock.advance(5_500)  # slots first .. first + 4000 passed; the latest is 500 ms old, within its interval

    await queue.fire_due_schedules()

    assert await scheduled_task_ids(queue) == [f"s-{got.next_run_at + 4_000}"]
    assert (await queue.get_schedule("s")).missed == 4


async def test_with_catch_up_once_the_missed_slots_fire_one_task_that_says_how_many(
    queue: TaskQueue, clock: FakeClock
) -> None:
    await queue.set_schedule(NewSchedule("hourly", "t", {}, cron="0 * * * *", catch_up="once"))
    first = (await queue.get_schedule("hourly")).next_run_at
    assert first is not None
    clock.advance(first - await queue.server_now() + 3 * 3_600_000 + 30 * MIN)

    await queue.fire_due_schedules()
    await queue.fire_due_schedules()  # nothing more

    [task] = await queue.read_messages(count=10)
    last = first + 3 * 3_600_000
    assert task.task_id == f"hourly-{last}"
    assert task.payload["schedule"] == {"schedule_id": "hourly", "slot": last, "missed": 3}
    assert (await queue.get_schedule("hourly")).next_run_at == last + 3_600_000


async def test_a_schedule_ends_after_end_at_and_starts_at_start_at(queue: TaskQueue, clock: FakeClock) -> None:
    now = await queue.server_now()
    start = now + 10_000
    await queue.set_schedule(NewSchedule("s", "t", {}, every_ms=2_000, start_at=start, end_at=start + 3_000))
    assert (await queue.get_schedule("s")).next_run_at == start

    for _ in range(4):
        clock.advance(2_000 if _ else 10_000)
        await queue.fire_due_schedules()

    assert await scheduled_task_ids(queue) == [f"s-{start}", f"s-{start + 2_000}"]
    assert (await queue.get_schedule("s")).next_run_at is None


async def test_setting_the_same_schedule_again_changes_nothing_and_a_new_definition_replaces_it(
    queue: TaskQueue, clock: FakeClock
) -> None:
    first = await queue.set_schedule(NewSchedule("s", "t", {"v": 1}, every_ms=10_000))
    clock.advance(3_000)
    again = await queue.set_schedule(NewSchedule("s", "t", {"v": 1}, every_ms=10_000))
    assert (again.unchanged, again.next_run_at) == (True, first.next_run_at)

    changed = await queue.set_schedule(NewSchedule("s", "t", {"v": 2}, every_ms=10_000))
    assert (changed.replaced, changed.unchanged) == (True, False)
    clock.advance(10_000)
    await queue.fire_due_schedules()
    [task] = await queue.read_messages()
    assert task.payload["v"] == 2


async def test_removed_schedules_fire_nothing_and_listing_pages_by_id(queue: TaskQueue, clock: FakeClock) -> None:
    for name in ("c", "a", "b"):
        await queue.set_schedule(NewSchedule(name, "t", {}, every_ms=1_000))
    assert await queue.remove_schedule("b") is True
    assert await queue.remove_schedule("b") is False

    page = await queue.list_schedules(count=1)
    rest = await queue.list_schedules(count=5, cursor=page.next_cursor)
    assert [s.schedule_id for s in page.schedules + rest.schedules] == ["a", "c"]
    assert rest.next_cursor is None
    clock.advance(1_000)
    await queue.fire_due_schedules()
    assert sorted(t.split("-")[0] for t in await scheduled_task_ids(queue)) == ["a", "c"]


async def test_scheduled_tasks_carry_the_schedules_deadline_and_attempts(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.set_schedule(NewSchedule("s", "t", {}, every_ms=1_000, deadline_ms=500, max_attempts=1))
    clock.advance(1_000)
    [firing] = (await queue.fire_due_schedules()).firings
    assert firing.task_id is not None
    clock.advance(2_000)

    info = await queue.get_task(firing.task_id)
    assert (info.status, info.max_attempts, info.overdue) == (TaskStatus.QUEUED, 1, True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "61 * * * *"}, "cron '61 * * * *': bad minute"),
        ({"cron": "* * * *"}, "must have 5 fields"),
        ({"cron": "0 0 * * * *"}, "must have 5 fields"),
        ({"every_ms": 999}, "every_ms is 999, at least 1000"),
        ({}, "give exactly one of cron"),
        ({"cron": "* * * * *", "every_ms": 5_000}, "give exactly one of cron"),
        ({"every_ms": 5_000, "catch_up": "all"}, "catch_up must be skip or once"),
        ({"every_ms": 5_000, "start_at": 10, "end_at": 5}, "end_at (5) must be after start_at (10)"),
        ({"every_ms": 5_000, "end_at": 1_000}, "no slot left before end_at"),
        ({"every_ms": 5_000, "payload": {"schedule": 1}}, 'must not have a "schedule" key'),
    ],
)
async def test_bad_schedules_are_refused_with_one_useful_line(
    queue: TaskQueue, fields: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"payload": {}} | fields
    with pytest.raises(InvalidInput) as caught:
        await queue.set_schedule(NewSchedule("s", "t", **args))  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert (await queue.list_schedules()).schedules == []


def test_cron_slots_are_whole_utc_minutes_both_ways() -> None:
    c = Cadence("*/15 * * * *", None, 0, None)
    t = 1_796_400_000_000  # a quarter hour
    assert c.after(t) == t + 15 * MIN
    assert c.after(t - 1) == t
    assert c.first_at_or_after(t) == t
    assert c.latest_at_or_before(t) == t
    assert c.latest_at_or_before(t + 14 * MIN) == t
    assert c.latest_at_or_before(t - 1) == t - 15 * MIN
    assert c.count_between(t, t + 60 * MIN) == 4
    assert SCHEDULE_GRACE_MS < 15 * MIN


async def test_agents_schedule_list_and_remove_through_the_tools(settings: Settings, clock: FakeClock) -> None:
    async with Client(build_server(settings)) as client:
        got = await client.call_tool(
            "schedule_task", {"schedule_id": "digest", "task_type": "mail/digest", "payload": {}, "cron": "0 8 * * *"}
        )
        bad = await client.call_tool(
            "schedule_task", {"schedule_id": "x", "task_type": "t", "payload": {}, "cron": "0 25 * * *"}
        )
        short = await client.call_tool(
            "schedule_task", {"schedule_id": "x", "task_type": "t", "payload": {}, "every_ms": 10}
        )
        listed = await client.call_tool("list_schedules", {})
        removed = await client.call_tool("remove_schedule", {"schedule_id": "digest"})
        again = await client.call_tool("list_schedules", {})

    assert got.structured_content is not None
    assert got.structured_content["next_run_at"] % 86_400_000 == 8 * 3_600_000
    assert bad.is_error
    assert bad.content[0].text.startswith("cron '0 25 * * *': bad hour")  # type: ignore[union-attr]
    assert short.is_error
    assert "every_ms" in short.content[0].text  # type: ignore[union-attr]
    assert listed.structured_content is not None
    [row] = listed.structured_content["schedules"]
    assert (row["schedule_id"], row["cron"], row["catch_up"], row["last_run_at"]) == (
        "digest",
        "0 8 * * *",
        "skip",
        None,
    )
    assert removed.structured_content == {"removed": True}
    assert again.structured_content == {"schedules": [], "next_cursor": None}


async def test_a_worker_may_list_schedules_but_not_set_them(settings: Settings) -> None:
    async with Client(build_server(settings.model_copy(update={"role": Role.WORKER}))) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert "list_schedules" in names
    assert not {"schedule_task", "remove_schedule"} & names


async def test_the_server_fires_schedules_while_it_runs(settings: Settings, queue: TaskQueue) -> None:
    # The real clock: the server's ticker sleeps until the slot, at most a second at a time.
    await queue.set_schedule(NewSchedule("s", "t", {}, every_ms=1_000, start_at=await queue.server_now() - 5_000))
    async with Client(build_server(settings)) as client:
        read = await client.call_tool("read_tasks", {"block_ms": 5_000})  # woken by the ticker's enqueue
    assert read.structured_content is not None
    [task] = read.structured_content["tasks"]
    assert task["task_id"].startswith("s-")
    s = await queue.get_schedule("s")
    assert s.fired >= 1
    assert s.missed == 0


async def test_the_cli_adds_lists_and_removes_schedules(settings: Settings, queue: TaskQueue) -> None:
    added = await cli(settings, "schedules", "add", "nightly", "backup", "--cron", "0 3 * * *", "--payload", '{"a": 1}')
    bad = await cli(settings, "schedules", "add", "x", "t", "--cron", "0 3 * *")
    listed = await cli(settings, "schedules", "list", "--json")
    removed = await cli(settings, "schedules", "remove", "nightly", "ghost")

    assert added.code == 0, added.err
    assert added.out.startswith("added schedule nightly; next run ")
    assert bad.code == 2
    assert "must have 5 fields" in bad.err
    [row] = json.loads(listed.out)
    assert (row["schedule_id"], row["cron"], row["payload"]) == ("nightly", "0 3 * * *", {"a": 1})
    assert removed.code == 1
    assert "removed schedule nightly" in removed.out
    assert "no schedule ghost" in removed.err
    assert (await queue.list_schedules()).schedules == []


async def test_a_worker_fires_the_schedules_of_its_queue_and_runs_their_tasks(make_queue: QueueFactory) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    start = await queue.server_now() + 300
    await queue.set_schedule(NewSchedule("s", "ping", {}, every_ms=1_000, start_at=start))
    events = Events()

    async def ping(task: Task, ctx: TaskContext) -> str:
        return "pong"

    async with running(Worker(queue, {"ping": ping}, on_event=events)):
        [acked] = await events.wait_for("acked")

    assert acked.task.task_id == f"s-{start}"
    assert (await queue.get_schedule("s")).fired >= 1


async def test_a_schedule_found_after_its_end_fires_its_last_slot_at_most(queue: TaskQueue, clock: FakeClock) -> None:
    start = await queue.server_now() + 1_000
    await queue.set_schedule(
        NewSchedule("s", "t", {}, every_ms=1_000, start_at=start, end_at=start + 2_000, catch_up="once")
    )
    clock.advance(1_000 + 2_000 + 5_000)  # every slot passed, and end_at too

    [firing] = (await queue.fire_due_schedules()).firings

    assert (firing.slot, firing.task_id, firing.missed) == (start + 2_000, f"s-{start + 2_000}", 2)
    s = await queue.get_schedule("s")
    assert (s.next_run_at, s.fired, s.missed) == (None, 1, 2)
