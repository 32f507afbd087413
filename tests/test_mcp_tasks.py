"""MCP Tasks over the queue (issue 14, part 2): both lanes, raw JSON-RPC over Streamable HTTP."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from mcp_queue_server import Settings, Worker
from mcp_queue_server.core.queue import TaskQueue
from tests.conftest import QueueFactory
from tests.npm_cache import CACHE, NpmPackages, node
from tests.test_http import ACCEPT, BEARER, TOKEN, http_server
from tests.test_server_principals import bearer, tokens_file

CORE = "2025-11-25"
MODERN = "2026-07-28"
TASKS = "io.modelcontextprotocol/tasks"
_ids = itertools.count(1)


class Rpc:
    """One JSON-RPC client over Streamable HTTP: a 2025-11-25 session, or 2026-07-28 stateless requests."""

    def __init__(self, http: httpx2.AsyncClient, url: str, version: str, *, tasks_ext: bool = True) -> None:
        self.http, self.url, self.version, self.tasks_ext = http, url, version, tasks_ext
        self.headers: dict[str, str] = dict(ACCEPT)

    async def open(self) -> dict[str, Any]:
        init = {"protocolVersion": self.version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        response = await self._post("initialize", init)
        self.headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
        self.headers["MCP-Protocol-Version"] = self.version
        await self.http.post(
            self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers
        )
        return _answer(response)["result"]  # type: ignore[no-any-return]

    async def _post(self, method: str, params: dict[str, Any]) -> httpx2.Response:
        headers = dict(self.headers)
        if self.version == MODERN:
            caps: dict[str, Any] = {"extensions": {TASKS: {}}} if self.tasks_ext else {}
            params = {
                **params,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": MODERN,
                    "io.modelcontextprotocol/clientCapabilities": caps,
                },
            }
            headers |= {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
            if method == "tools/call":
                headers["Mcp-Name"] = params["name"]
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}
        return await self.http.post(self.url, json=body, headers=headers)

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The JSON-RPC answer: {"result": ...} or {"error": ...}."""
        return _answer(await self._post(method, params))

    async def ok(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        answer = await self.call(method, params)
        assert "result" in answer, answer
        return answer["result"]  # type: ignore[no-any-return]


def _answer(response: httpx2.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if "result" in message or "error" in message:
                    return message  # type: ignore[no-any-return]
        raise AssertionError(f"no answer in {response.text!r}")
    return response.json()  # type: ignore[no-any-return]


async def _work(worker: TaskQueue, task_id: str, result: Any) -> None:
    """Lease the next task (it must be ``task_id``) and ack it with ``result``."""
    got = await worker.read_messages(1, 0, True, queue="default")
    assert [t.task_id for t in got] == [task_id]
    await worker.acknowledge(task_id, result)


async def test_a_2025_11_25_client_delegates_enqueue_task_as_a_task_and_awaits_the_workers_result(
    settings: Settings, make_queue: QueueFactory, tmp_path: Path
) -> None:
    worker = await make_queue("w", real_clock=True)
    path = tokens_file(tmp_path)
    async with (
        http_server(settings, "streamable-http", token=None, MCP_QUEUE_AUTH_TOKENS_FILE=str(path)) as server,
        httpx2.AsyncClient(headers=bearer("maker"), timeout=30) as maker_http,
        httpx2.AsyncClient(headers=bearer("crew1"), timeout=30) as crew_http,
        httpx2.AsyncClient(headers=bearer("ops"), timeout=30) as ops_http,
    ):
        with anyio.fail_after(30):
            maker = Rpc(maker_http, server.url, CORE)
            init = await maker.open()
            listed = await maker.ok("tools/list", {})
            created = await maker.ok(
                "tools/call",
                {
                    "name": "enqueue_task",
                    "arguments": {"task_type": "t", "payload": {"q": 1}, "task_id": "mt1"},
                    "task": {"ttl": 60_000},
                },
            )
            polled = await maker.ok("tasks/get", {"taskId": "mt1"})
            final: dict[str, Any] = {}

            async def await_result() -> None:
                final.update(await maker.ok("tasks/result", {"taskId": "mt1"}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(await_result)
                await _work(worker, "mt1", {"answer": 42})
            done = await maker.ok("tasks/get", {"taskId": "mt1"})
            listed_tasks = await maker.ok("tasks/list", {})
            crew = Rpc(crew_http, server.url, CORE)
            await crew.open()
            foreign = await crew.call("tasks/get", {"taskId": "mt1"})
            ops = Rpc(ops_http, server.url, CORE)
            await ops.open()
            by_admin = await ops.ok("tasks/get", {"taskId": "mt1"})
            unknown = await maker.call("tasks/get", {"taskId": "no-such-task"})
            bad_ttl = await maker.call(
                "tools/call",
                {"name": "enqueue_task", "arguments": {"task_type": "t", "payload": {}}, "task": {"ttl": -5}},
            )
            capped = await maker.ok(
                "tools/call",
                {"name": "enqueue_task", "arguments": {"task_type": "t", "payload": {}}, "task": {"ttl": 10**12}},
            )
            forbidden = await maker.call(
                "tools/call", {"name": "get_task", "arguments": {"task_id": "mt1"}, "task": {"ttl": 1000}}
            )

    assert init["capabilities"]["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    support = {t["name"]: t.get("execution", {}).get("taskSupport") for t in listed["tools"]}
    assert support == {
        "enqueue_task": "optional",
        "enqueue_batch": None,
        "fanout": "optional",
        "get_task": None,
        "queue_stats": None,
        "cancel_task": None,
        "list_tasks": None,
        "schedule_task": None,
        "list_schedules": None,
        "remove_schedule": None,
        "start_saga": None,
    }
    assert created["task"]["taskId"] == "mt1"
    assert created["task"]["status"] == "working"
    assert created["task"]["ttl"] == 60_000
    assert polled["status"] == "working"
    assert polled["statusMessage"] == "queue status queued"
    assert final["isError"] is False
    assert final["structuredContent"]["result"] == {"answer": 42}
    assert final["structuredContent"]["status"] == "completed"
    assert final["structuredContent"]["task_id"] == "mt1"
    assert final["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": "mt1"}
    assert done["status"] == "completed"
    assert [t["taskId"] for t in listed_tasks["tasks"]][:1] == ["mt1"]
    assert foreign["error"]["code"] == -32602
    assert "not yours" in foreign["error"]["message"]
    assert by_admin["status"] == "completed"
    assert unknown["error"]["code"] == -32602
    assert bad_ttl["error"]["code"] == -32602
    assert "ttl" in bad_ttl["error"]["message"]
    assert capped["task"]["ttl"] == settings.result_ttl_s * 1000
    assert forbidden["error"]["code"] == -32602
    assert "get_task cannot run as a task" in forbidden["error"]["message"]


async def test_tasks_cancel_of_a_queued_task_cancels_it_in_the_queue(settings: Settings) -> None:
    async with (
        http_server(settings, "streamable-http") as server,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        with anyio.fail_after(30):
            client = Rpc(http, server.url, CORE)
            await client.open()
            await client.ok(
                "tools/call",
                {
                    "name": "enqueue_task",
                    "arguments": {"task_type": "t", "payload": {}, "task_id": "mc1", "delay_ms": 600_000},
                    "task": {},
                },
            )
            cancelled = await client.call("tasks/cancel", {"taskId": "mc1"})
            again = await client.call("tasks/cancel", {"taskId": "mc1"})
            fetched = await client.ok("tasks/result", {"taskId": "mc1"})

    assert cancelled["result"]["status"] == "cancelled"
    assert cancelled["result"]["taskId"] == "mc1"
    assert again["error"]["code"] == -32602
    assert "already cancelled" in again["error"]["message"]
    assert fetched["structuredContent"]["status"] == "cancelled"
    assert fetched["isError"] is True


async def test_a_task_created_through_one_server_process_is_polled_and_fetched_through_another(
    settings: Settings, make_queue: QueueFactory
) -> None:
    worker = await make_queue("w", real_clock=True)
    async with (
        http_server(settings, "streamable-http") as first,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        with anyio.fail_after(30):
            a = Rpc(http, first.url, CORE)
            await a.open()
            created = await a.ok(
                "tools/call",
                {
                    "name": "enqueue_task",
                    "arguments": {"task_type": "t", "payload": {}, "task_id": "md1"},
                    "task": {"ttl": 120_000},
                },
            )
    async with (
        http_server(settings, "streamable-http") as second,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        with anyio.fail_after(30):
            b = Rpc(http, second.url, CORE)
            await b.open()
            before = await b.ok("tasks/get", {"taskId": "md1"})
            await _work(worker, "md1", "done by a worker")
            result = await b.ok("tasks/result", {"taskId": "md1"})

    assert created["task"]["status"] == "working"
    assert before["status"] == "working"
    assert result["structuredContent"]["result"] == "done by a worker"


async def test_a_2026_07_28_request_declaring_the_tasks_extension_gets_a_task_handle_and_polls_it_to_complete(
    settings: Settings, make_queue: QueueFactory
) -> None:
    worker = await make_queue("w", real_clock=True)
    async with (
        http_server(settings, "streamable-http") as server,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        with anyio.fail_after(30):
            client = Rpc(http, server.url, MODERN)
            plain = Rpc(http, server.url, MODERN, tasks_ext=False)
            discovered = await client.ok("server/discover", {})
            handle = await client.ok(
                "tools/call",
                {
                    "name": "fanout",
                    "arguments": {
                        "parent_task_id": "mp1",
                        "subtasks": [{"task_type": "s", "payload": {"n": 1}, "task_id": "mk1"}],
                    },
                },
            )
            working = await client.ok("tasks/get", {"taskId": "mp1"})
            await _work(worker, "mk1", {"part": 1})
            complete = await client.ok("tasks/get", {"taskId": "mp1"})
            direct = await plain.ok(
                "tools/call", {"name": "enqueue_task", "arguments": {"task_type": "t", "payload": {}}}
            )
            update = await client.call("tasks/update", {"taskId": "mp1"})
            unknown = await client.call("tasks/get", {"taskId": "nope"})

    assert TASKS in discovered["capabilities"]["extensions"]
    assert handle["resultType"] == "task"
    assert handle["taskId"] == "mp1"
    assert handle["status"] == "working"
    assert {"createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs"} <= handle.keys()
    assert working["resultType"] == "complete"  # tasks/get is always "complete" (the task is inline)
    assert working["status"] == "working"
    assert complete["resultType"] == "complete"
    assert complete["status"] == "completed"
    assert complete["result"]["structuredContent"]["results"] == {"mk1": {"part": 1}}
    assert complete["result"]["isError"] is False
    assert direct["resultType"] == "complete"
    assert direct["structuredContent"]["status"] == "queued"
    assert "not supported" in update["error"]["message"]
    assert unknown["error"]["code"] == -32602


TS_SDK = NpmPackages(
    "the TypeScript SDK 1.x", CACHE / "ts-tasks" / "sdk-1.32.2", {"@modelcontextprotocol/sdk": "1.32.2"}
)
TS_CLIENT = Path(__file__).resolve().parent / "ts" / "tasks_client.cjs"


@pytest.fixture(scope="session")
def ts_modules() -> Path:
    """The ``node_modules`` holding the pinned TypeScript SDK (see tests/npm_cache.py)."""
    node()
    return TS_SDK.ensure()


async def test_the_typescript_sdk_s_call_tool_stream_delegates_enqueue_task_and_gets_the_workers_result(
    settings: Settings, make_queue: QueueFactory, ts_modules: Path
) -> None:
    worker = await make_queue("w", real_clock=True)
    async with http_server(settings, "streamable-http") as server:
        with anyio.fail_after(60):
            node = await anyio.open_process(
                ["node", str(TS_CLIENT), server.url, TOKEN, "ts1"],
                env={"PATH": os.environ.get("PATH", ""), "NODE_PATH": str(ts_modules)},
            )
            async with node:
                assert node.stdout is not None
                lines = BufferedByteReceiveStream(node.stdout)
                messages = [json.loads(await lines.receive_until(b"\n", 1 << 20)) for _ in range(2)]
                got = await worker.read_messages(1, 0, True, queue="default")  # created: it is queued
                assert [t.task_id for t in got] == ["ts1"]
                assert got[0].payload == {"from": "typescript"}
                await worker.acknowledge("ts1", {"answer": "from a worker"})
                rest = b"".join([chunk async for chunk in lines])
                assert await node.wait() == 0
    messages += [json.loads(line) for line in rest.decode().splitlines()]
    print("\n".join(json.dumps(m) for m in messages))

    assert messages[0] == {
        "type": "protocol",
        "version": "2025-11-25",
        "tasks": {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}},
    }
    assert messages[1] == {"type": "taskCreated", "taskId": "ts1", "status": "working"}
    final = messages[-1]
    assert final["type"] == "result"
    assert final["isError"] is False
    assert final["structuredContent"]["result"] == {"answer": "from a worker"}
    assert final["structuredContent"]["status"] == "completed"


class StatusStream:
    """The session's standalone GET SSE stream, collecting ``notifications/tasks/status`` params."""

    def __init__(self, http: httpx2.AsyncClient, client: Rpc) -> None:
        self.http, self.client = http, client
        self.send, self.receive = anyio.create_memory_object_stream[dict[str, Any]](64)
        self.opened = anyio.Event()

    async def run(self) -> None:
        headers = {**self.client.headers, "Accept": "text/event-stream"}
        async with self.http.stream("GET", self.client.url, headers=headers) as response:
            assert response.status_code == 200, response.status_code
            self.opened.set()
            async for line in response.aiter_lines():
                if line.startswith("data:") and line[5:].strip():
                    message = json.loads(line[5:])
                    if message.get("method") == "notifications/tasks/status":
                        await self.send.send(message["params"])

    async def status_of(self, task_id: str) -> dict[str, Any]:
        """The next status notification of ``task_id`` (others are skipped)."""
        while True:
            params = await self.receive.receive()
            if params["taskId"] == task_id:
                return params


async def test_the_creating_session_is_sent_the_task_s_status_when_a_worker_acks_it_or_it_is_cancelled(
    settings: Settings, make_queue: QueueFactory
) -> None:
    worker = await make_queue("w", real_clock=True)
    async with (
        http_server(settings, "streamable-http") as server,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        client = Rpc(http, server.url, CORE)
        stream = StatusStream(http, client)
        with anyio.fail_after(30):
            async with stream.send, stream.receive, anyio.create_task_group() as tg:
                await client.open()
                tg.start_soon(stream.run)
                await stream.opened.wait()
                await client.ok(
                    "tools/call",
                    {
                        "name": "enqueue_task",
                        "arguments": {"task_type": "t", "payload": {}, "task_id": "ns1"},
                        "task": {},
                    },
                )
                await client.ok(
                    "tools/call",
                    {
                        "name": "enqueue_task",
                        "arguments": {"task_type": "t", "payload": {}, "task_id": "ns2", "delay_ms": 600_000},
                        "task": {"ttl": 60_000},
                    },
                )
                await _work(worker, "ns1", {"answer": 1})
                completed = await stream.status_of("ns1")
                await client.ok("tasks/cancel", {"taskId": "ns2"})
                cancelled = await stream.status_of("ns2")
                tg.cancel_scope.cancel()

    assert completed["status"] == "completed"
    assert set(completed) >= {"taskId", "status", "createdAt", "lastUpdatedAt", "ttl", "pollInterval"}
    assert cancelled["status"] == "cancelled"
    assert cancelled["ttl"] == 60_000


async def test_tasks_cancel_reaches_a_python_worker_s_handler_and_the_mcp_task_ends_cancelled(
    settings: Settings, make_queue: QueueFactory
) -> None:
    started, observed, never = anyio.Event(), anyio.Event(), anyio.Event()

    async def handle(task: Any, ctx: Any) -> dict[str, Any]:
        started.set()
        try:
            await never.wait()
        except anyio.get_cancelled_exc_class():
            observed.set()
            raise
        return {}

    worker = Worker(
        await make_queue("w", real_clock=True),
        {"t": handle},
        lease_ms=600,
        recover_interval_s=None,
        summary_interval_s=None,
    )
    async with (
        http_server(settings, "streamable-http") as server,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        client = Rpc(http, server.url, CORE)
        stream = StatusStream(http, client)
        with anyio.fail_after(30):
            async with stream.send, stream.receive, anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await client.open()
                tg.start_soon(stream.run)
                await stream.opened.wait()
                await client.ok(
                    "tools/call",
                    {
                        "name": "enqueue_task",
                        "arguments": {"task_type": "t", "payload": {}, "task_id": "nw1"},
                        "task": {},
                    },
                )
                await started.wait()
                await client.ok("tasks/cancel", {"taskId": "nw1"})
                await observed.wait()
                cancelled = await stream.status_of("nw1")
                final = await client.ok("tasks/get", {"taskId": "nw1"})
                worker.stop(0)
                tg.cancel_scope.cancel()

    assert cancelled["status"] == "cancelled"
    assert final["status"] == "cancelled"
