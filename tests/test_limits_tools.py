"""Limits through MCP: an admin sets them with set_limit, producers tag tasks with limit_key
(enqueue_task, enqueue_batch, fanout subtasks), queue_stats shows each key, and workers reading
through the server get held-back tasks only as room frees."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mcp import Client

from mcp_queue_server import Role, Settings
from mcp_queue_server.server.app import build_server
from tests.test_server_tools import call, error


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as c:
        yield c


async def test_an_admin_sets_a_limit_and_readers_get_one_task_of_the_key_at_a_time(client: Client) -> None:
    got = await call(client, "set_limit", limit_key="llm/openai", max_working=1, max_per_minute=100)
    assert got == {"limit_key": "llm/openai", "max_working": 1, "max_per_minute": 100, "existed": False}
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="a", limit_key="llm/openai")
    await call(
        client, "enqueue_batch", tasks=[{"task_type": "t", "payload": {}, "task_id": "b", "limit_key": "llm/openai"}]
    )
    await call(
        client,
        "fanout",
        parent_task_id="p",
        subtasks=[
            {"task_type": "t", "payload": {}, "task_id": "c", "limit_key": "llm/openai"},
            {"task_type": "u", "payload": {}, "task_id": "free"},
        ],
    )
    read = await call(client, "read_tasks", count=10)
    assert [t["task_id"] for t in read["tasks"]] == ["a", "free"]
    await call(client, "ack", task_id="free")  # (loads the ack script: see test_limits)
    stats = await call(client, "queue_stats")
    assert stats["limits"] == [
        {
            "key": "llm/openai",
            "max_working": 1,
            "max_per_minute": 100,
            "working": 1,
            "waiting": 2,
            "started_last_minute": 1,
        }
    ]
    assert (await call(client, "get_task", task_id="b"))["status"] == "queued"
    listed = await call(client, "list_tasks", state="queued")
    assert [t["task_id"] for t in listed["tasks"]] == ["b", "c"]
    acked = await call(client, "ack", task_id="a", read_next=5)
    assert [t["task_id"] for t in acked["next_tasks"]] == ["b"]
    assert (await call(client, "get_task", task_id="b"))["limit_key"] == "llm/openai"


async def test_both_null_removes_a_limit_and_the_held_tasks_go(client: Client) -> None:
    await call(client, "set_limit", limit_key="k", max_working=1)
    for i in range(3):
        await call(client, "enqueue_task", task_type="t", payload={}, task_id=f"t{i}", limit_key="k")
    assert len((await call(client, "read_tasks", count=10))["tasks"]) == 1
    assert (await call(client, "set_limit", limit_key="k"))["existed"] is True
    assert len((await call(client, "read_tasks", count=10))["tasks"]) == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"limit_key": "a b", "max_working": 1}, "limit_key"),
        ({"limit_key": "k", "max_working": 0}, "max_working"),
        ({"limit_key": "k", "max_per_minute": 1_000_001}, "max_per_minute"),
        ({"limit_key": "k", "max_working": "2"}, "max_working"),
    ],
)
async def test_a_bad_limit_is_one_actionable_line(client: Client, args: dict[str, object], needle: str) -> None:
    text = await error(client, "set_limit", **args)
    assert needle in text
    assert "\n" not in text
    assert (await call(client, "queue_stats"))["limits"] == []


async def test_only_admins_may_set_limits(settings: Settings) -> None:
    async with Client(build_server(settings.model_copy(update={"role": Role.PRODUCER}))) as producer:
        names = {t.name for t in (await producer.list_tools()).tools}
        assert "set_limit" not in names
        result = await producer.call_tool("set_limit", {"limit_key": "k", "max_working": 1})
        assert result.is_error
