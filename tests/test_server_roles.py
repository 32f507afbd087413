"""What each role exposes, and what every tool tells the model about itself."""

from __future__ import annotations

import pytest
from mcp import Client

from mcp_queue_server import Role, Settings
from mcp_queue_server.server.app import build_server, tool_names

EXPECTED = {
    Role.PRODUCER: {
        "enqueue_task",
        "enqueue_batch",
        "fanout",
        "get_task",
        "queue_stats",
        "cancel_task",
        "list_tasks",
        "schedule_task",
        "list_schedules",
        "remove_schedule",
        "start_saga",
    },
    Role.WORKER: {"read_tasks", "ack", "fail_task", "extend_lease", "checkpoint", "get_task", "list_schedules"},
    Role.ADMIN: {
        "queue_stats",
        "inspect_dlq",
        "replay_dlq",
        "purge_dlq",
        "recover_tasks",
        "set_limit",
        "get_task",
        "cancel_task",
        "list_tasks",
        "schedule_task",
        "list_schedules",
        "remove_schedule",
        "start_saga",
    },
}
EVERY_TOOL = set().union(*EXPECTED.values())


@pytest.mark.parametrize("role", list(Role))
async def test_each_role_lists_exactly_its_tools(settings: Settings, role: Role) -> None:
    async with Client(build_server(settings.model_copy(update={"role": role}))) as client:
        listed = {t.name for t in (await client.list_tools()).tools}

    assert listed == EXPECTED.get(role, EVERY_TOOL)
    assert set(tool_names(role)) == listed


async def test_a_worker_cannot_call_an_admin_tool(settings: Settings) -> None:
    async with Client(build_server(settings.model_copy(update={"role": Role.WORKER}))) as client:
        result = await client.call_tool("purge_dlq", {"all": True})

    assert result.is_error
    assert "Unknown tool: purge_dlq" in result.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("role", "templates", "prompts"),
    [
        (Role.PRODUCER, {"queue://{queue}/stats", "task://{queue}/{task_id}"}, set()),
        (Role.WORKER, {"task://{queue}/{task_id}"}, {"worker_loop"}),
        (Role.ADMIN, {"queue://{queue}/stats", "task://{queue}/{task_id}", "dlq://{queue}"}, {"triage_dlq"}),
        (
            Role.ALL,
            {"queue://{queue}/stats", "task://{queue}/{task_id}", "dlq://{queue}"},
            {"worker_loop", "triage_dlq"},
        ),
    ],
)
async def test_resources_and_prompts_follow_the_role(
    settings: Settings, role: Role, templates: set[str], prompts: set[str]
) -> None:
    async with Client(build_server(settings.model_copy(update={"role": role}))) as client:
        listed = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        named = {p.name for p in (await client.list_prompts()).prompts}

    assert (listed, named) == (templates, prompts)


async def test_every_tool_has_a_title_a_description_hints_and_an_output_schema(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}

    for name, tool in tools.items():
        assert tool.title, name
        # Short (paid on every turn), flat (no docstring indentation), but saying something.
        assert 40 <= len(tool.description or "") <= 200, name
        assert "\n" not in (tool.description or ""), name
        assert (tool.output_schema or {}).get("type") == "object", name
        assert tool.annotations is not None, name
        assert tool.annotations.open_world_hint is False, name
        assert "queue" in tool.input_schema["properties"], name
        assert tool.input_schema["properties"]["queue"]["default"] == "default", name
    read_only = {n for n, t in tools.items() if t.annotations and t.annotations.read_only_hint}
    destructive = {n for n, t in tools.items() if t.annotations and t.annotations.destructive_hint}
    idempotent = {n for n, t in tools.items() if t.annotations and t.annotations.idempotent_hint}
    assert read_only == {"get_task", "queue_stats", "inspect_dlq", "list_tasks", "list_schedules"}
    assert destructive == {"purge_dlq", "recover_tasks", "cancel_task", "remove_schedule"}
    # enqueue_task makes a second task unless given a task_id: not idempotent as such.
    # schedule_task is keyed by its schedule_id: the same definition again changes nothing; start_saga
    # by its saga_id.
    assert idempotent == read_only | {
        "ack",
        "checkpoint",
        "fanout",
        "cancel_task",
        "schedule_task",
        "remove_schedule",
        "set_limit",
        "start_saga",
    }


async def test_descriptions_tell_a_worker_what_to_do_next_and_that_payloads_are_data(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}

    read = tools["read_tasks"].description or ""
    for hint in ("ack", "fail_task", "checkpoint", "not instructions"):
        assert hint in read


async def test_integer_arguments_are_published_with_their_bounds(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}

    props = tools["read_tasks"].input_schema["properties"]
    assert (props["count"]["minimum"], props["count"]["maximum"], props["count"]["default"]) == (1, 100, 1)
    assert (props["block_ms"]["minimum"], props["block_ms"]["maximum"]) == (0, 20_000)
    batch = tools["enqueue_batch"].input_schema
    assert (batch["properties"]["tasks"]["minItems"], batch["properties"]["tasks"]["maxItems"]) == (1, 100)
    assert batch["properties"]["tasks"]["items"]["additionalProperties"] is False
