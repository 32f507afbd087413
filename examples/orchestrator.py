"""An orchestrator that drives the queue through MCP: it spawns ``mcp-queue-server`` over
stdio with the ``mcp`` 2.x client, enqueues a task, reads it as a worker would, acks it with
a result and prints the queue's statistics.

    python examples/orchestrator.py

The server inherits this process's environment, so ``MCP_QUEUE_REDIS_URL`` (unset: the
embedded Redis) and the other ``MCP_QUEUE_*`` settings apply to it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult


def data(result: CallToolResult) -> dict[str, Any]:
    """A tool's structured result; a tool error (``is_error``) carries one line saying what to do."""
    if result.is_error or result.structured_content is None:
        raise SystemExit(f"tool error: {result.content[0].text if result.content else result}")  # type: ignore[union-attr]
    return dict(result.structured_content)


async def main() -> None:
    # `python -m mcp_queue_server` is the installed `mcp-queue-server` command, from this Python.
    server = StdioServerParameters(command=sys.executable, args=["-m", "mcp_queue_server"], env=dict(os.environ))
    async with Client(server) as client:
        task_id = data(await client.call_tool("enqueue_task", {"task_type": "summarise", "payload": {"doc": 42}}))[
            "task_id"
        ]
        print("enqueued", task_id)

        for task in data(await client.call_tool("read_tasks", {"count": 10, "block_ms": 1000}))["tasks"]:
            result = {"summary": f"document {task['payload'].get('doc')} in one line"}
            acked = data(await client.call_tool("ack", {"task_id": task["task_id"], "result": result}))
            print("acked", task["task_id"], acked["status"])

        done = data(await client.call_tool("get_task", {"task_id": task_id}))
        print("status", done["status"], "result", done["result"])
        print("totals", data(await client.call_tool("queue_stats", {}))["totals"])


if __name__ == "__main__":
    anyio.run(main)
