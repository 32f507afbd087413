"""``limits set|list|remove`` and ``enqueue --limit-key`` through the real CLI entry point."""

from __future__ import annotations

import json

from mcp_queue_server import Settings, TaskQueue
from tests.test_cli import cli


async def test_an_operator_sets_lists_and_removes_a_limit(settings: Settings, queue: TaskQueue) -> None:
    done = await cli(settings, "limits", "set", "llm", "--max-working", "1", "--max-per-minute", "30")
    assert done.code == 0, done.err
    assert done.err.strip() == "set the limit of llm in queue default"
    assert done.out.splitlines()[1].split() == ["llm", "1", "30", "0", "0", "0"]
    for i in range(3):
        assert (await cli(settings, "enqueue", "t", "--task-id", f"t{i}", "--limit-key", "llm")).code == 0
    assert len(await queue.read_messages(count=10)) == 1

    listed = await cli(settings, "limits", "list", "--json")
    assert listed.code == 0, listed.err
    assert json.loads(listed.out) == [
        {"key": "llm", "max_working": 1, "max_per_minute": 30, "working": 1, "waiting": 2, "started_last_minute": 1}
    ]
    removed = await cli(settings, "limits", "remove", "llm", "other")
    assert removed.code == 0, removed.err
    assert removed.err.splitlines() == ["removed the limit of llm", "other had no limit"]
    assert len(await queue.read_messages(count=10)) == 2


async def test_limits_set_without_a_limit_is_a_usage_error(settings: Settings) -> None:
    done = await cli(settings, "limits", "set", "llm")
    assert done.code == 2
    assert "--max-working" in done.err
    assert len(done.err.splitlines()) == 1


async def test_a_limit_out_of_bounds_exits_1_with_one_line(settings: Settings) -> None:
    done = await cli(settings, "limits", "set", "llm", "--max-working", "0")
    assert done.code in (1, 2)
    [line] = done.err.splitlines()
    assert "max_working must be between 1 and" in line
