"""A queue client in its own process, for tests that run it under libfaketime.

``python -m tests.clock_client URL PREFIX CONSUMER [--client-clock]`` reads once (lease
60 s) and prints ``{"wall_ms": <this process's clock>, "tasks": [[id, attempt], ...]}``.
``--client-clock`` is the negative control: the scripts run on this process's clock.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio
from pydantic import SecretStr

from mcp_queue_server import Settings, TaskQueue
from mcp_queue_server.core import connection


async def main(url: str, prefix: str, consumer: str) -> None:
    settings = Settings(redis_url=SecretStr(url), key_prefix=prefix, data_dir=Path("/nonexistent-test-data-dir"))
    queue = await TaskQueue(settings, consumer=consumer).connect()
    try:
        tasks = await queue.read_messages(count=10, lease_ms=60_000)
    finally:
        await queue.disconnect(release=False)
    print(json.dumps({"wall_ms": time.time_ns() // 1_000_000, "tasks": [[t.task_id, t.attempt] for t in tasks]}))


if __name__ == "__main__":
    if "--client-clock" in sys.argv[4:]:
        connection.run_on_client_clock_for_negative_control()
    anyio.run(main, *sys.argv[1:4])
