"""An ``echo`` tool over stdio, the MCP floor of the benchmarks, in three setups (the first argument):

* ``product`` (default): the real server (``build_server``, settings from ``MCP_QUEUE_*``) plus
  ``echo``, on the product's stdio loop, exactly as ``python -m mcp_queue_server`` runs;
* ``stock``: a bare ``MCPServer`` with only ``echo``, on the SDK's own stdio transport
  (``run_stdio_async``): what the SDK itself costs per call;
* ``loop``: the same bare server on the product's stdio loop: the loop's own cost beside ``stock``.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

import anyio
from mcp.server import MCPServer
from pydantic import BaseModel

MODES = ("product", "stock", "loop")


class EchoOutput(BaseModel):
    data: Any = None


async def echo(data: Any = None) -> EchoOutput:
    """Return ``data`` unchanged (benchmark floor: the cost of a tool call itself)."""
    return EchoOutput(data=data)


def main(mode: str) -> None:
    from mcp_queue_server.server.transports import serve_stdio

    if mode in ("stock", "loop"):
        bare = MCPServer("echo")
        bare.add_tool(echo)
        anyio.run(bare.run_stdio_async if mode == "stock" else partial(serve_stdio, bare))
        return
    from mcp_queue_server.cli.main import load_settings
    from mcp_queue_server.logs import configure_logging
    from mcp_queue_server.server.app import build_server

    settings = load_settings([])
    server = build_server(settings)
    server.add_tool(echo)
    configure_logging(settings.log_level)
    anyio.run(serve_stdio, server)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "product")
