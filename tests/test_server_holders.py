"""One holder per agent session on HTTP (issue 12, part 2): two sessions of one real server
process on one queue are two holders; a session's end hands its tasks back at once."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_queue_server import Settings
from mcp_queue_server.server.identity import HOLDER_META_KEY
from tests.conftest import QueueFactory
from tests.test_http import ACCEPT, BEARER, INIT, http_server

MODERN = "2026-07-28"


def session_client(url: str, http: httpx2.AsyncClient) -> Client:
    """An SDK client on the initialize handshake: an MCP session (the default, 'auto', goes stateless)."""
    return Client(streamable_http_client(url, http_client=http), mode="legacy")


async def test_a_session_cannot_finish_the_task_another_session_holds_and_its_delete_hands_it_back(
    settings: Settings, make_queue: QueueFactory
) -> None:
    observer = await make_queue("observer", real_clock=True)
    await observer.enqueue("t", {}, task_id="a")
    async with (
        http_server(settings, "streamable-http") as server,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        with anyio.fail_after(30):
            async with session_client(server.url, http) as b:
                async with session_client(server.url, http) as a:
                    read = await a.call_tool("read_tasks", {"lease_ms": 600_000})
                    stolen = await b.call_tool("ack", {"task_id": "a", "result": {"by": "b"}})
                    extended = await b.call_tool("extend_lease", {"task_id": "a"})
                    held = await observer.get_task("a")
                # A's client sent DELETE on leaving: its task is back, not charged as an attempt.
                [again] = await observer.read_messages(count=1, block_ms=1000)

    assert read.structured_content is not None
    assert read.structured_content["tasks"][0]["task_id"] == "a"
    assert stolen.is_error
    assert extended.is_error
    assert "leased by another worker" in stolen.content[0].text  # type: ignore[union-attr]
    assert (held.status, held.result) == ("working", None)
    assert held.lease_holder is not None
    assert held.lease_holder.startswith("http-streamable-http/bearer/")
    assert (again.task_id, again.attempt) == ("a", 1)
    assert any("handed back" in line and held.lease_holder in line for line in server.log)


async def until_a_client_blocks(observer: Any) -> None:
    """Until Redis counts a blocked client (polls its counter, at most 10 s)."""
    for _ in range(1000):
        if int((await observer.redis.info("clients"))["blocked_clients"]) > 0:
            return
        await anyio.sleep(0.01)
    raise AssertionError("no client blocked in Redis within 10 s")


async def test_a_blocking_read_whose_connection_drops_hands_back_what_it_leased(
    settings: Settings, make_queue: QueueFactory
) -> None:
    observer = await make_queue("observer", real_clock=True)
    async with http_server(settings, "streamable-http") as server:
        headers = {**ACCEPT, **BEARER}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            opened = await http.post(server.url, json=INIT)
            session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
            await http.post(server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
            call = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "read_tasks", "arguments": {"block_ms": 20_000, "lease_ms": 600_000}},
            }
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: http.post(server.url, json=call, headers=session))
                await until_a_client_blocks(observer)  # the read waits in Redis (XREAD BLOCK)
                tg.cancel_scope.cancel()  # the client drops the POST mid-read
        # Whatever the dropped read leases goes back at once.
        await observer.enqueue("t", {}, task_id="d")
        with anyio.fail_after(15):
            got = await observer.read_messages(count=1, block_ms=10_000)

    assert [(t.task_id, t.attempt) for t in got] == [("d", 1)]


async def test_a_stateless_client_is_its_principal_and_may_name_its_holder_in_meta(
    settings: Settings, make_queue: QueueFactory
) -> None:
    observer = await make_queue("observer", real_clock=True)
    await observer.enqueue("t", {}, task_id="s1")
    await observer.enqueue("t", {}, task_id="s2")
    async with http_server(settings, "streamable-http") as server:
        headers = {**ACCEPT, **BEARER, "mcp-protocol-version": MODERN}

        async def call(n: int, name: str, arguments: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
            envelope = {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                **meta,
            }
            body = {
                "jsonrpc": "2.0",
                "id": n,
                "method": "tools/call",
                "params": {"name": name, "arguments": arguments, "_meta": envelope},
            }
            answer = await http.post(
                server.url, json=body, headers={**headers, "mcp-method": "tools/call", "mcp-name": name}
            )
            text = answer.text
            data = text.split("data: ", 1)[1].split("\n", 1)[0] if text.startswith("event") else text
            return dict(json.loads(data)["result"])

        async with httpx2.AsyncClient(timeout=30) as http:
            with anyio.fail_after(30):
                first = await call(1, "read_tasks", {"count": 1, "lease_ms": 600_000}, {HOLDER_META_KEY: "w1"})
                second = await call(2, "read_tasks", {"count": 1, "lease_ms": 600_000}, {})
                refused = await call(3, "ack", {"task_id": first["structuredContent"]["tasks"][0]["task_id"]}, {})
                acked = await call(
                    4, "ack", {"task_id": first["structuredContent"]["tasks"][0]["task_id"]}, {HOLDER_META_KEY: "w1"}
                )
                bad = await call(5, "read_tasks", {}, {HOLDER_META_KEY: "no/slash"})
        other = await observer.get_task(second["structuredContent"]["tasks"][0]["task_id"])

    assert refused["isError"]
    assert not acked.get("isError")
    assert other.lease_holder == "bearer/default"
    assert bad["isError"]
    assert HOLDER_META_KEY in bad["content"][0]["text"]
