"""Canaries for the MCP SDK's private parts the server relies on (all reached in server/sdk_compat.py).

Each test states one behaviour the server needs from the SDK. When a newer SDK moves or
changes the part, the test fails naming the installed SDK version and what moved, so the
fix is one function in ``mcp_queue_server/server/sdk_compat.py`` (then widen the ``mcp`` pin).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from mcp import Client, types
from mcp.server import MCPServer
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventStore
from pydantic import BaseModel, ConfigDict, ValidationError

from mcp_queue_server.server import sdk_compat

SDK = importlib.metadata.version("mcp")


def moved(what: str) -> str:
    return (
        f"mcp {SDK} (tested: {sdk_compat.TESTED_SDK}.x): {what}; "
        "adapt mcp_queue_server/server/sdk_compat.py and the mcp pin in pyproject.toml"
    )


class Echoed(BaseModel):
    n: int


async def echo(n: int = 1) -> Echoed:
    """Return n."""
    return Echoed(n=n)


def _tool() -> Tool:
    return Tool.from_function(echo, structured_output=True)


def _strict(tool: Tool) -> type[BaseModel]:
    loose = sdk_compat.arg_model(tool)
    return type(loose.__name__, (loose,), {"model_config": ConfigDict(extra="forbid"), "__module__": __name__})


def test_the_sdk_is_the_minor_the_pin_names() -> None:
    assert SDK.startswith(f"{sdk_compat.TESTED_SDK}."), moved("a different minor is installed than was tested")


def test_the_argument_model_base_is_importable_from_the_utilities_module() -> None:
    try:
        module = importlib.import_module("mcp.server.mcpserver.utilities.func_metadata")
    except ImportError:
        raise AssertionError(moved("mcp.server.mcpserver.utilities.func_metadata is gone")) from None
    base = getattr(module, "ArgModelBase", None)
    assert isinstance(base, type), moved("func_metadata.ArgModelBase is gone")
    assert issubclass(base, BaseModel), moved("ArgModelBase is no longer a pydantic model")


def test_a_tool_s_generated_argument_model_is_reachable_and_describes_its_parameters() -> None:
    tool = _tool()

    model = getattr(getattr(tool, "fn_metadata", None), "arg_model", None)

    assert isinstance(model, type), moved("Tool.fn_metadata.arg_model is gone")
    assert list(sdk_compat.arg_model(tool).model_fields) == ["n"], moved("the argument model's fields changed")


async def test_a_replaced_argument_model_validates_the_next_call_and_is_published() -> None:
    tool = _tool()
    sdk_compat.replace_arg_model(tool, _strict(tool))
    server: MCPServer[Any] = MCPServer("canary", tools=[tool])

    async with Client(server) as client:
        (listed,) = (await client.list_tools()).tools
        good = await client.call_tool("echo", {"n": 2})
        unknown = await client.call_tool("echo", {"n": 2, "m": 3})

    assert listed.input_schema.get("additionalProperties") is False, moved("Tool.parameters is not the inputSchema")
    assert not good.is_error
    assert good.structured_content == {"n": 2}
    assert unknown.is_error, moved("fn_metadata.arg_model is no longer read when a call is validated")


def test_a_model_not_derived_from_the_generated_one_is_refused() -> None:
    class Other(BaseModel):
        n: int

    try:
        sdk_compat.replace_arg_model(_tool(), Other)
    except TypeError:
        return
    raise AssertionError("replace_arg_model accepted a model the SDK cannot call the tool with")


async def test_a_replaced_output_schema_is_the_one_clients_see() -> None:
    tool = _tool()
    derived = sdk_compat.output_schema(tool)
    assert derived is not None, moved("Tool.fn_metadata.output_schema is not derived from the return type")
    schema = {**derived, "description": "canary"}
    sdk_compat.replace_output_schema(tool, schema)
    server: MCPServer[Any] = MCPServer("canary", tools=[tool])

    async with Client(server) as client:
        (listed,) = (await client.list_tools()).tools
        result = await client.call_tool("echo", {"n": 5})

    assert listed.output_schema == schema, moved("fn_metadata.output_schema is no longer the published outputSchema")
    assert result.structured_content == {"n": 5}


def test_mcp_server_wraps_a_low_level_server_that_runs_on_given_streams() -> None:
    server: MCPServer[Any] = MCPServer("canary")

    assert hasattr(server, "_lowlevel_server"), moved("MCPServer._lowlevel_server is gone")
    lowlevel = sdk_compat.lowlevel_server(server)
    assert isinstance(lowlevel, Server), moved("MCPServer._lowlevel_server is not a mcp.server.lowlevel.Server")
    run = inspect.signature(lowlevel.run)
    assert list(run.parameters)[:3] == ["read_stream", "write_stream", "initialization_options"], moved(
        "Server.run(read_stream, write_stream, initialization_options) changed"
    )
    assert lowlevel.create_initialization_options().server_name == "canary", moved(
        "Server.create_initialization_options changed"
    )


def test_mcp_server_takes_the_version_it_publishes() -> None:
    assert "version" in inspect.signature(MCPServer).parameters, moved("MCPServer(version=...) is gone")


async def test_bad_arguments_arrive_as_a_tool_error_caused_by_the_validation_error() -> None:
    try:
        await _tool().run({"n": "x"}, context=None)  # type: ignore[arg-type]
    except Exception as exc:  # the canary names what it got
        caught: BaseException = exc
    else:
        raise AssertionError(moved("Tool.run accepted arguments its model refuses"))

    assert type(caught).__name__ == "ToolError", moved(f"bad arguments raise {type(caught).__name__}")
    assert isinstance(caught.__cause__, ValidationError), moved("the ToolError no longer carries the ValidationError")


async def oops(n: int = 1) -> Echoed:
    """Fail on purpose."""
    raise ToolError(f"n is {n}: try another")


async def test_a_queue_tool_speaks_one_line_of_its_own_and_writes_compact_json() -> None:
    tools = [sdk_compat.QueueTool.from_function(f, structured_output=True) for f in (echo, oops)]
    server: MCPServer[Any] = MCPServer("canary", tools=tools)

    async with Client(server) as client:
        bad = await client.call_tool("echo", {"n": "x"})
        own = await client.call_tool("oops", {"n": 2})
        good = await client.call_tool("echo", {"n": 3})

    assert bad.is_error
    assert bad.content[0].text == "n must be an integer, got a string", moved("Tool.run's errors changed shape")  # type: ignore[union-attr]
    assert own.content[0].text == "n is 2: try another", moved("a tool's ToolError is wrapped differently")  # type: ignore[union-attr]
    assert good.structured_content == {"n": 3}
    assert good.content[0].text == '{"n":3}', moved("convert_result no longer returns a CallToolResult")  # type: ignore[union-attr]


async def test_a_tool_request_reaches_its_connection_with_state_and_an_exit_stack() -> None:
    seen: list[object] = []
    server = MCPServer("canary")

    @server.tool()
    async def where(ctx: Context) -> str:
        """Report the connection."""
        seen.append(sdk_compat.request_connection(ctx.request_context))
        return "ok"

    async with Client(server, mode="legacy") as client:
        await client.call_tool("where", {})

    assert seen, moved("a tool call never ran")
    [connection] = seen
    assert isinstance(connection, Connection), moved("ServerSession._connection is no longer a Connection")
    assert isinstance(connection.state, dict), moved("Connection.state is gone")
    assert isinstance(connection.exit_stack, AsyncExitStack), moved("Connection.exit_stack is gone")


async def test_the_lowlevel_lifespan_is_what_a_session_enters_so_a_hook_around_it_sees_the_state() -> None:
    @asynccontextmanager
    async def lifespan(_: MCPServer[str]) -> AsyncIterator[str]:
        yield "the state"

    seen: list[object] = []

    @asynccontextmanager
    async def hook(state: object) -> AsyncIterator[None]:
        seen.append(state)
        yield

    server: MCPServer[str] = MCPServer("canary", lifespan=lifespan)
    sdk_compat.around_lifespan(server, hook)
    async with Client(server, mode="legacy") as client:
        await client.list_tools()

    assert seen == ["the state"], moved("the low-level server no longer enters its `lifespan` attribute")


def test_each_admitted_streamable_http_session_gets_the_event_store_given_for_its_id() -> None:
    stores: dict[str, EventStore] = {}

    def store_for(session_id: str) -> EventStore:
        stores[session_id] = _NoEvents()
        return stores[session_id]

    server = MCPServer("canary")
    server.streamable_http_app()
    manager = server.session_manager
    if not callable(getattr(manager, "_admit_session", None)):
        raise AssertionError(moved("StreamableHTTPSessionManager._admit_session is gone"))
    sdk_compat.give_sessions_event_stores(manager, store_for)
    transport = manager._admit_session(None)

    assert transport is not None
    assert transport.mcp_session_id in stores, moved("_admit_session no longer mints the session id")
    assert transport._event_store is stores[transport.mcp_session_id], moved(
        "StreamableHTTPServerTransport no longer reads its store from _event_store"
    )


class _NoEvents(EventStore):
    async def store_event(self, stream_id: str, message: object) -> str:
        return "0"

    async def replay_events_after(self, last_event_id: str, send_callback: object) -> None:
        return None


# -- MCP Tasks (server/tasks_ext.py): public hooks, but SDK behaviours the design rests on ---------


def test_the_sdk_routes_no_tasks_method_so_an_extension_may_bind_them() -> None:
    from mcp.server.extension import MethodBinding
    from mcp_types.methods import SPEC_CLIENT_METHODS

    from mcp_queue_server.server.tasks_ext import QueueTasks, TaskIdParams

    bound = {m.method for m in QueueTasks.methods(QueueTasks.__new__(QueueTasks))}
    assert bound == {"tasks/get", "tasks/result", "tasks/list", "tasks/cancel", "tasks/update"}, SDK
    assert not bound & SPEC_CLIENT_METHODS, f"mcp {SDK} now routes {bound & SPEC_CLIENT_METHODS} itself"
    MethodBinding("tasks/get", TaskIdParams, lambda ctx, params: None)  # type: ignore[arg-type,return-value]


def test_the_2025_11_25_tools_call_sieve_drops_a_create_task_result_so_the_middleware_answers_above_it() -> None:
    from mcp_types.methods import serialize_server_result

    task = {"taskId": "t", "status": "working", "createdAt": "x", "lastUpdatedAt": "x", "ttl": 1}
    try:
        sieved = serialize_server_result("tools/call", "2025-11-25", {"task": task})
    except ValidationError:
        return  # refused outright: the middleware is still needed
    assert "task" not in sieved, f"mcp {SDK} keeps CreateTaskResult through the sieve: the interceptor could answer"


async def test_a_subscribe_handler_on_the_lowlevel_server_is_declared_and_its_session_end_unwinds_the_exit_stack() -> (
    None
):
    # serve_resource_subscriptions registers on lowlevel_server(...) and cleans up on the exit stack.
    server = MCPServer("canary")

    @server.resource("task://{queue}/{task_id}")
    async def task(queue: str, task_id: str) -> str:
        return "{}"

    ended: list[str] = []

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        sdk_compat.request_connection(ctx).exit_stack.callback(ended.append, str(params.uri))
        return types.EmptyResult()

    sdk_compat.lowlevel_server(server).add_request_handler(
        "resources/subscribe", types.SubscribeRequestParams, subscribe
    )
    async with Client(server, mode="legacy") as client:
        declared = client.server_capabilities.resources
        await client.subscribe_resource("task://q/1")
        assert ended == [], moved("the exit stack unwound before the session ended")

    assert declared is not None, moved("resources is no longer declared")
    assert declared.subscribe is True, moved("resources.subscribe no longer follows the handler")
    assert ended == ["task://q/1"], moved("a session's end no longer unwinds its connection's exit stack")


async def test_a_notification_model_of_any_method_is_sent_on_the_request_s_stream_as_its_method_and_params() -> None:
    server: MCPServer[Any] = MCPServer("canary")
    seen: list[object] = []

    @server.tool()
    async def poke(ctx: Context) -> str:
        """Send one notification on this request's stream."""
        params = {"level": "info", "data": "canary"}
        await sdk_compat.send_stream_notification(ctx.request_context, "notifications/message", params)
        return "ok"

    async def heard(message: object) -> None:
        seen.append(message)

    async with Client(server, message_handler=heard) as client:
        await client.call_tool("poke", {})

    assert [type(m).__name__ for m in seen] == ["LoggingMessageNotification"], moved(
        "ServerSession.send_notification no longer sends the method and params of the model it is given"
    )
    assert seen[0].params.data == "canary"  # type: ignore[attr-defined]


def test_claiming_stdout_moves_the_wire_aside_and_points_fd_1_at_stderr_until_released() -> None:
    script = (
        "import os, sys\n"
        "from mcp_queue_server.server.sdk_compat import claim_stdout\n"
        "wire, release = claim_stdout()\n"
        "os.write(1, b'stray\\n')\n"
        "os.write(wire.fileno(), b'wire\\n')\n"
        "release()\n"
        "os.write(1, b'after\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=True)

    assert done.stdout == b"wire\nafter\n", moved("stdio._claim_fd no longer diverts fd 1 while claimed")
    assert b"stray" in done.stderr
