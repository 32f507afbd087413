"""``tasks cancel`` and ``tasks list`` through the real CLI entry point."""

from __future__ import annotations

import json

from mcp_queue_server import Settings, TaskQueue, TaskStatus
from tests.test_cli import cli

# -- tasks cancel ------------------------------------------------------------------------------


async def test_cancelling_a_queued_task_prints_cancelled_and_the_task_ends_cancelled(
    settings: Settings, queue: TaskQueue
) -> None:
    await queue.enqueue("t", {}, task_id="c1")

    done = await cli(settings, "tasks", "cancel", "c1", "--reason", "not needed")

    assert done.code == 0, done.err
    assert done.err == ""
    header, row = done.out.splitlines()
    assert header.split() == ["TASK", "ID", "STATUS", "CHANGE"]
    assert row.split() == ["c1", "cancelled", "changed"]
    info = await queue.get_task("c1")
    assert (info.status, info.error) == (TaskStatus.CANCELLED, "not needed")


async def test_cancelling_a_task_twice_reports_it_unchanged_and_exits_0(settings: Settings, queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="c1")
    await cli(settings, "tasks", "cancel", "c1")

    again = await cli(settings, "tasks", "cancel", "c1")

    assert again.code == 0, again.err
    assert again.out.splitlines()[1].split() == ["c1", "cancelled", "unchanged"]


async def test_cancelling_a_completed_task_exits_1_with_one_line_saying_why(
    settings: Settings, queue: TaskQueue
) -> None:
    await queue.enqueue("t", {}, task_id="done")
    await queue.read_messages(count=1)
    await queue.acknowledge("done", {"ok": True})

    refused = await cli(settings, "tasks", "cancel", "done")

    assert refused.code == 1
    assert refused.out == ""
    [line] = refused.err.splitlines()
    assert line.startswith("mcp-queue-server: error: cannot cancel done: ")
    assert "completed" in line
    assert (await queue.get_task("done")).status == TaskStatus.COMPLETED


async def test_cancelling_several_cancels_what_it_can_and_names_each_refused_id_on_stderr(
    settings: Settings, queue: TaskQueue
) -> None:
    await queue.enqueue("t", {}, task_id="c1")

    done = await cli(settings, "tasks", "cancel", "c1", "nope", "--json")

    assert done.code == 1
    results = {r["task_id"]: r for r in json.loads(done.out)}
    assert results["c1"] == {"task_id": "c1", "status": "cancelled", "changed": True, "error": None}
    assert (results["nope"]["status"], results["nope"]["changed"]) == ("not_found", False)
    [line] = done.err.splitlines()
    assert line.startswith("mcp-queue-server: error: cannot cancel nope: ")
    assert (await queue.get_task("c1")).status == TaskStatus.CANCELLED


async def test_cancel_without_a_task_id_is_a_usage_error(settings: Settings) -> None:
    done = await cli(settings, "tasks", "cancel")

    assert done.code == 2
    assert "TASK_ID" in done.err


# -- tasks list --------------------------------------------------------------------------------


async def test_tasks_list_pages_through_queued_tasks_with_the_printed_cursor(
    settings: Settings, queue: TaskQueue
) -> None:
    await queue.enqueue("t", {}, task_id="a")
    await queue.enqueue("t", {}, task_id="b")

    first = await cli(settings, "tasks", "list", "--state", "queued", "--count", "1")

    assert first.code == 0, first.err
    header, row, more = first.out.splitlines()
    assert header.split()[:4] == ["TASK", "ID", "TYPE", "STATUS"]
    assert row.split()[:3] == ["a", "t", "queued"]
    prefix = "more: mcp-queue-server tasks list --queue default --state queued --cursor "
    assert more.startswith(prefix)
    cursor = more.removeprefix(prefix)

    second = await cli(settings, "tasks", "list", "--state", "queued", "--count", "1", "--cursor", cursor)

    assert second.code == 0, second.err
    assert second.out.splitlines()[1].split()[:3] == ["b", "t", "queued"]
    assert all(not line.startswith("more:") for line in second.out.splitlines()[2:])


async def test_tasks_list_json_gives_the_tasks_and_the_next_cursor(settings: Settings, queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="a", priority=3)
    await queue.enqueue("other", {}, task_id="b")
    await queue.read_messages(count=1)

    working = json.loads((await cli(settings, "tasks", "list", "--state", "working", "--json")).out)
    typed = json.loads((await cli(settings, "tasks", "list", "--state", "queued", "--type", "other", "--json")).out)

    [task] = working["tasks"]
    assert set(task) == {
        "task_id", "task_type", "status", "priority", "attempt", "holder", "created_at", "lease_ms_left",
    }  # fmt: skip
    assert (task["task_id"], task["status"], task["holder"]) == ("a", "working", "w1")
    assert task["lease_ms_left"] > 0
    assert working["next_cursor"] is None
    assert [t["task_id"] for t in typed["tasks"]] == ["b"]


async def test_tasks_list_of_an_empty_state_says_so(settings: Settings) -> None:
    done = await cli(settings, "tasks", "list", "--state", "cancelled")

    assert done.code == 0, done.err
    assert done.out == "no cancelled task on this page\n"


async def test_tasks_list_with_an_unknown_state_or_a_bad_count_exits_2(settings: Settings) -> None:
    state = await cli(settings, "tasks", "list", "--state", "finished")
    count = await cli(settings, "tasks", "list", "--state", "queued", "--count", "0")

    assert (state.code, count.code) == (2, 2)
    assert "--state" in state.err
    assert "count" in count.err
