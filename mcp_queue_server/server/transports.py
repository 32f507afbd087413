"""Serving the MCP server: stdio with graceful signals, Streamable HTTP and SSE with Host/Origin checks.

The Host/Origin allowlists and the token comparison are :mod:`mcp_queue_server.observe.http`'s,
shared with ``/metrics`` and ``/status``: one rule for every HTTP endpoint of the process.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import stat
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
import uvicorn
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import SessionMessage
from mcp.types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_queue_server.observe.http import (
    allowed_hosts,
    allowed_origins,
    is_loopback,
    serve_side,
    url_host,
)
from mcp_queue_server.observe.metrics import Metrics
from mcp_queue_server.server.event_store import RETRY_INTERVAL_MS, SessionEventStores
from mcp_queue_server.server.identity import BEARER, SESSION_IDLE_TIMEOUT_S, Principal, PrincipalTokenVerifier
from mcp_queue_server.server.sdk_compat import claim_stdout, lowlevel_server
from mcp_queue_server.settings import Role, Settings

# Re-exported: the entry point refuses a non-loopback bind without a token.
__all__ = ["StaticTokenVerifier", "is_loopback", "serve_http", "serve_stdio", "transport_security", "url_host"]

logger = logging.getLogger(__name__)


class StaticTokenVerifier(PrincipalTokenVerifier):
    """Accepts exactly one bearer token (principal ``bearer``), compared in constant time."""

    def __init__(self, token: str) -> None:
        super().__init__({token: Principal(BEARER, Role.ALL)})


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Host and Origin allowlists, always on: localhost, the bind address and the configured extras.

    Without explicit settings the SDK checks nothing when bound to 0.0.0.0, which leaves
    the server open to DNS rebinding from any web page the user visits.
    """
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=allowed_hosts(settings),
        allowed_origins=allowed_origins(settings),
    )


#: Largest request body :class:`CancelOnDisconnect` reads to find the request id (the SDK's own limit).
MAX_TRACKED_BODY = 4 * 1024 * 1024


class CancelOnDisconnect:
    """Streamable HTTP sessions: a client that drops a POST before its answer cancels that
    request, as if it had sent ``notifications/cancelled``.

    The SDK keeps serving a request whose POST is gone (with an event store the client could
    fetch the answer later; this server has none), so a blocking ``read_tasks`` whose client
    went away would still lease tasks nobody receives. This ASGI middleware notes the JSON-RPC
    id of each request POSTed to a session and, when the client disconnects before the answer
    was sent, POSTs ``notifications/cancelled`` for it to the same session with the same
    headers (credentials included): the read is cancelled and hands back what it leased.
    """

    def __init__(self, app: ASGIApp, path: str = "/mcp") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or ()) if scope["type"] == "http" else {}
        if scope.get("method") != "POST" or scope.get("path") != self.path or b"mcp-session-id" not in headers:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        first: Message = {"type": "http.request", "body": b"", "more_body": True}
        while first["type"] == "http.request" and first.get("more_body") and sum(map(len, chunks)) <= MAX_TRACKED_BODY:
            first = await receive()
            chunks.append(first.get("body", b""))
        body = b"".join(chunks)
        whole = first["type"] == "http.request" and not first.get("more_body")
        request_id = _request_id(body) if whole else None
        replayed, disconnected, answered = False, False, False

        async def replay() -> Message:
            nonlocal replayed, disconnected
            if not replayed:
                replayed = True
                if first["type"] != "http.request":
                    return first
                return {"type": "http.request", "body": body, "more_body": first.get("more_body", False)}
            message = await receive()
            disconnected = disconnected or message["type"] == "http.disconnect"
            return message

        async def watch(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True
            await send(message)

        try:
            await self.app(scope, replay, watch)
        finally:
            if request_id is not None and disconnected and not answered:
                with anyio.move_on_after(5, shield=True):
                    await self._cancel(scope, request_id)

    async def _cancel(self, scope: Scope, request_id: int | str) -> None:
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
        body = json.dumps(note).encode()
        kept = [(k, v) for k, v in scope.get("headers") or () if k not in (b"content-length", b"content-type")]
        headers = [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def discard(_message: Message) -> None:
            return None

        await self.app({**scope, "headers": headers}, receive, discard)


def _request_id(body: bytes) -> int | str | None:
    """The id of the JSON-RPC request in ``body`` (None: not one request)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or "method" not in message:
        return None
    found = message.get("id")
    return found if isinstance(found, int | str) and not isinstance(found, bool) else None


def http_app(server: MCPServer[Any], settings: Settings, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The MCP app for the configured HTTP transport, plus ``routes`` (such as ``/metrics``)."""
    security = transport_security(settings)
    if settings.transport == "sse":
        app = server.sse_app(transport_security=security, host=settings.host)
    else:
        event_stores = SessionEventStores()  # resumable streams: each session's events kept in Redis
        event_stores.install(server)
        app = server.streamable_http_app(
            transport_security=security,
            host=settings.host,
            session_idle_timeout=SESSION_IDLE_TIMEOUT_S,
            retry_interval=RETRY_INTERVAL_MS,
        )
        event_stores.serve(server)
        app.add_middleware(CancelOnDisconnect)
    app.router.routes.extend(routes)
    return app


def serve_http(server: MCPServer[Any], settings: Settings, routes: Sequence[BaseRoute] = ()) -> None:
    """Serve Streamable HTTP (``/mcp``) or SSE (``/sse``) until SIGINT/SIGTERM (uvicorn handles them)."""
    config = uvicorn.Config(
        http_app(server, settings, routes),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our stderr logging; uvicorn's default sends access logs to stdout
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,  # open SSE streams must not hold the shutdown forever
    )
    gc.freeze()  # as serve_stdio does: what is built lives as long as the process
    uvicorn.Server(config).run()


# -- stdio -----------------------------------------------------------------------------------


#: Bytes asked of stdin per read: a 100-task request arrives in a few reads.
_READ_SIZE = 1 << 16


class _LoopStdin(anyio.AsyncFile[str]):
    """stdin read by the event loop itself: no thread, nothing handed between threads per line.

    The SDK reads stdin on an AnyIO worker thread, one hop per line, that cannot be
    cancelled: a SIGTERM would wait for the next line that never comes. Here a pipe, socket
    or terminal is waited on by the loop (``wait_readable``; a read after it does not block),
    a cancelled wait ends at once, and a regular file, never waiting, is read directly. What
    the loop's poller refuses (``/dev/null``, some devices: EPERM) is read on a worker thread,
    abandoned on cancel so a SIGTERM stays prompt.
    Lines are split as bytes (``\n`` is never inside a UTF-8 sequence) and decoded one by one.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(sys.stdin)
        self._fd = fd
        self._waits = not stat.S_ISREG(os.fstat(fd).st_mode)
        self._threaded = False  # set when the poller refused the descriptor
        self._buffer = bytearray()
        self._scanned = 0  # no newline before this offset of the buffer
        self._eof = False

    async def readline(self) -> str:
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0 or (self._eof and self._buffer):
                cut = end + 1 if end >= 0 else len(self._buffer)
                line = self._buffer[:cut].decode("utf-8", "replace")
                del self._buffer[:cut]
                self._scanned = 0
                return line
            if self._eof:
                return ""
            self._scanned = len(self._buffer)
            chunk = await self._read()
            self._buffer += chunk
            self._eof = not chunk

    async def _read(self) -> bytes:
        while True:
            if self._threaded:
                return await anyio.to_thread.run_sync(os.read, self._fd, _READ_SIZE, abandon_on_cancel=True)
            if self._waits:
                try:
                    await anyio.wait_readable(self._fd)
                except PermissionError:  # epoll cannot watch this kind of file
                    self._threaded = True
                    continue
            else:
                await anyio.lowlevel.checkpoint()
            try:
                return os.read(self._fd, _READ_SIZE)
            except BlockingIOError:  # a non-blocking stdin woken for nothing: wait again
                continue


class _LoopStdout(anyio.AsyncFile[str]):
    """The wire (stdout, as the SDK claimed it) written by the event loop: one write per message.

    The SDK writes each message and then flushes it, each on a worker thread: two hand-overs
    per message. A pipe or socket is made non-blocking and written directly, waiting
    (``wait_writable``) only while the client is not reading; anything else (a terminal, a
    file) is written directly as it is.
    """

    def __init__(self, wire: BinaryIO) -> None:
        super().__init__(wire)  # type: ignore[arg-type]  # only its descriptor is used
        self._fd = wire.fileno()
        mode = os.fstat(self._fd).st_mode
        self._was_blocking = os.get_blocking(self._fd)
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            os.set_blocking(self._fd, False)

    async def write(self, b: str) -> int:
        data = memoryview(b.encode())
        while data:
            try:
                data = data[os.write(self._fd, data) :]
            except BlockingIOError:  # the client is not reading yet: the pipe is full
                await anyio.wait_writable(self._fd)
        return len(b)

    async def flush(self) -> None:
        """Nothing is buffered: each write went to the wire whole."""

    def restore(self) -> None:
        """Hand the descriptor back in the mode it came in."""
        with contextlib.suppress(OSError):
            os.set_blocking(self._fd, self._was_blocking)


class _AnsweringUnreadable:
    """The transport's read stream, answering a line that is not a message at once, as JSON-RPC says.

    The SDK's stdio transport hands the server an exception for such a line, and the server
    only logs it: a client whose request was nested deeper than the parser's limit (about 200
    levels), cut short or not JSON-RPC waited for an answer until its own timeout. Answered
    here, in the server's own read: no task or stream between the transport and the server.
    """

    def __init__(self, lines: Any, outbox: Any) -> None:
        self._lines = lines
        self._outbox = outbox

    @property
    def last_context(self) -> Any:
        return getattr(self._lines, "last_context", None)

    async def receive(self) -> SessionMessage:
        while True:
            item = await self._lines.receive()
            if not isinstance(item, Exception):
                return cast(SessionMessage, item)
            await self._outbox.send(SessionMessage(unreadable_line_error(item)))

    async def aclose(self) -> None:
        await self._lines.aclose()

    def __aiter__(self) -> _AnsweringUnreadable:
        return self

    async def __anext__(self) -> SessionMessage:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _AnsweringUnreadable:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _stop_on_signal(scope: anyio.CancelScope, received: list[signal.Signals]) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            received.append(signal.Signals(signum))
            logger.info("received %s: shutting down", received[0].name)
            scope.cancel()
            return


async def serve_stdio(server: MCPServer[Any]) -> signal.Signals | None:
    """Serve one client on stdin/stdout until stdin closes or SIGTERM/SIGINT arrives.

    Either way the lifespan exits normally: held tasks go back to the queue at once.
    Returns the signal that stopped the server (None: stdin closed), for the exit status.
    """
    received: list[signal.Signals] = []
    # What exists now (the SDK, the models, the tools) lives as long as the process: out of the
    # collector's way, so a full collection walks only what serving allocates (issue 17).
    gc.freeze()
    # The SDK runs stdio only with its own stdin and stdout; this is its run_stdio_async with ours.
    lowlevel = lowlevel_server(server)
    wire, release = claim_stdout()
    stdout = _LoopStdout(wire)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, tg.cancel_scope, received)
            async with stdio_server(stdin=_LoopStdin(sys.stdin.fileno()), stdout=stdout) as (read_stream, write_stream):
                inbox = _AnsweringUnreadable(read_stream, write_stream)
                await lowlevel.run(inbox, write_stream, lowlevel.create_initialization_options())
            tg.cancel_scope.cancel()
    finally:
        stdout.restore()
        if release is not None:
            release()
    return received[0] if received else None


def unreadable_line_error(exc: Exception) -> JSONRPCError:
    """The JSON-RPC error for a line the transport could not read as a message (id null if unknown)."""
    line = _line_of(exc)
    try:
        parsed = json.loads(line) if isinstance(line, str) else line
    except RecursionError:
        parsed = None
        reason = "JSON nested too deep to parse"
    except ValueError:
        parsed = None
        reason = "not valid JSON"
    else:
        reason = "not a JSON-RPC 2.0 message"
    request_id = parsed.get("id") if isinstance(parsed, dict) else None
    if not isinstance(request_id, int | str) or isinstance(request_id, bool):
        request_id = None
    if parsed is not None and _is_json_invalid(exc):
        # Valid JSON to Python, refused by the SDK's parser: nested past its limit (200 levels).
        reason = "JSON nested too deep to parse (over 200 levels)"
    code = INVALID_REQUEST if reason == "not a JSON-RPC 2.0 message" else PARSE_ERROR
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=f"{reason}: line ignored"))


def _line_of(exc: Exception) -> Any:
    """The line (or, when it was JSON, what it held) that ``exc`` refused."""
    if isinstance(exc, ValidationError):
        for error in exc.errors(include_url=False):
            if isinstance(error.get("input"), str | dict):
                return error["input"]
    return None


def _is_json_invalid(exc: Exception) -> bool:
    return isinstance(exc, ValidationError) and any(e["type"] == "json_invalid" for e in exc.errors())


async def serve_stdio_with_metrics(
    server: MCPServer[Any], settings: Settings, metrics: Metrics, tokens: Sequence[str] | None = None
) -> signal.Signals | None:
    """The stdio server, plus ``/metrics`` and ``/status`` on ``settings.metrics_port`` when it is
    set (opened by ``tokens``, see :func:`~mcp_queue_server.observe.http.route_tokens`)."""
    async with anyio.create_task_group() as tg:
        if settings.metrics_port is not None:
            tg.start_soon(serve_side, metrics, settings.host, settings.metrics_port, tokens)
        stopped_by = await serve_stdio(server)
        tg.cancel_scope.cancel()
    return stopped_by
