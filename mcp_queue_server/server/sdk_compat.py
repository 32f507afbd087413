"""Every use of a private part of the MCP SDK, each behind one small named function.

The SDK (``mcp`` 2.3) has no public way to do these; when a newer release moves one of
them, only this module changes, and ``tests/test_sdk_compat.py`` names what moved:

* a tool's argument model: read it, and install a stricter one (``Tool.fn_metadata.arg_model``
  typed as ``mcp.server.mcpserver.utilities.func_metadata.ArgModelBase``, plus the published
  ``Tool.parameters``), so unknown arguments are refused and caps follow the settings;
* a tool's published output schema (``Tool.fn_metadata.output_schema``), to publish a
  compact equivalent;
* the low-level server inside ``MCPServer`` (``MCPServer._lowlevel_server``), to run stdio
  with our own stdin reader, and the stdio transport's claim of fd 1 (``stdio._claim_fd``),
  to write the wire our own way with the same protection;
* the connection behind a request (``ServerSession._connection``), whose public ``session_id``,
  ``state`` and ``exit_stack`` make each MCP session a holder of its own, handing its tasks
  back when the session ends;
* how ``Tool.run`` reports a call (:class:`QueueTool`): an argument-validation failure as a
  ``ToolError`` caused by the ``ValidationError``, a tool's own ``ToolError`` wrapped in one
  prefixed ``Error executing tool <name>:``, and a structured result as a ``CallToolResult``
  whose text content is the same JSON indented by 2;
* the low-level server's ``lifespan`` (:func:`around_lifespan`), to run the logging bridge and
  the event store beside the queue;
* how the Streamable HTTP session manager admits a session and hands its transport the event
  store (``StreamableHTTPSessionManager._admit_session``, ``StreamableHTTPServerTransport._event_store``),
  to give each session a store of its own (:func:`give_sessions_event_stores`);
* a notification of a method the SDK does not type (``notifications/tasks``) on a request's own
  stream (:func:`send_stream_notification`): ``ServerSession.send_notification`` is typed for
  the SDK's own notifications but only dumps the model it is given and sends its method/params.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, BinaryIO

import pydantic_core
from mcp.server import MCPServer, stdio
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from mcp.server.streamable_http import EventStore, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.types import CallToolResult, Notification, TextContent
from pydantic import BaseModel, ValidationError

from mcp_queue_server.server.arg_errors import explain

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


def claim_stdout() -> tuple[BinaryIO, Callable[[], None] | None]:
    """The SDK stdio transport's claim of fd 1: the wire moved to a private descriptor and fd 1
    pointed at stderr while serving (stray prints miss the wire), and the function that undoes it.

    The transport makes the claim only when it writes stdout itself (``mcp.server.stdio._claim_fd``);
    a server writing the wire its own way claims it the same way here.
    """
    return stdio._claim_fd(1, sys.stdout, "wb", stdio._open_stdout_diversion)


def request_connection(ctx: ServerRequestContext[Any, Any]) -> Connection:
    """The per-client connection a request came on: one per MCP session on Streamable HTTP,
    one per stream on SSE and stdio, one per request on the stateless HTTP revision.

    The SDK builds the tool context with the ``ServerSession`` only; its connection (public
    class, public ``exit_stack`` unwound when the session ends) is a private attribute.
    """
    connection = ctx.session._connection
    if not isinstance(connection, Connection):
        raise TypeError("the request's session carries no Connection")
    return connection


class QueueTool(Tool):
    """A tool whose errors are one line of its own and whose text content is compact JSON.

    * Bad arguments: the SDK's text is ``str(ValidationError)`` (lines of pydantic dump); this
      says the same in one line (:func:`~mcp_queue_server.server.arg_errors.explain`).
    * A ``ToolError`` the tool raised reaches the model as its own text, without the SDK's
      ``Error executing tool <name>:`` prefix (the model knows which tool it called).
    * The text content of a structured result is ``structuredContent`` as compact JSON, not
      indented by 2: the same data in about two thirds of the tokens. The SDK has no setting
      for it; ``convert_result`` builds the indented text with no hook.

    Crashes (``UnexpectedToolError``) and protocol errors pass through unchanged.
    """

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            result = await super().run(arguments, context, convert_result=False)
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(explain(cause, self.parameters, self.name)) from cause
            if isinstance(cause, ToolError):
                raise ToolError(str(cause)) from cause
            raise
        if not convert_result:
            return result
        try:
            return self._converted(result)
        except Exception as exc:  # as Tool.run reports a result it cannot convert: a crash
            raise UnexpectedToolError(f"Error executing tool {self.name}") from exc

    def _converted(self, result: Any) -> Any:
        """``FuncMetadata.convert_result``'s ``CallToolResult``, with the structured content once as
        compact JSON for the text. A result of the tool's own output model skips the SDK's
        indented dump (replaced anyway) and its revalidation of a model pydantic already built."""
        meta = self.fn_metadata
        model = meta.output_model if meta.output_schema is not None else None
        if model is not None and type(result) is model and not meta.wrap_output:
            structured = result.model_dump(mode="json", by_alias=True)
            return CallToolResult(content=[TextContent(type="text", text=compact_json(structured))],
                                  structured_content=structured)  # fmt: skip
        converted = meta.convert_result(result)
        if (
            isinstance(converted, CallToolResult)
            and converted.structured_content is not None
            and not converted.is_error
        ):
            converted.content = [TextContent(type="text", text=compact_json(converted.structured_content))]
        return converted


def compact_json(value: Any) -> str:
    """``value`` as JSON without indentation or spaces, non-ASCII kept as is."""
    return pydantic_core.to_json(value).decode()


# -- added for the logging bridge and the event store (issue 13, part 4) -----------------------


def around_lifespan(server: MCPServer[Any], hook: Callable[[Any], AbstractAsyncContextManager[None]]) -> None:
    """Run ``hook(state)`` inside every entry of the server's lifespan (``state``: what it yields).

    ``MCPServer`` hands its lifespan to the low-level server at construction; the low-level
    server's ``lifespan`` attribute is what stdio, SSE and the Streamable HTTP session manager
    enter (once per process; once per connection on SSE).
    """
    lowlevel = lowlevel_server(server)
    inner = lowlevel.lifespan

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state, hook(state):
            yield state

    lowlevel.lifespan = lifespan


def give_sessions_event_stores(manager: StreamableHTTPSessionManager, store_for: Callable[[str], EventStore]) -> None:
    """Give each new Streamable HTTP session ``store_for(session_id)`` as its event store.

    The session manager hands every session's transport the one ``event_store`` it was built
    with, and the transport keys events by stream id only: the JSON-RPC id of the request, which
    every session reuses (0, 1, 2...). One store per session keeps a session's replay to its own
    events. The manager admits a session in ``_admit_session`` (session id minted there); the
    transport reads its store from ``_event_store`` each time it stores or replays an event.
    """
    admit = manager._admit_session

    def admit_with_store(requestor: Any) -> StreamableHTTPServerTransport | None:
        transport = admit(requestor)
        if transport is not None and transport.mcp_session_id is not None:
            transport._event_store = store_for(transport.mcp_session_id)
        return transport

    manager._admit_session = admit_with_store  # type: ignore[method-assign]


# -- added for task status on listen streams (issue 14, 2026-07-28 lane) -----------------------


class _AnyNotification(Notification[dict[str, Any], str]):
    """A notification of any method, with free-form params."""


async def send_stream_notification(ctx: ServerRequestContext[Any, Any], method: str, params: dict[str, Any]) -> None:
    """Send ``method`` with ``params`` on the stream of the request ``ctx`` serves.

    On Streamable HTTP that is the request's SSE response (a ``subscriptions/listen`` stream).
    """
    notification: Any = _AnyNotification(method=method, params=params)
    await ctx.session.send_notification(notification, related_request_id=ctx.request_id)
