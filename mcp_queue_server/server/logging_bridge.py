"""The MCP logging capability: the server's own log records, sent to the sessions that asked.

A client sends ``logging/setLevel``; from then on every record of the ``mcp_queue_server``
loggers at or above that level reaches it as a ``notifications/message`` (``level``,
``logger``, ``data``: the message text, never a traceback) on the session's standalone
channel: the GET stream on Streamable HTTP, stdout as a protocol message on stdio (nothing
else is ever written there). The logging call never waits for a client: each session has a
bounded queue that drops its oldest entries when the client reads too slowly (it is then told
how many were dropped), and a task of its own that sends them. Log messages name no secrets
(no tokens, no Redis URLs), so they are safe to forward; every session that asked receives the
records of the whole process, whichever session caused them.

A session asking for a level below the process's own (``--log-level``) lowers the package
logger's level while it lasts; stderr keeps printing only what ``--log-level`` says.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import anyio
from anyio.abc import TaskGroup
from mcp.server import MCPServer
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.types import EmptyResult, LoggingLevel, SetLevelRequestParams

from mcp_queue_server.core.keys import DEFAULT_QUEUE
from mcp_queue_server.server.sdk_compat import around_lifespan, lowlevel_server, request_connection

PACKAGE_LOGGER = "mcp_queue_server"
tool_logger = logging.getLogger("mcp_queue_server.server.tools")
P = ParamSpec("P")
R = TypeVar("R")

#: MCP (syslog) levels as Python logging levels.
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": 25,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": 60,
    "emergency": 70,
}

#: Entries waiting for one session; beyond it the oldest are dropped.
QUEUE_SIZE = 200
#: Longest one notification may wait for a slow client before the next is tried.
SEND_TIMEOUT_S = 5.0


def mcp_level(levelno: int) -> LoggingLevel:
    """The MCP level of a Python record level (the highest at or below it)."""
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= 25:
        return "notice"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(eq=False)
class Subscriber:
    """One session that asked for log messages: its level, its queue, how to send it one."""

    send: Send
    levelno: int
    pending: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=QUEUE_SIZE))
    dropped: int = 0
    wake: anyio.Event | None = None
    scope: anyio.CancelScope | None = None
    group: TaskGroup | None = None


class _Forward(logging.Handler):
    def __init__(self, bridge: LogBridge) -> None:
        super().__init__(logging.NOTSET)
        self._bridge = bridge

    def emit(self, record: logging.LogRecord) -> None:
        self._bridge.publish(record)


class _BelowConfigured(logging.Filter):
    """On stderr's handlers: drops package records below ``--log-level`` while a session has
    lowered the package logger's level."""

    def __init__(self, levelno: int) -> None:
        super().__init__()
        self.levelno = levelno

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.levelno or not record.name.startswith(PACKAGE_LOGGER)


class LogBridge:
    """Sessions that sent ``logging/setLevel``, and the tasks feeding them the package's records."""

    def __init__(self) -> None:
        self._sessions: dict[int, Subscriber] = {}
        self._groups: list[TaskGroup] = []
        self._handler = _Forward(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._quiet: _BelowConfigured | None = None
        self._package_level = logging.NOTSET  # the package logger's own level before a session lowered it

    def install(self, server: MCPServer[Any]) -> None:
        """Serve ``logging/setLevel`` (which declares the logging capability) and run the senders."""
        lowlevel_server(server).add_request_handler("logging/setLevel", SetLevelRequestParams, self.set_level)
        around_lifespan(server, self._running)

    # -- the session side (event loop) ---------------------------------------------------------

    async def set_level(self, ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
        connection = request_connection(ctx)
        session = self.subscribe(id(connection), LEVELS[params.level], _notifier(connection))
        if session is not None:
            connection.exit_stack.callback(self.unsubscribe, id(connection))
        return EmptyResult()

    def subscribe(self, key: int, levelno: int, send: Send) -> Subscriber | None:
        """Forward records at ``levelno`` and above through ``send`` (a new subscriber: returned).

        ``key`` names the session (its connection); asking again changes the level only.
        """
        session = self._sessions.get(key)
        if session is not None:
            session.levelno = levelno
            self._adjust_levels()
            return None
        session = Subscriber(send, levelno)
        self._sessions[key] = session
        if self._groups:
            self._start(session)
        self._adjust_levels()
        return session

    def unsubscribe(self, key: int) -> None:
        session = self._sessions.pop(key, None)
        if session is not None and session.scope is not None:
            session.scope.cancel()
        self._adjust_levels()

    def _start(self, session: Subscriber) -> None:
        session.scope = anyio.CancelScope()
        session.group = self._groups[-1]
        session.group.start_soon(self._send_forever, session, session.scope)

    async def _send_forever(self, session: Subscriber, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                session.wake = anyio.Event()  # before draining: a record added meanwhile sets it
                while session.pending or session.dropped:
                    if session.dropped:
                        dropped, session.dropped = session.dropped, 0
                        text = f"{dropped} log message(s) dropped: the client read them too slowly"
                        await self._send(session, {"level": "warning", "logger": PACKAGE_LOGGER, "data": text})
                    if session.pending:
                        await self._send(session, session.pending.popleft())
                await session.wake.wait()

    async def _send(self, session: Subscriber, params: dict[str, Any]) -> None:
        with anyio.move_on_after(SEND_TIMEOUT_S):
            await session.send(params)

    @asynccontextmanager
    async def _running(self, _state: Any) -> AsyncIterator[None]:
        """One lifespan entry (one per process; one per connection on SSE): its senders run here."""
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        package = logging.getLogger(PACKAGE_LOGGER)
        if not self._groups:
            package.addHandler(self._handler)
        try:
            async with anyio.create_task_group() as group:
                self._groups.append(group)
                try:
                    yield
                finally:
                    self._groups.remove(group)
                    group.cancel_scope.cancel()
                    if self._groups:  # SSE: the senders that ran in this entry move to a live one
                        for session in self._sessions.values():
                            if session.group is group:
                                self._start(session)
        finally:
            if not self._groups:
                package.removeHandler(self._handler)
                self._sessions.clear()
                self._adjust_levels()

    # -- the logging side (any thread) ---------------------------------------------------------

    def publish(self, record: logging.LogRecord) -> None:
        """Queue ``record`` for every session that asked for its level; never waits."""
        entry: dict[str, Any] | None = None
        for session in tuple(self._sessions.values()):
            if record.levelno < session.levelno:
                continue
            if entry is None:
                entry = {"level": mcp_level(record.levelno), "logger": record.name, "data": record.getMessage()}
            if len(session.pending) == QUEUE_SIZE:
                session.dropped += 1  # the deque drops the oldest entry itself
            session.pending.append(entry)
            self._wake(session)

    def _wake(self, session: Subscriber) -> None:
        wake = session.wake
        if wake is None:
            return  # its sender has not started yet: it drains the queue first
        if threading.get_ident() == self._loop_thread:
            wake.set()
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(wake.set)

    def _adjust_levels(self) -> None:
        """Let the package log as low as the lowest session asks, stderr staying at ``--log-level``."""
        package = logging.getLogger(PACKAGE_LOGGER)
        if self._quiet is not None:  # undo the previous lowering, to read the configured level
            package.setLevel(self._package_level)
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._quiet)
            self._quiet = None
        wanted = min((s.levelno for s in self._sessions.values()), default=logging.CRITICAL + 1)
        configured = package.getEffectiveLevel()
        if wanted < configured:
            self._quiet = _BelowConfigured(configured)
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._quiet)
            self._package_level = package.level
            package.setLevel(wanted)


def _notifier(connection: Connection) -> Send:
    async def send(params: dict[str, Any]) -> None:
        await connection.notify("notifications/message", params)  # never raises: dropped if the stream is gone

    return send


def logged(fn: Callable[P, Awaitable[R]], levelno: int) -> Callable[P, Awaitable[R]]:
    """``fn`` (a tool) logging each call at ``levelno``, with the queue it names (no other argument)."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        tool_logger.log(levelno, "tool %s called on queue %s", name, kwargs.get("queue", DEFAULT_QUEUE))
        return await fn(*args, **kwargs)

    return wrapper


def install_log_bridge(server: MCPServer[Any]) -> LogBridge:
    """Give ``server`` the logging capability: ``logging/setLevel`` and the records that follow it."""
    bridge = LogBridge()
    bridge.install(server)
    return bridge
