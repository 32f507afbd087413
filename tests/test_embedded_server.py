"""Embedded mode end to end: server processes with no Redis URL share one queue that survives restarts."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
START_S = 30


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short path: a unix socket path must fit in ~107 bytes.
    path = Path(tempfile.mkdtemp(prefix="mcpq-es-", dir="/tmp"))
    try:
        yield path
    finally:
        sock = path / "redis.sock"
        if sock.exists():  # a failed test may leave the embedded Redis running: stop it
            with suppress(redis.RedisError):
                redis.Redis(unix_socket_path=str(sock)).shutdown(nosave=False)
        shutil.rmtree(path, ignore_errors=True)


def _agent(data_dir: Path, consumer: str) -> Client:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "MCP_QUEUE_DATA_DIR": str(data_dir),
        "MCP_QUEUE_CONSUMER": consumer,
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_queue_server"], env=env, cwd=str(ROOT))
    return Client(params)


async def _call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_two_servers_without_a_url_share_one_queue_that_survives_a_restart(data_dir: Path) -> None:
    with anyio.fail_after(3 * START_S):
        async with AsyncExitStack() as stack:
            producer = await stack.enter_async_context(_agent(data_dir, "producer"))
            worker = await stack.enter_async_context(_agent(data_dir, "worker"))
            await _call(producer, "enqueue_task", {"task_type": "t", "payload": {"n": 1}, "task_id": "shared"})
            await _call(producer, "enqueue_task", {"task_type": "t", "payload": {"n": 2}, "task_id": "kept"})
            read = await _call(worker, "read_tasks", {"count": 1})
            assert [t["task_id"] for t in read["tasks"]] == ["shared"]
            await _call(worker, "ack", {"task_id": "shared", "result": {"ok": True}})
        # Both servers exited: the last one stopped the embedded Redis.
        assert not (data_dir / "redis.sock").exists()
        async with _agent(data_dir, "later") as later:
            done = await _call(later, "get_task", {"task_id": "shared"})
            assert (done["status"], done["result"]) == ("completed", {"ok": True})
            read = await _call(later, "read_tasks", {"count": 5})
            assert [(t["task_id"], t["payload"]) for t in read["tasks"]] == [("kept", {"n": 2})]
            await _call(later, "ack", {"task_id": "kept"})
    assert not (data_dir / "redis.sock").exists()
