"""The logging capability: ``logging/setLevel``, then the server's own records as ``notifications/message``.

Real SDK clients on the handshake protocol (``logging/setLevel`` is gone from 2026-07-28):
in process, over stdio (where the notifications are protocol lines on stdout and stderr keeps
the ``--log-level`` it was given) and over Streamable HTTP.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import LoggingMessageNotificationParams

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server
from mcp_queue_server.server.logging_bridge import QUEUE_SIZE, LogBridge, mcp_level
from tests.test_http import http_server
from tests.test_stdio import ROOT, START_S, server_env

WAIT_S = 10


class Inbox:
    """A client's logging callback: every message, and a way to wait (bounded) for one."""

    def __init__(self) -> None:
        self.messages: list[LoggingMessageNotificationParams] = []
        self._arrived = anyio.Event()

    async def __call__(self, params: LoggingMessageNotificationParams) -> None:
        self.messages.append(params)
        self._arrived.set()

    async def wait_for(self, text: str) -> LoggingMessageNotificationParams:
        with anyio.fail_after(WAIT_S):
            while True:
                for message in self.messages:
                    if text in str(message.data):
                        return message
                self._arrived = anyio.Event()
                await self._arrived.wait()


async def test_a_session_at_debug_gets_the_log_line_of_its_tool_call(settings: Settings) -> None:
    inbox = Inbox()
    async with Client(build_server(settings), mode="legacy", logging_callback=inbox) as client:
        declared = client.server_capabilities.logging
        await client.set_logging_level("debug")
        await client.call_tool("enqueue_task", {"task_type": "t", "payload": {}})
        message = await inbox.wait_for("tool enqueue_task called")

    assert declared is not None
    assert (message.level, message.logger) == ("debug", "mcp_queue_server.server.tools")
    assert message.data == "tool enqueue_task called on queue default"


async def test_a_session_at_error_gets_nothing_at_info_while_one_at_info_does(settings: Settings) -> None:
    server = build_server(settings)
    at_info, at_error = Inbox(), Inbox()
    async with (
        Client(server, mode="legacy", logging_callback=at_info) as info_client,
        Client(server, mode="legacy", logging_callback=at_error) as error_client,
    ):
        await info_client.set_logging_level("info")
        await error_client.set_logging_level("error")
        await info_client.call_tool("purge_dlq", {"all": True})  # destructive: logged at info
        await at_info.wait_for("tool purge_dlq called")
        # Each session gets its records in order: once this later one has arrived, the info
        # record would have arrived before it had it been forwarded.
        logging.getLogger("mcp_queue_server.tests").error("end of the test's records")
        await at_error.wait_for("end of the test's records")

    assert [m.data for m in at_error.messages] == ["end of the test's records"]
    assert [m.level for m in at_error.messages] == ["error"]
    assert "tool purge_dlq called on queue default" in [m.data for m in at_info.messages]


async def test_sessions_that_did_not_ask_get_no_log_messages(settings: Settings) -> None:
    server = build_server(settings)
    asked, silent = Inbox(), Inbox()
    async with (
        Client(server, mode="legacy", logging_callback=asked) as asking,
        Client(server, mode="legacy", logging_callback=silent) as quiet,
    ):
        await asking.set_logging_level("debug")
        await quiet.call_tool("enqueue_task", {"task_type": "t", "payload": {}})
        await asked.wait_for("tool enqueue_task called")

    assert silent.messages == []


async def test_over_stdio_log_messages_are_protocol_messages_and_stderr_keeps_its_level(
    settings: Settings, tmp_path: Path
) -> None:
    inbox = Inbox()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_queue_server", "--log-level", "INFO"],
        env=server_env(settings, "stdio-log"),
        cwd=ROOT,
    )
    with (tmp_path / "stderr").open("w") as errlog, anyio.fail_after(START_S + WAIT_S):
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", logging_callback=inbox) as client:
            await client.set_logging_level("debug")
            await client.call_tool("enqueue_task", {"task_type": "t", "payload": {}})
            message = await inbox.wait_for("tool enqueue_task called")

    assert message.level == "debug"
    stderr = (tmp_path / "stderr").read_text()
    assert "serving role" in stderr  # INFO still printed
    assert "tool enqueue_task called" not in stderr  # DEBUG only went to the session that asked


async def test_over_streamable_http_log_messages_arrive_on_the_session_stream(settings: Settings) -> None:
    inbox = Inbox()
    async with http_server(settings, "streamable-http", token=None) as server, httpx2.AsyncClient(timeout=30) as http:
        with anyio.fail_after(START_S):
            transport = streamable_http_client(server.url, http_client=http)
            async with Client(transport, mode="legacy", logging_callback=inbox) as client:
                await client.set_logging_level("info")
                await client.call_tool("recover_tasks", {})
                message = await inbox.wait_for("tool recover_tasks called")

    assert (message.level, message.logger) == ("info", "mcp_queue_server.server.tools")


def test_a_client_that_reads_too_slowly_loses_the_oldest_messages_and_the_logging_call_never_waits() -> None:
    async def never_called(params: dict[str, object]) -> None:
        raise AssertionError("no sender runs outside a lifespan")

    bridge = LogBridge()
    subscriber = bridge.subscribe(1, logging.DEBUG, never_called)
    logger = logging.getLogger("mcp_queue_server.tests.flood")
    try:
        for n in range(QUEUE_SIZE + 5):
            bridge.publish(logger.makeRecord(logger.name, logging.INFO, __file__, 1, "line %d", (n,), None))
    finally:
        bridge.unsubscribe(1)

    assert subscriber is not None
    assert len(subscriber.pending) == QUEUE_SIZE
    assert subscriber.pending[0]["data"] == "line 5"
    assert subscriber.dropped == 5


def test_the_package_logger_lowers_its_level_only_while_a_session_wants_more() -> None:
    async def ignore(params: dict[str, object]) -> None:
        pass

    package = logging.getLogger("mcp_queue_server")
    before = package.getEffectiveLevel()
    bridge = LogBridge()
    bridge.subscribe(1, logging.DEBUG, ignore)
    during = package.getEffectiveLevel()
    bridge.unsubscribe(1)

    assert before > logging.DEBUG  # the tests' logging is not at debug
    assert during == logging.DEBUG
    assert package.getEffectiveLevel() == before


def test_python_levels_map_to_the_mcp_levels_at_or_below_them() -> None:
    assert [mcp_level(n) for n in (5, 10, 20, 25, 30, 40, 50, 60)] == [
        "debug",
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "critical",
    ]
