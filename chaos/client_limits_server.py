"""The MCP server counting limits outside the read script: the limits negative control
(``--client-limits``).

``python -m chaos.client_limits_server`` is ``python -m mcp_queue_server`` with every read first
counting each limit key's room in this process (read, then check: other processes deliver in
between) and the script trusting that count, switched on in code here and nowhere else. Several
workers then take a key past its max_working, which the checker must report.
"""

from __future__ import annotations

from mcp_queue_server.cli.main import main
from mcp_queue_server.core.key_limits import enforce_limits_in_client_for_negative_control

if __name__ == "__main__":
    enforce_limits_in_client_for_negative_control()
    main()
