"""Least privilege: the whole MCP flow runs as a Redis ACL user confined to the key prefix,
without dangerous commands; the same user cannot flush, list keys or touch other keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from mcp import Client
from pydantic import SecretStr

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server

#: The rule set the README recommends (``<prefix>`` replaced by the key prefix).
ACL_RULES = "on resetkeys ~<prefix>:* resetchannels -@all +@read +@write +@scripting +@connection -@dangerous +time"
#: The same without TIME (the rule of earlier releases): refused, the queue runs on Redis's clock.
ACL_RULES_WITHOUT_TIME = ACL_RULES.removesuffix(" +time")


@pytest.fixture(params=[ACL_RULES], ids=["readme-rules"])
def acl_rules(request: pytest.FixtureRequest) -> str:
    rules: str = request.param
    return rules


@pytest.fixture
def acl_settings(settings: Settings, acl_rules: str) -> Settings:
    url = settings.redis_url_value()
    assert url is not None
    user, password = f"q{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with redis.Redis.from_url(url) as admin:
        rules = acl_rules.replace("<prefix>", settings.key_prefix).split()
        admin.execute_command("ACL", "SETUSER", user, *rules, f">{password}")
    host_port = url.split("://", 1)[1]
    return settings.model_copy(update={"redis_url": SecretStr(f"redis://{user}:{password}@{host_port}")})


@pytest.fixture
async def client(acl_settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(acl_settings.model_copy(update={"retry_backoff_ms": 0}))) as c:
        yield c


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_every_tool_works_as_a_least_privilege_acl_user(client: Client) -> None:
    await call(client, "enqueue_task", task_type="t", payload={"n": 1}, task_id="a", priority=12)
    await call(client, "enqueue_batch", tasks=[{"task_type": "t", "payload": {}, "task_id": "b"}])
    await call(client, "fanout", parent_task_id="p", subtasks=[{"task_type": "c", "payload": {}, "task_id": "c1"}])
    tasks = (await call(client, "read_tasks", count=10, block_ms=50))["tasks"]
    assert [t["task_id"] for t in tasks] == ["a", "b", "c1"]
    await call(client, "checkpoint", task_id="a", data={"step": 1})
    await call(client, "extend_lease", task_id="a", lease_ms=5_000)
    await call(client, "ack", task_id="a", result={"ok": True})
    await call(client, "ack", task_ids=["c1"])
    await call(client, "fail_task", task_id="b", error="boom", retry=False)
    assert [t["task_id"] for t in (await call(client, "inspect_dlq"))["tasks"]] == ["b"]
    assert (await call(client, "replay_dlq", task_ids=["b"]))["replayed"] == ["b"]
    await call(client, "read_tasks")
    assert (await call(client, "read_tasks", block_ms=100))["tasks"] == []
    await call(client, "fail_task", task_id="b", error="again", retry=False)
    assert (await call(client, "purge_dlq", all=True))["purged"] == 1
    await call(client, "recover_tasks")
    await call(client, "recover_tasks", min_idle_ms=1_000)
    assert (await call(client, "get_task", task_id="p"))["status"] == "completed"
    assert (await call(client, "queue_stats"))["dead_letter"] == 0


@pytest.mark.parametrize("acl_rules", [ACL_RULES_WITHOUT_TIME])
async def test_a_user_without_time_is_told_to_allow_it(client: Client) -> None:
    result = await client.call_tool("enqueue_task", {"task_type": "t", "payload": {}})
    assert result.is_error
    assert "+time" in " ".join(getattr(c, "text", "") for c in result.content)


def test_the_acl_user_cannot_flush_list_keys_or_touch_other_prefixes(acl_settings: Settings) -> None:
    url = acl_settings.redis_url_value()
    assert url is not None
    with redis.Redis.from_url(url) as confined:
        for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("SET", "elsewhere:x", "1")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                confined.execute_command(*command)
