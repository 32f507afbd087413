"""The design doc's ``example_usage.py``: producer, three workers, a crash, recovery, fanout, statistics.

Run it with nothing else installed (a temporary embedded Redis is started and removed):

    python examples/example_usage.py            # or: mcp-queue-server demo

Set ``MCP_QUEUE_REDIS_URL`` to run it on your own Redis instead (under a unique key prefix).
The code of the demo, meant to be read, is in ``mcp_queue_server/cli_demo.py``: the handlers
(``Demo.strategy``, ``Demo.variant``, ``Demo.tournament``), the producer (``Demo.produce``),
the workers (``Demo.process``) and the recovery pass (``Demo.recover_and_report``).
"""

from __future__ import annotations

import anyio

from mcp_queue_server import Settings
from mcp_queue_server.cli.demo import run_demo

if __name__ == "__main__":
    settings = Settings()  # MCP_QUEUE_* from the environment; no URL: a temporary embedded Redis
    if settings.redis_url is not None and not settings.redis_url.get_secret_value():
        settings = settings.model_copy(update={"redis_url": None})
    anyio.run(run_demo, settings)
