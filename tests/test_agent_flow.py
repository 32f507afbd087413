"""Two agents, two server processes, one Redis: a crashed agent's task reaches the other with its checkpoint."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from mcp_queue_server import Settings
from tests.test_stdio import ROOT, START_S, StdioServer, server_env


async def test_a_task_of_an_agent_killed_mid_work_resumes_on_another_agent_from_its_checkpoint(
    settings: Settings, tmp_path: Path
) -> None:
    # Agent A: driven with raw JSON-RPC so the test can SIGKILL its server process.
    agent_a = await StdioServer.start(server_env(settings, "agent-a"), tmp_path / "agent-a.log")
    try:
        await agent_a.call("enqueue_task", task_type="write_report", payload={"topic": "queues"}, task_id="report")
        [task] = (await agent_a.call("read_tasks", lease_ms=500))["tasks"]
        saved = await agent_a.call("checkpoint", task_id="report", data={"sections_done": 2})
        agent_a.process.send_signal(signal.SIGKILL)  # no shutdown, no release: a crash
        assert await agent_a.wait() == -signal.SIGKILL
    finally:
        await agent_a.process.aclose()
    assert (task["attempt"], saved["saved"]) == (1, True)

    # Agent B: an ordinary MCP client polling with short blocking reads until the lease runs out.
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_queue_server"], env=server_env(settings, "agent-b"), cwd=ROOT
    )
    with anyio.fail_after(START_S + 30):
        async with Client(params) as agent_b:
            resumed: list[dict[str, Any]] = []
            with anyio.fail_after(15):
                while not resumed:
                    read = await agent_b.call_tool("read_tasks", {"block_ms": 200, "lease_ms": 60_000})
                    assert read.structured_content is not None, read.content
                    resumed = read.structured_content["tasks"]
            [again] = resumed
            acked = await agent_b.call_tool("ack", {"task_id": "report", "result": {"sections": 5}})
            final = await agent_b.call_tool("get_task", {"task_id": "report"})

    assert again["task_id"] == "report"
    assert again["attempt"] == 2
    assert again["checkpoint"] == {"sections_done": 2}
    assert again["payload"] == {"topic": "queues"}
    assert acked.structured_content is not None
    assert acked.structured_content["status"] == "acked"
    assert final.structured_content is not None
    assert final.structured_content["status"] == "completed"
    assert final.structured_content["result"] == {"sections": 5}
