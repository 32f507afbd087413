"""What a model reads when it gets a call wrong: one line naming the argument, the kind of
value or the limit, and what to do. Driven over stdio with the SDK client against the real
entry point (one server for every case), since that is the text an agent's host shows it."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import Client, StdioServerParameters

from mcp_queue_server import Settings, TaskQueue
from tests.test_stdio import ROOT, server_env

TaskSpec = dict[str, Any]
ENQUEUE: TaskSpec = {"task_type": "t", "payload": {}}
#: What an error must never show a model.
NOISE = ("Error executing tool", "pydantic", "[type=", "validation error for", "Input should be", "errors.pydantic.dev")


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


class Agent:
    """The SDK's stdio client on a blocking portal, so one server serves every test of the module."""

    def __init__(self, portal: BlockingPortal, client: Client, settings: Settings) -> None:
        self.portal, self.client, self.settings = portal, client, settings

    def result(self, tool: str, args: dict[str, Any]) -> Any:
        async def call() -> Any:
            with anyio.fail_after(20):
                return await self.client.call_tool(tool, args)

        return self.portal.call(call)

    def ok(self, tool: str, **args: Any) -> dict[str, Any]:
        result = self.result(tool, args)
        assert not result.is_error, result.content
        content: dict[str, Any] = result.structured_content
        return content

    def error(self, tool: str, args: dict[str, Any]) -> str:
        result = self.result(tool, args)
        assert result.is_error, result.structured_content
        (block,) = result.content
        text: str = block.text
        return text


@pytest.fixture(scope="module")
def agent(redis_url: str) -> Iterator[Agent]:
    settings = Settings(redis_url=redis_url, key_prefix=f"t{uuid.uuid4().hex[:12]}", retry_backoff_ms=0)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_queue_server"], env=server_env(settings, "agent"), cwd=ROOT
    )
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(Client(params)) as client:
        yield Agent(portal, client, settings)


def assert_one_plain_line(text: str, argument: str) -> None:
    assert "\n" not in text, text
    assert argument in text, text
    for noise in NOISE:
        assert noise not in text, text


#: (tool, arguments, the argument the error must name, the exact text or None).
MISTAKES: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("read_tasks", {"block_ms": 60_000}, "block_ms", "block_ms is 60000, at most 20000: wait in several calls"),
    ("read_tasks", {"lease": 5000}, "lease", "unknown argument lease: did you mean lease_ms?"),
    (
        "read_tasks",
        {"bogus": 1},
        "bogus",
        "unknown argument bogus: the valid ones are count, block_ms, prefer_high_priority, lease_ms, queue",
    ),
    ("read_tasks", {"count": "5"}, "count", "count must be an integer, got a string"),
    ("read_tasks", {"count": True}, "count", "count must be an integer, got a boolean"),
    ("read_tasks", {"count": 1.5}, "count", "count must be an integer, got a number with a fraction"),
    ("read_tasks", {"lease_ms": 10**9}, "lease_ms", None),
    ("enqueue_task", {"task_type": "t"}, "payload", "missing argument payload: pass an object"),
    (
        "enqueue_task",
        {**ENQUEUE, "queue": "bad name"},
        "queue",
        'queue "bad name" is not allowed: use 1-64 characters from A-Z a-z 0-9 _ . -',
    ),
    (
        "enqueue_task",
        {**ENQUEUE, "task_id": "x" * 129},
        "task_id",
        "task_id (129 characters) is not allowed: use 1-128 characters from A-Z a-z 0-9 _ . -",
    ),
    (
        "enqueue_task",
        {"task_type": "do it", "payload": {}},
        "task_type",
        'task_type "do it" is not allowed: use 1-128 characters from A-Z a-z 0-9 _ . : / -',
    ),
    ("enqueue_task", {**ENQUEUE, "priorty": 3}, "priorty", "unknown argument priorty: did you mean priority?"),
    ("enqueue_task", {"task_type": "t", "payload": [1]}, "payload", "payload must be an object, got an array"),
    ("enqueue_task", {"task_type": "t", "payload": nested(40)}, "payload", None),
    ("enqueue_task", {"task_type": "t", "payload": {"x": "y" * 100_000}}, "payload", None),
    (
        "fail_task",
        {"task_id": "a", "error": "x" * 5000},
        "error",
        "error is 5000 characters, at most 4096: shorten it",
    ),
    (
        "enqueue_batch",
        {"tasks": [ENQUEUE] * 101},
        "tasks",
        "tasks has 101 items, at most 100: split it into several calls",
    ),
    ("enqueue_batch", {"tasks": [{"payload": {}}]}, "tasks[0].task_type", None),
    (
        "fanout",
        {"parent_task_id": "p", "subtasks": [ENQUEUE], "on_child_failure": "ignore"},
        "on_child_failure",
        'on_child_failure is "ignore": use fail_parent or continue',
    ),
    ("purge_dlq", {"all": 1}, "all", "all must be true or false, got an integer"),
    ("ack", {"task_ids": ["ok", "not ok"]}, "task_ids[1]", None),
]


@pytest.mark.parametrize(("tool", "args", "argument", "exact"), MISTAKES, ids=[f"{t}-{a}" for t, _, a, _ in MISTAKES])
def test_a_mistaken_call_gets_one_plain_line_naming_the_argument_and_what_to_do(
    agent: Agent, tool: str, args: dict[str, Any], argument: str, exact: str | None
) -> None:
    text = agent.error(tool, args)

    assert_one_plain_line(text, argument)
    if exact is not None:
        assert text == exact


def test_json_nested_too_deep_and_an_oversized_payload_say_the_limit(agent: Agent) -> None:
    deep = agent.error("enqueue_task", {"task_type": "t", "payload": nested(40)})
    big = agent.error("enqueue_task", {"task_type": "t", "payload": {"x": "y" * 100_000}})

    assert deep == "payload is nested more than 32 levels deep: flatten it"
    assert big.startswith("payload is 98 KiB, limit 64 KiB: ")


def test_an_operation_on_a_task_another_worker_holds_says_for_how_many_seconds(agent: Agent) -> None:
    async def other_worker_takes(task_id: str) -> None:
        other = await TaskQueue(agent.settings, consumer="w2").connect()
        try:
            [task] = await other.read_messages(count=1, lease_ms=45_000, queue="held-elsewhere")
            assert task.task_id == task_id
        finally:
            await other.disconnect(release=False)  # w2 keeps the lease

    agent.ok("enqueue_task", task_type="t", payload={}, task_id="taken", queue="held-elsewhere")
    agent.portal.call(other_worker_takes, "taken")

    text = agent.error("ack", {"task_id": "taken", "result": 1, "queue": "held-elsewhere"})

    assert_one_plain_line(text, "taken")
    assert "leased by another worker (w2) for 4" in text  # 45 s, less the time the test took
    assert " s more; " in text
    assert "until" not in text


def test_every_lease_deadline_comes_with_the_milliseconds_left(agent: Agent) -> None:
    agent.ok("enqueue_task", task_type="t", payload={}, task_id="timed", queue="timed")

    [task] = agent.ok("read_tasks", lease_ms=30_000, queue="timed")["tasks"]
    extended = agent.ok("extend_lease", task_id="timed", lease_ms=50_000, queue="timed")
    saved = agent.ok("checkpoint", task_id="timed", data={"step": 1}, queue="timed")
    info = agent.ok("get_task", task_id="timed", queue="timed")

    assert 25_000 <= task["lease_ms_left"] <= 30_000
    assert 45_000 <= extended["lease_ms_left"] <= 50_000
    assert saved["lease_ms_left"] is not None
    assert 0 < info["lease_ms_left"] <= info["lease_expires_at"] - task["lease_expires_at"] + 30_000


def test_a_second_ack_with_another_result_says_the_first_result_was_kept(agent: Agent) -> None:
    agent.ok("enqueue_task", task_type="t", payload={}, task_id="twice", queue="twice")
    agent.ok("read_tasks", queue="twice")
    first = agent.ok("ack", task_id="twice", result="first", queue="twice")

    again = agent.result("ack", {"task_id": "twice", "result": "second", "queue": "twice"})
    info = agent.ok("get_task", task_id="twice", queue="twice")

    assert first["status"] == "acked"
    assert not again.is_error
    assert again.structured_content["status"] == "already_completed"
    assert "first result was kept" in again.content[0].text
    assert info["result"] == "first"
