"""The real MCP server plus one trivial ``echo`` tool: the SDK's own floor on the same server.

Run over stdio exactly as ``python -m mcp_queue_server`` does (same settings from
``MCP_QUEUE_*``, same stdio loop); only the extra tool differs.
"""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel

from mcp_queue_server.cli.main import load_settings
from mcp_queue_server.logs import configure_logging
from mcp_queue_server.server.app import build_server
from mcp_queue_server.server.transports import serve_stdio


class EchoOutput(BaseModel):
    data: Any = None


def main() -> None:
    settings = load_settings([])
    server = build_server(settings)

    @server.tool()
    async def echo(data: Any = None) -> EchoOutput:
        """Return ``data`` unchanged (benchmark floor: the cost of a tool call itself)."""
        return EchoOutput(data=data)

    configure_logging(settings.log_level)
    anyio.run(serve_stdio, server)


if __name__ == "__main__":
    main()
