"""cancel_task and list_tasks over MCP (SDK in-memory client)."""

from __future__ import annotations

from mcp import Client

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server
from tests.test_server_tools import call, error


async def test_cancel_task_cancels_one_or_many_and_says_why_per_task_when_it_cannot(settings: Settings) -> None:
    async with Client(build_server(settings)) as c:
        for task_id in ("a", "b", "held", "done"):
            await call(c, "enqueue_task", task_type="t", payload={}, task_id=task_id)
        await call(c, "read_tasks", count=4)  # all four are now working
        await call(c, "ack", task_id="done")
        await call(c, "enqueue_task", task_type="t", payload={}, task_id="w")

        one = await call(c, "cancel_task", task_id="w", reason="not needed")
        many = await call(c, "cancel_task", task_ids=["held", "done", "w"])
        refused = await error(c, "cancel_task", task_id="done")
        lease = await call(c, "extend_lease", task_id="held")
        info = await call(c, "get_task", task_id="w")

    assert one["tasks"] == [{"task_id": "w", "status": "cancelled", "changed": True, "error": None}]
    held, done, w = many["tasks"]
    assert (held["status"], held["changed"]) == ("cancel_requested", True)
    assert (done["status"], done["changed"]) == ("completed", False)
    assert "already completed" in done["error"]
    assert (w["status"], w["changed"]) == ("cancelled", False)
    assert "already completed" in refused
    assert lease["cancel_requested"] is True
    assert (info["status"], info["error"]) == ("cancelled", "not needed")


async def test_list_tasks_pages_through_a_state_with_next_cursor(settings: Settings) -> None:
    async with Client(build_server(settings)) as c:
        for i in range(3):
            await call(c, "enqueue_task", task_type="t", payload={}, task_id=f"q{i}")
        first = await call(c, "list_tasks", state="queued", count=2)
        second = await call(c, "list_tasks", state="queued", count=2, cursor=first["next_cursor"])
        bad = await error(c, "list_tasks", state="delayed", cursor=first["next_cursor"])

    assert [t["task_id"] for t in first["tasks"]] == ["q0", "q1"]
    assert first["tasks"][0] == {
        "task_id": "q0",
        "task_type": "t",
        "status": "queued",
        "priority": 0,
        "attempt": 0,
        "holder": None,
        "created_at": first["tasks"][0]["created_at"],
        "lease_ms_left": None,
    }
    assert ([t["task_id"] for t in second["tasks"]], second["next_cursor"]) == (["q2"], None)
    assert "next_cursor" in bad
