"""Every use of a private part of the MCP SDK, each behind one small named function.

The SDK (``mcp`` 2.3) has no public way to do these; when a newer release moves one of
them, only this module changes, and ``tests/test_sdk_compat.py`` names what moved:

* a tool's argument model: read it, and install a stricter one (``Tool.fn_metadata.arg_model``
  typed as ``mcp.server.mcpserver.utilities.func_metadata.ArgModelBase``, plus the published
  ``Tool.parameters``), so unknown arguments are refused and caps follow the settings;
* a tool's published output schema (``Tool.fn_metadata.output_schema``), to publish a
  compact equivalent;
* the low-level server inside ``MCPServer`` (``MCPServer._lowlevel_server``), to run stdio
  with our own stdin reader.
"""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer
from mcp.server.lowlevel import Server
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from pydantic import BaseModel

#: The SDK minor these private parts were checked against (pyproject pins ``mcp`` to it).
TESTED_SDK = "2.3"


def arg_model(tool: Tool) -> type[BaseModel]:
    """The pydantic model the SDK generated from the tool function's signature."""
    return tool.fn_metadata.arg_model


def replace_arg_model(tool: Tool, model: type[BaseModel]) -> None:
    """Validate the tool's calls with ``model`` (a subclass of :func:`arg_model`) and publish its schema.

    The SDK validates each call with ``fn_metadata.arg_model`` (read live) and lists
    ``Tool.parameters`` as the inputSchema; both must change together.
    """
    if not issubclass(model, ArgModelBase):
        raise TypeError(f"{model.__name__} must subclass the tool's generated argument model")
    tool.fn_metadata.arg_model = model
    tool.parameters = model.model_json_schema(by_alias=True)


def output_schema(tool: Tool) -> dict[str, Any] | None:
    """The outputSchema the SDK derived from the tool's return type (None: unstructured output)."""
    return tool.fn_metadata.output_schema


def replace_output_schema(tool: Tool, schema: dict[str, Any]) -> None:
    """Publish ``schema`` as the tool's outputSchema (results are still built from the return type).

    Call it before anything reads ``Tool.output_schema``: that property caches its first value.
    """
    tool.fn_metadata.output_schema = schema


def lowlevel_server(server: MCPServer[Any]) -> Server[Any]:
    """The low-level server ``MCPServer`` wraps, for running it on streams of our own."""
    return server._lowlevel_server
