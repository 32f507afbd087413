"""End to end over HTTP: Streamable HTTP and SSE as subprocesses, with Host/Origin checks and a bearer token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from anyio.abc import Process, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from mcp_queue_server import Settings
from mcp_queue_server.testing import free_port
from tests.conftest import QueueFactory
from tests.test_stdio import ROOT, START_S, server_env

TOKEN = "correct-horse-battery-staple"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class HttpServer:
    def __init__(self, process: Process, port: int, path: str) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}{path}"
        self.log: list[str] = []


async def _drain(server: HttpServer, *, task_status: TaskStatus[None]) -> None:
    assert server.process.stderr is not None
    lines = BufferedByteReceiveStream(server.process.stderr)
    started = False
    try:
        while True:
            line = (await lines.receive_until(b"\n", 1 << 20)).decode(errors="replace")
            server.log.append(line)
            if not started and "Uvicorn running on" in line:
                started = True
                task_status.started()
    except (anyio.EndOfStream, anyio.IncompleteRead):
        if not started:
            raise RuntimeError("server exited before listening:\n" + "\n".join(server.log)) from None


@asynccontextmanager
async def http_server(
    settings: Settings, transport: str, *, token: str | None = TOKEN, **env: str
) -> AsyncIterator[HttpServer]:
    """The entry point serving ``transport`` on a free port, until the block ends (then SIGTERM)."""
    port = free_port()
    extra = {"MCP_QUEUE_TRANSPORT": transport, "MCP_QUEUE_PORT": str(port), **env}
    if token is not None:
        extra["MCP_QUEUE_AUTH_TOKEN"] = token
    process = await anyio.open_process(
        [sys.executable, "-m", "mcp_queue_server"], env=server_env(settings, f"http-{transport}", **extra), cwd=ROOT
    )
    server = HttpServer(process, port, "/sse" if transport == "sse" else "/mcp")
    try:
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(START_S):
                await tg.start(_drain, server)
            yield server
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()


async def post_initialize(url: str, headers: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.post(url, json=INIT, headers={**ACCEPT, **headers})


async def test_streamable_http_requires_the_bearer_token_and_serves_tools_with_it(settings: Settings) -> None:
    async with http_server(settings, "streamable-http") as server:
        missing = await post_initialize(server.url, {})
        wrong = await post_initialize(server.url, {"Authorization": "Bearer guess"})
        async with httpx2.AsyncClient(headers=BEARER, timeout=30) as http:
            with anyio.fail_after(30):
                async with Client(streamable_http_client(server.url, http_client=http)) as client:
                    names = {t.name for t in (await client.list_tools()).tools}
                    enqueued = await client.call_tool("enqueue_task", {"task_type": "t", "payload": {"via": "http"}})
                    read = await client.call_tool("read_tasks", {})

    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in "".join(server.log)
    assert "purge_dlq" in names
    assert enqueued.structured_content is not None
    assert read.structured_content is not None
    assert read.structured_content["tasks"][0]["payload"] == {"via": "http"}


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_foreign_host_and_origin_headers_are_rejected(settings: Settings, transport: str) -> None:
    async with (
        http_server(settings, transport, MCP_QUEUE_ALLOWED_HOSTS='["queue.internal"]') as server,
        httpx2.AsyncClient(headers=BEARER, timeout=10) as http,
    ):

        async def status(**headers: str) -> int:
            if transport == "sse":
                async with http.stream("GET", server.url, headers=headers) as resp:
                    return resp.status_code
            return (await http.post(server.url, json=INIT, headers={**ACCEPT, **headers})).status_code

        evil_host = await status(Host="evil.example")
        evil_origin = await status(Origin="http://evil.example")
        local_origin = await status(Origin=server.url.rsplit("/", 1)[0].replace("127.0.0.1", "localhost"))
        configured = await status(Host="queue.internal")

    assert evil_host == 421
    assert evil_origin == 403
    assert local_origin == 200
    assert configured == 200


async def test_sse_serves_tools_to_the_sdk_client(settings: Settings) -> None:
    async with http_server(settings, "sse", token=None) as server:
        with anyio.fail_after(30):
            async with Client(sse_client(server.url)) as client:
                enqueued = await client.call_tool("enqueue_task", {"task_type": "t", "payload": {"via": "sse"}})
                read = await client.call_tool("read_tasks", {})
                bad = await client.call_tool("read_tasks", {"count": 0})

    assert enqueued.structured_content is not None
    assert read.structured_content is not None
    assert read.structured_content["tasks"][0]["payload"] == {"via": "sse"}
    assert bad.is_error


async def test_sigterm_on_http_hands_the_held_tasks_of_open_sessions_back_at_once(
    settings: Settings, make_queue: QueueFactory
) -> None:
    async with (
        http_server(settings, "streamable-http") as server,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        with anyio.fail_after(30):
            # "legacy": the initialize handshake, so an MCP session (stateless holders keep theirs).
            async with Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client:
                await client.call_tool("enqueue_task", {"task_type": "t", "payload": {}, "task_id": "h"})
                await client.call_tool("read_tasks", {"lease_ms": 600_000})
                server.process.send_signal(signal.SIGTERM)
                with anyio.fail_after(20):
                    await server.process.wait()

    other = await make_queue("successor", real_clock=True)
    [again] = await other.read_messages(count=1)
    assert (again.task_id, again.attempt) == ("h", 1)
    assert any("held tasks were handed back" in line for line in server.log)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_binding_a_non_loopback_address_without_a_token_is_refused(host: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_queue_server", "--transport", "streamable-http", "--host", host],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "MCP_QUEUE_REDIS_URL": "redis://127.0.0.1:1/0"},
        timeout=60,
    )

    assert done.returncode == 2
    assert "refusing to serve HTTP on non-loopback address" in done.stderr
    assert "MCP_QUEUE_AUTH_TOKEN" in done.stderr


def test_the_transport_security_settings_allow_localhost_the_bind_address_and_extras() -> None:
    from mcp_queue_server.server.transports import transport_security

    security = transport_security(
        Settings(
            host="10.1.2.3",
            auth_token=SecretStr("x"),
            allowed_hosts=["q.example"],
            allowed_origins=["https://ui.example"],
        )
    )

    assert security.enable_dns_rebinding_protection
    for host in ("127.0.0.1:*", "localhost", "[::1]:*", "10.1.2.3:*", "q.example"):
        assert host in security.allowed_hosts
    for origin in ("http://localhost:*", "http://10.1.2.3:*", "https://ui.example"):
        assert origin in security.allowed_origins


def test_the_mcp_endpoints_and_the_metrics_routes_share_one_host_allowlist_and_token_check() -> None:
    from mcp_queue_server.observe.http import allowed_hosts, allowed_origins, host_allowed
    from mcp_queue_server.server.transports import StaticTokenVerifier, transport_security

    settings = Settings(host="10.1.2.3", auth_token=SecretStr(TOKEN), allowed_hosts=["q.example"])
    security = transport_security(settings)
    verifier = StaticTokenVerifier(TOKEN)

    assert security.allowed_hosts == allowed_hosts(settings)
    assert security.allowed_origins == allowed_origins(settings)
    assert [host_allowed(h, allowed_hosts(settings)) for h in ("10.1.2.3:8000", "q.example", "evil.example")] == [
        True,
        True,
        False,
    ]
    assert anyio.run(verifier.verify_token, TOKEN) is not None
    assert anyio.run(verifier.verify_token, TOKEN + "x") is None


def test_the_token_is_compared_in_one_place_only() -> None:
    package = ROOT / "mcp_queue_server"
    users = sorted(str(p.relative_to(ROOT)) for p in package.rglob("*.py") if "compare_digest" in p.read_text())

    assert users == ["mcp_queue_server/observe/http.py"]
