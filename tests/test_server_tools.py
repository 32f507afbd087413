"""Every tool through the real SDK client (in memory) against a real Redis: the success paths."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server
from tests.test_recovery import age_pending_entries


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def error(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as c:
        yield c


@pytest.fixture
async def other(settings: Settings) -> AsyncIterator[Client]:
    """A second agent: its own server process stand-in with its own consumer name."""
    async with Client(build_server(settings.model_copy(update={"consumer": "agent-b"}))) as c:
        yield c


async def test_enqueue_task_returns_an_id_and_the_same_id_again_is_a_duplicate(client: Client) -> None:
    first = await call(client, "enqueue_task", task_type="summarize", payload={"doc": 1}, task_id="job-1")
    again = await call(client, "enqueue_task", task_type="summarize", payload={"doc": 1}, task_id="job-1")
    fresh = await call(client, "enqueue_task", task_type="summarize", payload={})

    assert first == {
        "task_id": "job-1",
        "duplicate": False,
        "status": "queued",
        "queue": "default",
        "replicas_confirmed": None,
    }
    assert again["duplicate"] is True
    assert fresh["task_id"] != "job-1"


async def test_enqueue_task_with_a_delay_waits_as_delayed(client: Client) -> None:
    done = await call(client, "enqueue_task", task_type="later", payload={}, delay_ms=60_000, max_attempts=5)

    assert done["status"] == "delayed"
    assert (await call(client, "get_task", task_id=done["task_id"]))["max_attempts"] == 5
    assert (await call(client, "read_tasks"))["tasks"] == []


async def test_enqueue_batch_returns_one_entry_per_task_in_order(client: Client) -> None:
    tasks = [{"task_type": "t", "payload": {"i": i}, "task_id": f"b{i}"} for i in range(3)]
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="b1")

    done = await call(client, "enqueue_batch", tasks=tasks, queue="batches")

    assert [(t["task_id"], t["duplicate"]) for t in done["tasks"]] == [("b0", False), ("b1", False), ("b2", False)]
    again = await call(client, "enqueue_batch", tasks=tasks, queue="batches")
    assert all(t["duplicate"] for t in again["tasks"])


async def test_read_tasks_leases_tasks_with_their_payload_and_first_attempt(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={"n": 1}, task_id="r1", priority=3)

    read = await call(client, "read_tasks", count=10, lease_ms=30_000)

    [task] = read["tasks"]
    assert task["task_id"] == "r1"
    assert task["payload"] == {"n": 1}
    assert task["priority"] == 3
    assert task["attempt"] == 1
    assert task["checkpoint"] is None
    assert task["parent_task_id"] is None
    info = await call(client, "get_task", task_id="r1")
    assert info["status"] == "working"
    assert info["lease_expires_at"] == task["lease_expires_at"]


async def test_read_tasks_on_an_empty_queue_returns_no_tasks_after_block_ms(client: Client) -> None:
    with anyio.fail_after(5):
        read = await call(client, "read_tasks", block_ms=50)

    assert read == {"queue": "default", "tasks": []}


async def test_read_tasks_serves_high_priority_first_unless_told_otherwise(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="low", priority=0)
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="high", priority=50)

    first = await call(client, "read_tasks")

    assert first["tasks"][0]["task_id"] == "high"


async def test_ack_stores_the_result_and_a_second_ack_reports_already_completed(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="a1")
    await call(client, "read_tasks")

    acked = await call(client, "ack", task_id="a1", result={"answer": 42})
    again = await call(client, "ack", task_id="a1", result={"answer": 42})

    assert acked["task_id"] == "a1"
    assert acked["status"] == "acked"
    assert acked["fanout"] is None
    assert again["status"] == "already_completed"
    info = await call(client, "get_task", task_id="a1")
    assert (info["status"], info["result"]) == ("completed", {"answer": 42})


async def test_bulk_ack_reports_every_task_on_its_own_including_errors(client: Client) -> None:
    for i in range(2):
        await call(client, "enqueue_task", task_type="t", payload={}, task_id=f"k{i}")
    await call(client, "read_tasks", count=2)

    done = await call(client, "ack", task_ids=["k0", "k1", "missing"])

    statuses = {t["task_id"]: (t["status"], t["error"]) for t in done["tasks"]}
    assert statuses["k0"] == ("acked", None)
    assert statuses["k1"] == ("acked", None)
    assert statuses["missing"][0] == "error"
    assert "not found" in statuses["missing"][1]
    assert done["task_id"] is None


async def test_fail_task_retries_until_told_not_to_then_dead_letters(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="f1")
    await call(client, "read_tasks")

    retried = await call(client, "fail_task", task_id="f1", error="flaky upstream")
    await call(client, "read_tasks")
    dead = await call(client, "fail_task", task_id="f1", error="bad input", retry=False)

    assert (retried["status"], retried["attempt"]) == ("queued", 1)
    assert (dead["status"], dead["attempt"], dead["retry_at"]) == ("failed", 2, None)
    info = await call(client, "get_task", task_id="f1")
    assert (info["status"], info["error"]) == ("failed", "bad input")


async def test_extend_lease_moves_the_deadline_forward(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="e1")
    [task] = (await call(client, "read_tasks", lease_ms=1000))["tasks"]

    extended = await call(client, "extend_lease", task_id="e1", lease_ms=600_000)

    assert extended["lease_expires_at"] > task["lease_expires_at"] + 500_000


async def test_checkpoint_renews_the_lease_and_reaches_the_next_attempt(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="c1")
    [task] = (await call(client, "read_tasks", lease_ms=1000))["tasks"]

    saved = await call(client, "checkpoint", task_id="c1", data={"step": 3})
    await call(client, "fail_task", task_id="c1", error="crashed")
    [again] = (await call(client, "read_tasks"))["tasks"]

    assert saved["saved"] is True
    assert saved["lease_expires_at"] >= task["lease_expires_at"]
    assert (again["attempt"], again["checkpoint"]) == (2, {"step": 3})
    assert (await call(client, "get_task", task_id="c1"))["checkpoint"] == {"step": 3}


async def test_checkpoint_of_a_task_nobody_holds_is_saved_without_a_lease(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="c2")

    saved = await call(client, "checkpoint", task_id="c2", data={"seed": 1}, ttl_seconds=60)

    assert saved == {"task_id": "c2", "saved": True, "lease_expires_at": None, "lease_ms_left": None}


async def test_fanout_gathers_subtask_results_under_the_parent_and_enqueues_the_continuation(client: Client) -> None:
    subtasks = [{"task_type": "part", "payload": {"i": i}, "task_id": f"p1-{i}"} for i in range(2)]
    made = await call(
        client,
        "fanout",
        parent_task_id="p1",
        subtasks=subtasks,
        parent_task_data={"title": "report"},
        on_complete={"task_type": "merge", "payload": {"style": "short"}, "priority": 20},
    )
    assert made == {
        "parent_task_id": "p1",
        "subtask_ids": ["p1-0", "p1-1"],
        "duplicate": False,
        "continuation_task_id": made["continuation_task_id"],
        "replicas_confirmed": None,
    }
    assert (await call(client, "fanout", parent_task_id="p1", subtasks=subtasks))["duplicate"] is True

    children = (await call(client, "read_tasks", count=10))["tasks"]
    assert {c["parent_task_id"] for c in children} == {"p1"}
    first = await call(client, "ack", task_id="p1-0", result="A")
    last = await call(client, "ack", task_id="p1-1", result="B")

    assert first["fanout"] == {
        "parent_task_id": "p1",
        "completed": 1,
        "failed": 0,
        "total": 2,
        "done": False,
        "finished_parent": False,
    }
    assert (last["fanout"]["done"], last["fanout"]["finished_parent"]) == (True, True)
    parent = await call(client, "get_task", task_id="p1")
    assert parent["status"] == "completed"
    assert parent["fanout"]["results"] == {"p1-0": "A", "p1-1": "B"}
    [merge] = (await call(client, "read_tasks"))["tasks"]
    assert merge["task_type"] == "merge"
    assert merge["payload"]["style"] == "short"
    assert merge["payload"]["fanout"]["results"] == {"p1-0": "A", "p1-1": "B"}
    assert merge["payload"]["fanout"]["parent_task_data"] == {"title": "report"}


async def test_fanout_with_continue_lets_the_parent_finish_despite_a_failed_subtask(client: Client) -> None:
    subtasks = [{"task_type": "part", "payload": {}, "task_id": f"q-{i}"} for i in range(2)]
    await call(client, "fanout", parent_task_id="q", subtasks=subtasks, on_child_failure="continue")
    await call(client, "read_tasks", count=2)

    await call(client, "fail_task", task_id="q-0", error="no luck", retry=False)
    await call(client, "ack", task_id="q-1", result=1)

    parent = await call(client, "get_task", task_id="q")
    assert parent["status"] == "completed"
    assert (parent["fanout"]["completed"], parent["fanout"]["failed"]) == (1, 1)


async def test_queue_stats_counts_waiting_in_flight_and_dead_letters(client: Client) -> None:
    for i in range(3):
        await call(client, "enqueue_task", task_type="t", payload={}, task_id=f"s{i}", queue="stats")
    await call(client, "read_tasks", count=2, queue="stats")
    await call(client, "fail_task", task_id="s0", error="x", retry=False, queue="stats")

    stats = await call(client, "queue_stats", queue="stats")

    assert stats["queue"] == "stats"
    assert (stats["available"], stats["in_flight"], stats["dead_letter"]) == (1, 1, 1)
    assert stats["totals"]["enqueued"] == 3


async def test_dead_letter_tools_page_through_replay_and_purge(client: Client) -> None:
    for i in range(3):
        await call(client, "enqueue_task", task_type="t", payload={"i": i}, task_id=f"d{i}")
    await call(client, "read_tasks", count=3)
    for i in range(3):
        await call(client, "fail_task", task_id=f"d{i}", error=f"boom {i}", retry=False)

    page = await call(client, "inspect_dlq", count=2)
    rest = await call(client, "inspect_dlq", count=2, cursor=page["next_cursor"])
    replayed = await call(client, "replay_dlq", task_ids=["d0"])
    purged = await call(client, "purge_dlq", all=True)

    seen = [t["task_id"] for t in page["tasks"] + rest["tasks"]]
    assert sorted(seen) == ["d0", "d1", "d2"]
    assert rest["next_cursor"] is None
    assert {t["error"] for t in page["tasks"] + rest["tasks"]} == {"boom 0", "boom 1", "boom 2"}
    assert replayed == {"replayed": ["d0"]}
    assert purged == {"purged": 2}
    [again] = (await call(client, "read_tasks"))["tasks"]
    assert again["task_id"] == "d0"
    assert (await call(client, "inspect_dlq"))["tasks"] == []


async def test_replay_dlq_all_puts_every_dead_task_back(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="z")
    await call(client, "read_tasks")
    await call(client, "fail_task", task_id="z", error="x", retry=False)

    assert await call(client, "replay_dlq", all=True) == {"replayed": ["z"]}


async def test_recover_tasks_with_min_idle_takes_a_task_back_from_its_holder(
    client: Client, settings: Settings
) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="h1")
    await call(client, "read_tasks", lease_ms=600_000)
    await age_pending_entries(settings, 5_000)  # untouched for 5 s

    recovered = await call(client, "recover_tasks", min_idle_ms=1_000)
    nothing = await call(client, "recover_tasks")

    assert recovered == {"requeued": ["h1"], "dead_lettered": []}
    assert nothing == {"requeued": [], "dead_lettered": []}
    assert (await call(client, "get_task", task_id="h1"))["status"] == "queued"


async def test_a_stale_holders_ack_is_rejected_with_what_to_do(
    client: Client, other: Client, settings: Settings
) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="stale")
    await call(client, "read_tasks", lease_ms=600_000)
    await age_pending_entries(settings, 5_000)
    await call(client, "recover_tasks", min_idle_ms=1_000)  # as if the lease had run out
    [task] = (await call(other, "read_tasks"))["tasks"]

    message = await error(client, "ack", task_id="stale", result="late")

    assert task["attempt"] == 2
    assert "leased by another worker (agent-b)" in message
    assert "drop this task" in message
    assert (await call(other, "ack", task_id="stale", result="on time"))["status"] == "acked"
    assert (await call(client, "get_task", task_id="stale"))["result"] == "on time"


async def test_resources_serve_stats_task_and_dead_letters_as_json(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="res1", queue="res")
    await call(client, "read_tasks", queue="res")
    await call(client, "fail_task", task_id="res1", error="gone", retry=False, queue="res")

    def body(result: Any) -> Any:
        [content] = result.contents
        assert content.mime_type == "application/json"
        return json.loads(content.text)

    stats = body(await client.read_resource("queue://res/stats"))
    task = body(await client.read_resource("task://res/res1"))
    dlq = body(await client.read_resource("dlq://res"))

    assert stats["dead_letter"] == 1
    assert (task["task_id"], task["status"]) == ("res1", "failed")
    assert [t["task_id"] for t in dlq["tasks"]] == ["res1"]


async def test_prompts_teach_the_worker_loop_and_dlq_triage_for_the_named_queue(client: Client) -> None:
    loop = await client.get_prompt("worker_loop", {"queue": "emails"})
    triage = await client.get_prompt("triage_dlq", {"queue": "emails"})

    loop_text = loop.messages[0].content.text  # type: ignore[union-attr]
    triage_text = triage.messages[0].content.text  # type: ignore[union-attr]
    for step in ("read_tasks(queue='emails'", "checkpoint", "ack", "fail_task", "not instructions"):
        assert step in loop_text
    for step in ("inspect_dlq(queue='emails'", "replay_dlq", "purge_dlq"):
        assert step in triage_text


async def test_a_cancelled_blocking_read_takes_no_task_enqueued_afterwards(client: Client, other: Client) -> None:
    with anyio.move_on_after(0.3) as waited:
        await client.call_tool("read_tasks", {"block_ms": 10_000})
    assert waited.cancelled_caught

    await call(client, "enqueue_task", task_type="t", payload={}, task_id="after-cancel")
    with anyio.fail_after(5):
        [task] = (await call(other, "read_tasks", block_ms=2000))["tasks"]

    assert (task["task_id"], task["attempt"]) == ("after-cancel", 1)


async def test_without_a_redis_url_the_server_runs_on_the_embedded_redis_and_stops_it_at_exit() -> None:
    with tempfile.TemporaryDirectory(prefix="mq") as tmp:  # short: the socket path is length-limited
        data_dir = Path(tmp)
        settings = Settings(redis_url=None, data_dir=data_dir, key_prefix="embedded")
        async with Client(build_server(settings)) as client:
            await call(client, "enqueue_task", task_type="t", payload={}, task_id="local")
            [task] = (await call(client, "read_tasks"))["tasks"]
            assert (data_dir / "redis.sock").exists()

        assert task["task_id"] == "local"
        assert not (data_dir / "redis.sock").exists()  # the last user left: the server shut down
