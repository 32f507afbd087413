"""What the server publishes follows its settings and its package: read caps and serverInfo."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from mcp import Client

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server


async def _read_tasks_schema(settings: Settings) -> dict[str, Any]:
    async with Client(build_server(settings)) as client:
        (tool,) = [t for t in (await client.list_tools()).tools if t.name == "read_tasks"]
    return tool.input_schema


async def test_read_tasks_publishes_the_default_caps_of_the_settings(settings: Settings) -> None:
    properties = (await _read_tasks_schema(settings))["properties"]

    assert properties["count"]["maximum"] == settings.max_read_count == 100
    assert properties["block_ms"]["maximum"] == settings.max_block_ms == 20_000


async def test_an_operator_s_lower_caps_are_published_and_enforced_by_the_schema(settings: Settings) -> None:
    tight = settings.model_copy(update={"max_block_ms": 5000, "max_read_count": 7})
    properties = (await _read_tasks_schema(tight))["properties"]
    async with Client(build_server(tight)) as client:
        too_long = await client.call_tool("read_tasks", {"block_ms": 6000})
        too_many = await client.call_tool("read_tasks", {"count": 8})
        within = await client.call_tool("read_tasks", {"count": 7, "block_ms": 0})

    assert (properties["block_ms"]["maximum"], properties["count"]["maximum"]) == (5000, 7)
    assert too_long.is_error
    assert too_many.is_error
    # The argument model's error (it names the bound), not the queue core's "must be between".
    assert "block_ms is 6000, at most 5000" in too_long.content[0].text  # type: ignore[union-attr]
    assert "count is 8, at most 7" in too_many.content[0].text  # type: ignore[union-attr]
    assert not within.is_error


async def test_caps_keep_the_rest_of_the_argument_strict(settings: Settings) -> None:
    tight = settings.model_copy(update={"max_block_ms": 5000})
    schema = await _read_tasks_schema(tight)
    async with Client(build_server(tight)) as client:
        as_text = await client.call_tool("read_tasks", {"block_ms": "10"})
        misspelt = await client.call_tool("read_tasks", {"block": 10})

    assert schema["additionalProperties"] is False
    assert schema["properties"]["block_ms"]["minimum"] == 0
    assert as_text.is_error
    assert misspelt.is_error


async def test_server_info_carries_the_package_version(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        info = client.server_info

    assert info is not None
    assert (info.name, info.version) == ("mcp-queue-server", importlib.metadata.version("mcp-queue-server"))


async def test_the_worker_loop_prompt_never_suggests_a_block_the_schema_refuses(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        usual = await client.get_prompt("worker_loop", {"queue": "emails"})
        (listed,) = [p for p in (await client.list_prompts()).prompts if p.name == "worker_loop"]
    async with Client(build_server(settings.model_copy(update={"max_block_ms": 5000}))) as client:
        tight = await client.get_prompt("worker_loop", {"queue": "emails"})

    assert "block_ms=10000" in usual.messages[0].content.text  # type: ignore[union-attr]
    assert "block_ms=5000" in tight.messages[0].content.text  # type: ignore[union-attr]
    assert [a.name for a in listed.arguments or []] == ["queue", "task_type"]
    assert listed.description is not None
    assert listed.description.startswith("How to process a queue as a worker")
