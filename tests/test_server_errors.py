"""Bad input and failures reach the model as clear, actionable tool errors (never a bare one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client, MCPError

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server
from mcp_queue_server.testing import free_port


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def error(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    text: str = result.content[0].text  # type: ignore[union-attr]
    # One line of the server's own words: no SDK prefix, no pydantic dump.
    assert "\n" not in text
    assert not text.startswith("Error executing tool")
    assert len(text) > 20
    return text


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as c:
        yield c


ENQUEUE = {"task_type": "t", "payload": {}}


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("enqueue_task", {**ENQUEUE, "queue": "bad name"}, 'queue "bad name" is not allowed: use 1-64 characters'),
        ("enqueue_task", {**ENQUEUE, "queue": "a" * 65}, "queue (65 characters) is not allowed"),
        ("enqueue_task", {**ENQUEUE, "queue": "q:{x}*"}, 'queue "q:{x}*" is not allowed'),
        ("enqueue_task", {**ENQUEUE, "task_id": "has space"}, "use 1-128 characters from A-Z a-z 0-9 _ . -"),
        (
            "enqueue_task",
            {**ENQUEUE, "task_type": ""},
            'task_type "" is not allowed: use 1-128 characters from A-Z a-z 0-9 _ . : / -',
        ),
        ("enqueue_task", {**ENQUEUE, "priority": "5"}, "priority must be an integer, got a string"),
        ("enqueue_task", {**ENQUEUE, "priority": True}, "priority must be an integer, got a boolean"),
        ("enqueue_task", {**ENQUEUE, "priority": 1.5}, "priority must be an integer, got a number with a fraction"),
        ("enqueue_task", {**ENQUEUE, "priority": 10**7}, "priority is 10000000, at most 1000000"),
        ("enqueue_task", {**ENQUEUE, "delay_ms": -1}, "delay_ms is -1, at least 0"),
        ("enqueue_task", {**ENQUEUE, "max_attempts": 0}, "max_attempts is 0, at least 1"),
        ("enqueue_task", {"task_type": "t", "payload": [1]}, "payload must be an object, got an array"),
        ("enqueue_task", {"task_type": "t"}, "missing argument payload: pass an object"),
        ("enqueue_task", {**ENQUEUE, "priorty": 5}, "unknown argument priorty: did you mean priority?"),
        ("read_tasks", {"count": 0}, "count is 0, at least 1"),
        ("read_tasks", {"count": 101}, "count is 101, at most 100: read in several calls"),
        ("read_tasks", {"count": "3"}, "count must be an integer, got a string"),
        ("read_tasks", {"block_ms": 20_001}, "block_ms is 20001, at most 20000: wait in several calls"),
        ("read_tasks", {"block_ms": -1}, "block_ms is -1, at least 0"),
        ("read_tasks", {"lease_ms": 0}, "lease_ms is 0, at least 1"),
        ("read_tasks", {"lease_ms": 10**9}, "lease_ms is 1000000000, at most 3600000"),
        ("read_tasks", {"prefer_high_priority": "yes"}, "prefer_high_priority must be true or false, got a string"),
        ("read_tasks", {"lease": 1000}, "unknown argument lease: did you mean lease_ms?"),
        ("enqueue_batch", {"tasks": []}, "tasks is empty: pass at least 1"),
        ("enqueue_batch", {"tasks": [ENQUEUE] * 101}, "tasks has 101 items, at most 100: split it into several calls"),
        (
            "enqueue_batch",
            {"tasks": [{**ENQUEUE, "delay": 1}]},
            "unknown field tasks[0].delay: the valid ones are task_type, payload, priority, task_id",
        ),
        (
            "enqueue_batch",
            {"tasks": [{**ENQUEUE, "task_id": "x"}, {**ENQUEUE, "task_id": "x"}]},
            "task ids in one batch must be distinct",
        ),
        (
            "fanout",
            {"parent_task_id": "p", "subtasks": [{**ENQUEUE, "x": 1}]},
            "unknown field subtasks[0].x: the valid ones are task_type, payload, priority, task_id",
        ),
        (
            "fanout",
            {"parent_task_id": "p", "subtasks": [ENQUEUE], "on_complete": {"task_type": "m", "delay_ms": 5}},
            "unknown field on_complete.delay_ms",
        ),
        (
            "fanout",
            {"parent_task_id": "p", "subtasks": [ENQUEUE], "on_complete": {"task_type": "m", "payload": {"fanout": 1}}},
            'on_complete.payload must not have a "fanout" key',
        ),
        (
            "fanout",
            {"parent_task_id": "p", "subtasks": [ENQUEUE], "on_child_failure": "ignore"},
            'on_child_failure is "ignore": use fail_parent or continue',
        ),
        ("ack", {}, "pass either task_id (with an optional result) or task_ids"),
        ("ack", {"task_id": "a", "task_ids": ["a"]}, "pass either task_id (with an optional result) or task_ids"),
        ("ack", {"task_ids": ["a"], "result": 1}, "result goes with task_id"),
        ("ack", {"task_ids": []}, "task_ids is empty: pass at least 1"),
        ("fail_task", {"task_id": "a", "error": ""}, "error is empty"),
        ("fail_task", {"task_id": "a", "error": "x" * 4097}, "error is 4097 characters, at most 4096: shorten it"),
        ("checkpoint", {"task_id": "a", "data": {}, "ttl_seconds": 0}, "ttl_seconds is 0, at least 1"),
        ("inspect_dlq", {"count": 101}, "count is 101, at most 100: page on with next_cursor"),
        ("inspect_dlq", {"cursor": "*"}, 'cursor "*" is not allowed: pass the next_cursor of the previous page'),
        ("replay_dlq", {}, "pass either task_ids or all=true"),
        ("replay_dlq", {"task_ids": ["a"], "all": True}, "pass either task_ids or all=true"),
        ("purge_dlq", {"all": 1}, "all must be true or false, got an integer"),
        ("recover_tasks", {"min_idle_ms": 999}, "min_idle_ms is 999, at least 1000"),
        ("queue_stats", {"queue": ""}, 'queue "" is not allowed'),
    ],
)
async def test_bad_arguments_are_rejected_with_a_message_naming_the_problem(
    client: Client, tool: str, args: dict[str, Any], expected: str
) -> None:
    assert expected in await error(client, tool, args)


async def test_unknown_arguments_are_refused_and_the_schema_says_so(client: Client) -> None:
    tools = (await client.list_tools()).tools

    assert all(t.input_schema.get("additionalProperties") is False for t in tools)
    assert "unknown argument verbose: the valid ones are task_id, wait_ms, queue" in await error(
        client, "get_task", {"task_id": "x", "verbose": True}
    )


async def test_an_oversized_payload_is_refused_with_its_size_and_the_limit(client: Client) -> None:
    message = await error(client, "enqueue_task", {"task_type": "t", "payload": {"blob": "x" * 300 * 1024}})

    assert "payload is 300 KiB, limit 64 KiB" in message


async def test_an_oversized_result_or_checkpoint_is_refused(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="big")
    await call(client, "read_tasks")

    assert "result is 100 KiB, limit 64 KiB" in await error(client, "ack", {"task_id": "big", "result": "x" * 102_400})
    assert "checkpoint data is" in await error(client, "checkpoint", {"task_id": "big", "data": {"x": "y" * 70_000}})


async def test_the_payload_limit_follows_the_settings(settings: Settings) -> None:
    async with Client(build_server(settings.model_copy(update={"max_payload_bytes": 1024}))) as small:
        message = await error(small, "enqueue_task", {"task_type": "t", "payload": {"x": "y" * 2000}})

    assert "limit 1024 bytes" in message


@pytest.mark.parametrize(
    ("tool", "args", "name"),
    [
        ("enqueue_task", {"task_type": "t", "payload": nested(33)}, "payload"),
        ("enqueue_batch", {"tasks": [ENQUEUE, {"task_type": "t", "payload": nested(40)}]}, "tasks[1].payload"),
        ("fanout", {"parent_task_id": "p", "subtasks": [{"task_type": "t", "payload": nested(33)}]}, "subtasks[0]"),
        ("fanout", {"parent_task_id": "p", "subtasks": [ENQUEUE], "parent_task_data": nested(33)}, "parent_task_data"),
        ("ack", {"task_id": "a", "result": [nested(32)]}, "result"),
        ("checkpoint", {"task_id": "a", "data": nested(33)}, "data"),
    ],
)
async def test_json_nested_too_deep_is_refused(client: Client, tool: str, args: dict[str, Any], name: str) -> None:
    message = await error(client, tool, args)

    assert name in message
    assert "nested more than 32 levels deep" in message


async def test_json_at_the_depth_limit_is_accepted(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload=nested(32))


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("get_task", {"task_id": "nope"}),
        ("ack", {"task_id": "nope"}),
        ("fail_task", {"task_id": "nope", "error": "x"}),
        ("extend_lease", {"task_id": "nope"}),
        ("checkpoint", {"task_id": "nope", "data": {}}),
        ("replay_dlq", {"task_ids": ["nope"]}),
        ("purge_dlq", {"task_ids": ["nope"]}),
    ],
)
async def test_an_unknown_task_is_reported_as_not_found(client: Client, tool: str, args: dict[str, Any]) -> None:
    assert "task nope not found" in await error(client, tool, args)


async def test_working_on_a_task_you_do_not_hold_is_refused(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="free")

    for tool, args in [
        ("ack", {"task_id": "free"}),
        ("fail_task", {"task_id": "free", "error": "x"}),
        ("extend_lease", {"task_id": "free"}),
    ]:
        assert "task free is queued, not leased to you" in await error(client, tool, args)


async def test_replaying_a_task_that_is_not_dead_lettered_changes_nothing(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="alive")

    message = await error(client, "replay_dlq", {"task_ids": ["alive"]})

    assert "task alive is queued" in message


async def test_a_fanout_reusing_an_existing_task_id_for_a_subtask_is_refused(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={}, task_id="taken")

    message = await error(client, "fanout", {"parent_task_id": "p", "subtasks": [{**ENQUEUE, "task_id": "taken"}]})

    assert "task id taken is already in use" in message


async def test_an_unreachable_redis_gives_a_retryable_error_without_the_url(settings: Settings) -> None:
    port = free_port()
    down = Settings(**{**settings.model_dump(), "redis_url": f"redis://:hunter2@127.0.0.1:{port}/0"})

    async with Client(build_server(down)) as client:  # starts although Redis is down
        message = await error(client, "enqueue_task", ENQUEUE)
        stats = await error(client, "queue_stats", {})

    assert "queue store unavailable" in message
    assert message.endswith("(retryable)")
    assert "queue store unavailable" in stats
    for secret in ("hunter2", str(port), "127.0.0.1"):
        assert secret not in message


async def test_a_malformed_redis_url_is_reported_without_echoing_it(settings: Settings) -> None:
    bad = Settings(**{**settings.model_dump(), "redis_url": "mysql://user:hunter2@db/0"})

    async with Client(build_server(bad)) as client:
        message = await error(client, "get_task", {"task_id": "x"})

    assert "cannot open the queue store (ValueError); check MCP_QUEUE_REDIS_URL" in message
    assert "hunter2" not in message


async def test_reading_a_resource_of_an_invalid_queue_or_unknown_task_fails_clearly(client: Client) -> None:
    with pytest.raises(MCPError, match="not found"):
        await client.read_resource("task://default/nope")
    with pytest.raises(MCPError, match="invalid queue name"):
        await client.read_resource("queue://bad*name/stats")


async def test_an_unexpected_failure_reaches_the_model_as_a_clear_message_without_its_details() -> None:
    from mcp.server.mcpserver.exceptions import ToolError

    from mcp_queue_server.server.context import queue_errors

    @queue_errors
    async def crashes() -> None:
        raise RuntimeError("cannot reach redis://:hunter2@db.internal:6379")

    with pytest.raises(ToolError) as caught:
        await crashes()

    assert "internal error in the queue server" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None
