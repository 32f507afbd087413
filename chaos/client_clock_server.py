"""The MCP server on its own clock: the clock_skew negative control (``--client-clock``).

``python -m chaos.client_clock_server`` is ``python -m mcp_queue_server`` with every script
run on this process's wall clock (the behaviour before issue 12), switched on in code here
and nowhere else. Under a skewed libfaketime clock it takes valid leases or keeps expired
ones, which the checker must count as stolen leases.
"""

from __future__ import annotations

from mcp_queue_server.cli.main import main
from mcp_queue_server.core.connection import run_on_client_clock_for_negative_control

if __name__ == "__main__":
    run_on_client_clock_for_negative_control()
    main()
