"""start_saga over MCP: an agent starts a saga, workers see each step's "saga" progress through
read_tasks, get_task shows the saga's steps, cancel_task compensates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server, tool_names
from mcp_queue_server.settings import Role
from tests.test_server_tools import call, error

STEPS = [
    {"task_type": "reserve", "payload": {"sku": 1}, "compensate": {"task_type": "release", "payload": {"sku": 1}}},
    {
        "parallel": [
            {"task_type": "email", "payload": {"to": "a"}},
            {"task_type": "charge", "payload": {"eur": 5}, "compensate": {"task_type": "refund"}},
        ]
    },
    {"task_type": "ship", "payload": {}},
]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as c:
        yield c


async def _read(client: Client, count: int = 10) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = (await call(client, "read_tasks", count=count))["tasks"]
    return tasks


async def test_an_agent_runs_a_saga_to_completion_through_the_tools(client: Client) -> None:
    started = await call(
        client, "start_saga", saga_id="order-9", steps=STEPS, saga_data={"order": 9}, on_complete={"task_type": "done"}
    )
    assert started == {"saga_id": "order-9", "status": "working", "duplicate": False, "queue": "default"}
    again = await call(client, "start_saga", saga_id="order-9", steps=STEPS[:1])
    assert (again["duplicate"], again["status"]) == (True, "working")

    (reserve,) = await _read(client)
    assert reserve["payload"] == {
        "saga": {"saga_id": "order-9", "step": 1, "results": [], "saga_data": {"order": 9}},
        "sku": 1,
    }
    await call(client, "ack", task_id=reserve["task_id"], result={"hold": "h1"})
    branches = await _read(client)
    for b in branches:
        assert b["payload"]["saga"]["results"] == [{"hold": "h1"}]
        await call(client, "ack", task_id=b["task_id"], result=b["task_type"])
    (ship,) = await _read(client)
    assert ship["payload"]["saga"]["results"] == [{"hold": "h1"}, ["email", "charge"]]
    await call(client, "ack", task_id=ship["task_id"], result="shipped")

    info = await call(client, "get_task", task_id="order-9")
    assert info["status"] == "completed"
    assert [(s["task_id"], s["status"], s["result"]) for s in info["saga"]["steps"]] == [
        ("order-9.s1", "completed", {"hold": "h1"}),
        ("order-9.s2", "completed", ["email", "charge"]),
        ("order-9.s3", "completed", "shipped"),
    ]
    (done,) = await _read(client)
    assert done["task_id"] == "order-9.done"
    assert "saga" not in (await call(client, "get_task", task_id="order-9.s1"))  # plain tasks: no saga field


async def test_cancel_task_on_a_saga_compensates_what_completed(client: Client) -> None:
    await call(client, "start_saga", saga_id="o", steps=STEPS)
    (reserve,) = await _read(client)
    await call(client, "ack", task_id=reserve["task_id"], result={"hold": "h1"})

    cancelled = await call(client, "cancel_task", task_id="o", reason="customer left")
    assert cancelled["tasks"] == [{"task_id": "o", "status": "compensating", "changed": True, "error": None}]
    (release,) = await _read(client)
    assert (release["task_id"], release["payload"]["saga"]["result"]) == ("o.c1", {"hold": "h1"})
    await call(client, "ack", task_id=release["task_id"])
    info = await call(client, "get_task", task_id="o", wait_ms=1000)
    assert (info["status"], info["error"]) == ("cancelled", "customer left")


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([{"payload": {}}], "steps[0] needs task_type and payload, or parallel"),
        ([{"task_type": "bad type", "payload": {}}], "steps[0]: invalid task type"),
        ([{"parallel": [{"task_type": "a"}]}], "steps[0].parallel has 1 items, at least 2"),
        (
            [{"task_type": "a", "payload": {}, "compensate": {"task_type": "u", "extra": 1}}],
            "unknown field steps[0].compensate.extra: the valid ones are task_type, payload",
        ),
    ],
)
async def test_a_bad_saga_is_one_actionable_line(client: Client, steps: Any, expected: str) -> None:
    text = await error(client, "start_saga", saga_id="s", steps=steps)
    assert expected in text
    assert "\n" not in text
    assert await _read(client) == []


def test_producers_and_admins_start_sagas_workers_do_not() -> None:
    assert "start_saga" in tool_names(Role.PRODUCER)
    assert "start_saga" in tool_names(Role.ADMIN)
    assert "start_saga" not in tool_names(Role.WORKER)
