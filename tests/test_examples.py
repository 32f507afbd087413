"""The examples the README points to run as printed, against a real server and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mcp_queue_server import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_orchestrator_example_enqueues_reads_acks_and_prints_the_totals(settings: Settings) -> None:
    env = {
        **os.environ,
        "MCP_QUEUE_REDIS_URL": str(settings.redis_url_value()),
        "MCP_QUEUE_KEY_PREFIX": settings.key_prefix,
    }
    out = subprocess.run(
        [sys.executable, "examples/orchestrator.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    task_id = lines[0].removeprefix("enqueued ")
    assert f"acked {task_id} acked" in lines
    assert "status completed result {'summary': 'document 42 in one line'}" in lines
    assert any(line.startswith("totals {") and "'completed': 1" in line for line in lines)
