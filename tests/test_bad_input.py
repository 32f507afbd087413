"""Bad input, tool by tool: every case is an actionable error, the server answers the next
call, and the queue is unchanged. The cases are derived from each tool's published
inputSchema, so a new argument is covered without editing this file."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server, tool_names
from mcp_queue_server.settings import Role
from tests.test_stdio import StdioServer, server_env

#: Minimal valid arguments per tool (the required ones); the cases spoil one at a time.
VALID: dict[str, dict[str, Any]] = {
    "enqueue_task": {"task_type": "t", "payload": {}},
    "enqueue_batch": {"tasks": [{"task_type": "t", "payload": {}}]},
    "fanout": {"parent_task_id": "parent", "subtasks": [{"task_type": "t", "payload": {}}]},
    "read_tasks": {},
    "ack": {"task_id": "held"},
    "fail_task": {"task_id": "held", "error": "boom"},
    "extend_lease": {"task_id": "held", "lease_ms": 1000},
    "checkpoint": {"task_id": "held", "data": {}},
    "get_task": {"task_id": "held"},
    "queue_stats": {},
    "inspect_dlq": {},
    "replay_dlq": {"task_ids": ["dead"]},
    "purge_dlq": {"task_ids": ["dead"]},
    "recover_tasks": {},
    "cancel_task": {"task_id": "waiting"},
    "list_tasks": {"state": "queued"},
    "schedule_task": {"schedule_id": "s", "task_type": "t", "payload": {}, "every_ms": 60_000},
    "list_schedules": {},
    "remove_schedule": {"schedule_id": "s"},
    "set_limit": {"limit_key": "api", "max_working": 2},
    "start_saga": {"saga_id": "s", "steps": [{"task_type": "t", "payload": {}}]},
}
HUGE = 10**15
BAD_NAMES = ["", "a b", "new\nline", "q*", "q?", "[q]", "{q}", "a:b", "x" * 129, "\u00e9t\u00e9"]
DEEP: dict[str, Any] = {}
for _ in range(40):
    DEEP = {"d": DEEP}


ANY_JSON = {"object", "array", "string", "number", "boolean", "null"}


def _types(schema: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for option in schema.get("anyOf", [schema]):
        kinds = option.get("type", "any")
        out |= set(kinds) if isinstance(kinds, list) else {kinds}
    return out


def bad_values(schema: dict[str, Any], optional: bool = False) -> list[Any]:
    """Values the property's schema must refuse (null is leaving an optional argument out)."""
    types = _types(schema)
    if "any" in types or types >= ANY_JSON:
        return []  # any JSON is allowed (e.g. an ack's result)
    options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
    main = options[0] if options else schema
    nullable = "null" in types or (optional and "default" not in schema)
    out: list[Any] = [] if nullable else [None]
    if "integer" in types:
        out += ["5", True, 1.5, [1], -HUGE, HUGE]
    if "boolean" in types:
        out += ["true", 1, 0, None]
    if "string" in types:
        out += [5, True, ["x"]]
        if "pattern" in main:
            out += [name for name in BAD_NAMES if not re.search(main["pattern"], name)]
    if "object" in types:
        # (A JSON *string* holding an object is parsed by the SDK's client-compatibility shim.)
        out += ["not an object", [1], 5, DEEP, {"big": "x" * 70_000}]
    if "array" in types:
        out += ["x", {"a": 1}, 5]
        if main.get("minItems"):
            out.append([])
        if main.get("maxItems"):
            item = main["items"]
            filler: Any = "t1" if item.get("type") == "string" else {"task_type": "t", "payload": {}}
            out.append([filler] * (main["maxItems"] + 1))
    return [v for v in out if not (v is None and nullable)]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings.model_copy(update={"retry_backoff_ms": 0}))) as c:
        # Some state for "unchanged" to mean something: one waiting, one held, one dead task.
        for task_id in ("dead", "held", "waiting"):
            await c.call_tool("enqueue_task", {"task_type": "t", "payload": {}, "task_id": task_id})
        await c.call_tool("read_tasks", {"count": 2})
        await c.call_tool("fail_task", {"task_id": "dead", "error": "x", "retry": False})
        yield c


async def snapshot(client: Client) -> str:
    result = await client.call_tool("queue_stats", {})
    assert not result.is_error
    stats = dict(result.structured_content or {})
    stats.pop("oldest_waiting_age_ms", None)
    stats["consumers"] = [c["name"] for c in stats.get("consumers", [])]
    return json.dumps(stats, sort_keys=True)


#: What a model should never read in an error: the SDK's prefix, pydantic's dump and its links.
NOISE = ("Error executing tool", "validation error for", "[type=", "pydantic", "Input should be")


def actionable(tool: str, result: Any) -> str | None:
    """None when ``result`` is a one-line error that says something; else what is wrong with it."""
    if not result.is_error:
        return "accepted"
    text = result.content[0].text if result.content else ""
    if len(text) < 20:
        return f"bare error {text!r}"
    if "\n" in text:
        return f"several lines {text!r}"
    if any(noise in text for noise in NOISE):
        return f"noise in {text!r}"
    return None


@pytest.mark.parametrize("tool", tool_names(Role.ALL))
async def test_every_bad_argument_is_an_actionable_error_that_changes_nothing(client: Client, tool: str) -> None:
    schema = next(t for t in (await client.list_tools()).tools if t.name == tool).input_schema
    cases: list[tuple[str, dict[str, Any]]] = [
        ("unknown field", {**VALID[tool], "bogus": 1}),
        *(
            (f"missing {name}", {k: v for k, v in VALID[tool].items() if k != name})
            for name in schema.get("required", [])
        ),
    ]
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        values = bad_values(prop, optional=name not in required)
        cases += [(f"{name}={str(value)[:40]!r}", {**VALID[tool], name: value}) for value in values]
    before = await snapshot(client)
    problems = []
    for label, args in cases:
        with anyio.fail_after(10):
            result = await client.call_tool(tool, args)
        why = actionable(tool, result)
        if why:
            problems.append(f"{label}: {why}")
    assert problems == []
    assert await snapshot(client) == before
    assert len(cases) >= 5


@pytest.mark.parametrize(
    ("tool", "args", "says"),
    [
        ("ack", {"task_id": "waiting"}, "not leased to you"),
        ("ack", {"task_id": "dead"}, "is failed"),
        ("ack", {"task_id": "ghost"}, "not found"),
        ("fail_task", {"task_id": "waiting", "error": "x"}, "not leased to you"),
        ("extend_lease", {"task_id": "ghost", "lease_ms": 1000}, "not found"),
        ("checkpoint", {"task_id": "dead", "data": {}}, "not leased to you"),
        ("replay_dlq", {"task_ids": ["waiting"]}, "waiting is queued"),
        ("purge_dlq", {"task_ids": ["held"]}, "held is working"),
        ("get_task", {"task_id": "x" * 128}, "not found"),
        ("enqueue_task", {"task_type": "t", "payload": {"x": "y" * (64 * 1024)}}, "limit 64 KiB"),
        ("enqueue_task", {"task_type": "t", "payload": {"x": "y" * (5 * 1024 * 1024)}}, "limit 64 KiB"),
        ("read_tasks", {"count": 0}, "count is 0, at least 1"),
        ("read_tasks", {"block_ms": 20_001}, "block_ms is 20001, at most 20000: wait in several calls"),
    ],
)
async def test_each_refusal_says_what_was_wrong(client: Client, tool: str, args: dict[str, Any], says: str) -> None:
    before = await snapshot(client)
    result = await client.call_tool(tool, args)
    assert actionable(tool, result) is None
    assert says in result.content[0].text  # type: ignore[union-attr]
    assert await snapshot(client) == before


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.fixture
def portal_client(settings: Settings) -> Iterator[tuple[BlockingPortal, Client]]:
    """One server and client for all fuzz examples, run on a portal (hypothesis drives sync code)."""
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(Client(build_server(settings))) as c:
        yield portal, c


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_arguments_never_crash_the_server_or_give_a_bare_error(
    portal_client: tuple[BlockingPortal, Client], data: st.DataObject
) -> None:
    portal, client = portal_client
    tool = data.draw(st.sampled_from(tool_names(Role.ALL)))
    keys = st.sampled_from([*VALID[tool], "queue", "count", "task_ids", "all", "priority", "x"])
    args = data.draw(st.dictionaries(keys, JSON, max_size=4))
    args = {**VALID[tool], **args} if data.draw(st.booleans()) else args

    async def run() -> None:
        with anyio.fail_after(10):
            result = await client.call_tool(tool, args)
            if result.is_error:
                assert actionable(tool, result) is None, (args, result.content)
            assert not (await client.call_tool("queue_stats", {})).is_error

    portal.call(run)


async def test_a_malformed_line_and_invalid_utf8_on_stdio_leave_the_server_answering(
    settings: Settings, tmp_path: Any
) -> None:
    server = await StdioServer.start(server_env(settings, "garbage"), tmp_path / "stderr.log")
    try:
        assert server.process.stdin is not None
        await server.process.stdin.send(b'{"jsonrpc": "2.0", "id": 99, "method": \n')
        await server.process.stdin.send(b"\xff\xfe\xfd not utf-8 at all\n")
        await server.process.stdin.send(b'{"jsonrpc":"2.0","id":98,"method":"tools/call","params":{"name":\xc3\x28}}\n')
        stats = await server.call("queue_stats")
        assert stats["queue"] == "default"
        assert server.process.returncode is None
    finally:
        await server.terminate()
