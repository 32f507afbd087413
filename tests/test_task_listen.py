"""Task status on ``subscriptions/listen`` with ``taskIds`` (issue 14, the 2026-07-28 lane).

Two server processes share one Redis: a client creates tasks through A and listens there; a
worker agent acks through B; A's listener is sent ``notifications/tasks`` for its task. The
listener is raw JSON-RPC over Streamable HTTP (the Python SDK's ``Client.listen`` has no
``taskIds``); the worker is the Python SDK client.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import anyio
import httpx2
from anyio.abc import TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_queue_server import Settings
from tests.conftest import QueueFactory
from tests.npm_cache import CACHE, NpmPackages, node
from tests.test_http import ACCEPT, BEARER, TOKEN, http_server
from tests.test_mcp_tasks import MODERN, TASKS, Rpc
from tests.test_server_tools import call

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
_ids = itertools.count(1)


class Listener:
    """One ``subscriptions/listen`` stream over Streamable HTTP, its frames (params) by method."""

    def __init__(self, http: httpx2.AsyncClient, url: str, notifications: dict[str, Any], *, declare: bool = True):
        self.http, self.url, self.notifications, self.declare = http, url, notifications, declare
        self.request_id = f"listen-{next(_ids)}"
        self.send, self.receive = anyio.create_memory_object_stream[dict[str, Any]](64)
        self.acked: dict[str, Any] = {}
        self.error: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        caps: dict[str, Any] = {"extensions": {TASKS: {}}} if self.declare else {}
        meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": caps}
        params = {"notifications": self.notifications, "_meta": meta}
        return {"jsonrpc": "2.0", "id": self.request_id, "method": "subscriptions/listen", "params": params}

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Open the stream; started once acknowledged (or refused: then :attr:`error`)."""
        headers = {**ACCEPT, "MCP-Protocol-Version": MODERN, "Mcp-Method": "subscriptions/listen"}
        async with self.http.stream("POST", self.url, json=self.body(), headers=headers) as response:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                self.error = json.loads(await response.aread()).get("error")
                task_status.started()
                return
            async for line in response.aiter_lines():
                if not (line.startswith("data:") and line[5:].strip()):
                    continue
                message = json.loads(line[5:])
                if "error" in message:
                    self.error = message["error"]
                    task_status.started()
                    return
                if message.get("method") == "notifications/subscriptions/acknowledged":
                    self.acked = message["params"]
                    task_status.started()
                elif "method" in message:
                    await self.send.send({"method": message["method"], **message.get("params", {})})

    async def next(self, method: str) -> dict[str, Any]:
        """The next frame of ``method`` (others are skipped)."""
        while True:
            frame = await self.receive.receive()
            if frame["method"] == method:
                return frame

    def pending(self) -> list[dict[str, Any]]:
        """The frames received and not yet read."""
        frames = []
        while True:
            try:
                frames.append(self.receive.receive_nowait())
            except anyio.WouldBlock:
                return frames


async def _delegate(rpc: Rpc, task_id: str, **arguments: Any) -> dict[str, Any]:
    """enqueue_task called declaring the tasks extension: the task handle."""
    args = {"task_type": "t", "payload": {}, "task_id": task_id, **arguments}
    return await rpc.ok("tools/call", {"name": "enqueue_task", "arguments": args})


async def test_a_listener_on_one_process_is_sent_the_status_of_its_task_acked_through_another(
    settings: Settings,
) -> None:
    async with (
        http_server(settings, "streamable-http") as a,
        http_server(settings, "streamable-http") as b,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        with anyio.fail_after(40):
            creator = Rpc(http, a.url, MODERN)
            handle = await _delegate(creator, "lt1")
            await _delegate(creator, "lt2", delay_ms=600_000)  # stays working throughout
            watcher = Listener(http, a.url, {"taskIds": ["lt1"]})
            # The negative control also follows lt1's resource: the update proves lt1's event
            # reached that stream, so a notifications/tasks for lt1 would have come with it.
            other = Listener(
                http, b.url, {"taskIds": ["lt2", "unknown-id"], "resourceSubscriptions": ["task://default/lt1"]}
            )
            async with watcher.send, watcher.receive, other.send, other.receive, anyio.create_task_group() as tg:
                await tg.start(watcher.run)
                await tg.start(other.run)
                async with Client(streamable_http_client(b.url, http_client=http)) as worker:
                    leased = await call(worker, "read_tasks")
                    await call(worker, "ack", task_id="lt1", result={"answer": 42})
                heard = await watcher.next("notifications/tasks")
                fence = await other.next("notifications/resources/updated")
                with anyio.move_on_after(0.5):  # and a bounded wait besides
                    await other.next("notifications/tasks")
                    raise AssertionError("a listener of other task ids was sent lt1's status")
                stray = other.pending()
                tg.cancel_scope.cancel()

    assert handle["resultType"] == "task"
    assert watcher.acked["notifications"]["taskIds"] == ["lt1"]
    assert other.acked["notifications"]["taskIds"] == ["lt2"]  # unknown ids are not honored
    assert [t["task_id"] for t in leased["tasks"]] == ["lt1"]
    assert heard["taskId"] == "lt1"
    assert heard["status"] == "completed"
    assert heard["result"]["structuredContent"]["result"] == {"answer": 42}
    assert heard["result"]["isError"] is False
    assert heard["_meta"][SUBSCRIPTION_ID] == watcher.request_id
    assert {"createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs"} <= heard.keys()
    assert fence["uri"] == "task://default/lt1"
    assert [f for f in stray if f["method"] == "notifications/tasks"] == []


async def test_tasks_that_ended_before_the_listen_are_announced_after_the_acknowledgement(
    settings: Settings, make_queue: QueueFactory
) -> None:
    worker = await make_queue("w", real_clock=True)
    async with (
        http_server(settings, "streamable-http") as server,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        with anyio.fail_after(30):
            creator = Rpc(http, server.url, MODERN)
            await _delegate(creator, "lf1")
            await _delegate(creator, "lf2", delay_ms=600_000)
            await _delegate(creator, "lf3")
            await worker.read_messages(2, 0, True, queue="default")
            await worker.acknowledge("lf1", "early")
            await worker.fail("lf3", "bad input", retry=False)
            await creator.ok("tasks/cancel", {"taskId": "lf2"})
            listener = Listener(http, server.url, {"taskIds": ["lf1", "lf2", "lf3"]})
            async with listener.send, listener.receive, anyio.create_task_group() as tg:
                await tg.start(listener.run)
                heard = {}
                for _ in range(3):
                    frame = await listener.next("notifications/tasks")
                    heard[frame["taskId"]] = frame
                tg.cancel_scope.cancel()

    assert {task_id: frame["status"] for task_id, frame in heard.items()} == {
        "lf1": "completed",
        "lf2": "cancelled",
        "lf3": "failed",
    }
    assert heard["lf1"]["result"]["structuredContent"]["result"] == "early"
    assert heard["lf1"]["result"]["resultType"] == "complete"
    assert heard["lf3"]["error"]["code"] == -32603  # the spec's failed task carries a JSON-RPC error
    assert "bad input" in heard["lf3"]["error"]["message"]


async def test_listening_for_task_ids_without_declaring_the_tasks_extension_is_refused_with_32021(
    settings: Settings,
) -> None:
    async with (
        http_server(settings, "streamable-http") as server,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        with anyio.fail_after(30):
            plain = Listener(http, server.url, {"taskIds": ["x"]}, declare=False)
            many = Listener(http, server.url, {"taskIds": [f"t{i}" for i in range(101)]})
            async with plain.send, plain.receive, many.send, many.receive, anyio.create_task_group() as tg:
                await tg.start(plain.run)
                await tg.start(many.run)

    assert plain.error is not None
    assert plain.error["code"] == -32021
    assert plain.error["data"] == {"requiredCapabilities": {"extensions": {TASKS: {}}}}
    assert many.error is not None
    assert many.error["code"] == -32602
    assert "at most 100" in many.error["message"]


EXT_TASKS = NpmPackages(
    "the ext-tasks client (@modelcontextprotocol/ext-tasks on @modelcontextprotocol/client)",
    CACHE / "ext-tasks" / "ext-tasks-0.2.2-client-2.4.0",
    {"@modelcontextprotocol/ext-tasks": "0.2.2", "@modelcontextprotocol/client": "2.4.0"},
)
EXT_CLIENT = Path(__file__).resolve().parent / "ts" / "ext_tasks_client.mjs"


async def test_the_official_ext_tasks_client_delegates_enqueue_task_and_hears_its_status_on_a_listen_stream(
    settings: Settings, make_queue: QueueFactory, tmp_path: Path
) -> None:
    node_bin = node()
    modules = EXT_TASKS.ensure()
    # An ES module resolves packages from its own directory: run a copy beside a link to them.
    (tmp_path / "node_modules").symlink_to(modules)
    script = tmp_path / EXT_CLIENT.name
    shutil.copy(EXT_CLIENT, script)
    worker = await make_queue("w", real_clock=True)
    async with http_server(settings, "streamable-http") as server:
        with anyio.fail_after(60):
            process = await anyio.open_process(
                [node_bin, str(script), server.url, TOKEN, "ext1"], env={"PATH": os.environ.get("PATH", "")}
            )
            async with process:
                assert process.stdout is not None
                lines = BufferedByteReceiveStream(process.stdout)
                messages = [json.loads(await lines.receive_until(b"\n", 1 << 20)) for _ in range(3)]
                got = await worker.read_messages(1, 0, True, queue="default")
                await worker.acknowledge("ext1", {"answer": "from a worker"})
                rest = b"".join([chunk async for chunk in lines])
                assert process.stderr is not None
                errors = b"".join([chunk async for chunk in process.stderr]).decode(errors="replace")
                assert await process.wait() == 0, errors
    messages += [json.loads(line) for line in rest.decode().splitlines()]
    print("\n".join(json.dumps(m) for m in messages))

    assert messages[0] == {"type": "protocol", "era": "modern", "tasks": {}}
    assert messages[1] == {"type": "taskCreated", "kind": "task", "taskId": "ext1"}
    assert messages[2]["type"] == "listening"  # (the client's honoredFilter keeps only the core keys)
    assert [t.payload for t in got] == [{"from": "ext-tasks"}]
    assert {"type": "notification", "taskId": "ext1", "status": "completed"} in messages
    final = messages[-1]
    assert final["type"] == "result"
    assert final["status"] == "completed"
    assert final["isError"] is False
    assert final["structuredContent"]["result"] == {"answer": "from a worker"}
