"""The tool list is paid for on every turn of every agent: it stays within a budget, and every
character in it is meant for the model reading it (no docstring indentation, no pydantic titles,
no $defs to chase, rules stated in the schema as well as in prose)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from mcp import Client
from mcp.types import ListToolsResult

from mcp_queue_server import Settings
from mcp_queue_server.server.app import INSTRUCTIONS, build_server

#: Name, title, description and inputSchema of every tool of role "all", as compact JSON. The
#: hard limit leaves room for the tools other issues add (schedule_task, list_schedules,
#: remove_schedule, start_saga, ...); the lean figure holds the 16 tools of today (the 14 of
#: issue 13, 9,799 characters, plus cancel_task and list_tasks) to ~710 characters each, leaving
#: over 4,000 characters of the hard limit to the rest of the wave.
#: Before issue 13: 19,224 characters (31,305 for the whole tools/list result).
MODEL_BUDGET = 16_000
#: Issue 15's deadline_ms (enqueue_task, and the task items of enqueue_batch and fanout) and the
#: schedule tools (schedule_task, list_schedules, remove_schedule): 13,058 for 19 tools, exactly
#: the 1,700 of the hard limit's rest that schedules and deadlines were given.
#: Issue 18's set_limit and limit_key (enqueue_task, the task items of enqueue_batch and fanout):
#: +883 of its 900 share.
#: start_saga (issue 15) took 1,486 of its 1,500-character share: 15,428 for 21 tools.
#: limit_key on start_saga's steps and branches and on schedule_task (issue 18): 15,547;
#: deadline_ms on start_saga's steps and branches (issue 15): 15,613.
#: queue_stats' cursor over every queue's pages (issue 17): 15,739.
LEAN_BUDGET = 15_739
TOOL_COUNT = 21
#: The whole tools/list result (with output schemas and annotations), as compact JSON. 26,000
#: held the 14 tools of issue 13 (24,998); cancel_task and list_tasks took it to 28,856. Output
#: schemas then lost their descriptions and defaults, and wrote nullable enums and objects as one
#: node (server/output_schema.py): 23,944 for the 16 tools, leaving room for the rest of the wave.
#: The three schedule tools and deadline_ms: 27,569. set_limit and limit_key: 29,607 (29,616 with
#: schedule_task's next_run_at nullable).
#: start_saga (1,945 with its output schema) and get_task's saga progress (~800): about 32,570.
#: limit_key on start_saga's steps, schedule_task and list_schedules' rows (issue 18): 32,737.
#: deadline_ms on start_saga's steps and branches (issue 15): about 32,820.
#: queue_stats' cursor and next_cursor (issue 17): 32,970.
LIST_BUDGET = 32_970


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture
async def listed(settings: Settings) -> AsyncIterator[ListToolsResult]:
    async with Client(build_server(settings)) as client:
        yield await client.list_tools()


def tools_of(listed: ListToolsResult) -> list[dict[str, Any]]:
    dumped: list[dict[str, Any]] = listed.model_dump(mode="json", by_alias=True, exclude_none=True)["tools"]
    return dumped


async def test_the_tool_list_fits_its_budget_with_room_for_the_tools_to_come(listed: ListToolsResult) -> None:
    tools = tools_of(listed)
    seen = compact([{k: t.get(k) for k in ("name", "title", "description", "inputSchema")} for t in tools])
    whole = compact(listed.model_dump(mode="json", by_alias=True, exclude_none=True))

    print(f"\n{len(tools)} tools: {len(seen)} characters the model reads, {len(whole)} in tools/list")
    assert len(tools) == TOOL_COUNT
    assert len(seen) <= LEAN_BUDGET <= MODEL_BUDGET
    assert len(whole) <= LIST_BUDGET


def _nodes(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(n for v in node.values() for n in _nodes(v))]
    if isinstance(node, list):
        return [n for v in node for n in _nodes(v)]
    return []


async def test_descriptions_are_flat_and_schemas_carry_no_titles_or_references(listed: ListToolsResult) -> None:
    for tool in tools_of(listed):
        assert tool["description"] == " ".join(tool["description"].split()), tool["name"]
        schema = tool["inputSchema"]
        for node in _nodes(schema):
            assert not {"title", "$defs", "$ref"} & set(node), (tool["name"], node)
        assert not {"oneOf", "anyOf", "allOf"} & set(schema), f"{tool['name']}: some hosts refuse these at the top"


async def test_every_argument_is_described_once_and_the_queue_in_the_instructions(listed: ListToolsResult) -> None:
    undescribed = [
        f"{tool['name']}.{name}"
        for tool in tools_of(listed)
        for name, prop in tool["inputSchema"]["properties"].items()
        if name != "queue" and not prop.get("description")
    ]

    assert undescribed == []
    assert 'queue name (default "default")' in INSTRUCTIONS


async def test_lease_bounds_are_in_the_schema_and_follow_the_settings(settings: Settings) -> None:
    short = settings.model_copy(update={"max_lease_ms": 90_000})
    async with Client(build_server(short)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        refused = await client.call_tool("extend_lease", {"task_id": "x", "lease_ms": 90_001})

    for name in ("read_tasks", "extend_lease"):
        assert tools[name].input_schema["properties"]["lease_ms"]["maximum"] == 90_000
    assert refused.content[0].text == (  # type: ignore[union-attr]
        "lease_ms is 90001, at most 90000: renew it before it runs out with extend_lease or checkpoint"
    )


async def test_ack_states_its_either_or_in_the_schema_and_types_its_result(listed: ListToolsResult) -> None:
    (ack,) = [t for t in tools_of(listed) if t["name"] == "ack"]
    check = Draft202012Validator(ack["inputSchema"])

    assert check.is_valid({"task_id": "a"})
    assert check.is_valid({"task_id": "a", "result": {"any": ["json", 1, None]}})
    assert check.is_valid({"task_ids": ["a", "b"]})
    assert not check.is_valid({})
    assert not check.is_valid({"task_id": "a", "task_ids": ["b"]})
    assert "type" in ack["inputSchema"]["properties"]["result"]


async def test_a_result_s_text_is_its_structured_content_as_compact_json(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("enqueue_task", {"task_type": "t", "payload": {"text": "héllo"}})
        stats = await client.call_tool("queue_stats", {})

    for done in (result, stats):
        text = done.content[0].text  # type: ignore[union-attr]
        assert text == compact(done.structured_content)
        assert "\n" not in text
