"""End to end over stdio: the real entry point as a subprocess, a real Redis, the real SDK client.

A raw JSON-RPC driver (:class:`StdioServer`) is used where the test must see every byte of
stdout or must signal the process; the SDK client where it plays an ordinary MCP client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client, StdioServerParameters

from mcp_queue_server import Settings
from tests.conftest import QueueFactory

ROOT = Path(__file__).resolve().parent.parent
START_S = 30  # a cold start imports the whole SDK: seconds on a loaded 2-core machine


def server_env(settings: Settings, consumer: str, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "MCP_QUEUE_REDIS_URL": settings.redis_url_value() or "",
        "MCP_QUEUE_KEY_PREFIX": settings.key_prefix,
        "MCP_QUEUE_CONSUMER": consumer,
        "MCP_QUEUE_RETRY_BACKOFF_MS": "0",
    }
    return env | extra


class StdioServer:
    """``python -m mcp_queue_server`` driven with raw JSON-RPC lines; keeps every stdout line."""

    def __init__(self, process: Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.lines: list[bytes] = []
        self._next_id = 0

    @classmethod
    async def start(cls, env: dict[str, str], stderr: Path) -> StdioServer:
        with stderr.open("wb") as err:
            process = await anyio.open_process(
                [sys.executable, "-m", "mcp_queue_server"], env=env, cwd=ROOT, stderr=err
            )
        server = cls(process, stderr)
        with anyio.fail_after(START_S):
            await server.request(
                "initialize",
                {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
            )
        await server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return server

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps(message).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        await self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        return await self._reply()

    async def call_raw(self, tool: str, arguments: str) -> dict[str, Any]:
        """Call a tool with arguments spelled as raw JSON text (to send what json.dumps would not)."""
        assert self.process.stdin is not None
        self._next_id += 1
        params = f'{{"name":"{tool}","arguments":{arguments}}}'
        line = f'{{"jsonrpc":"2.0","id":{self._next_id},"method":"tools/call","params":{params}}}\n'
        await self.process.stdin.send(line.encode())
        with anyio.fail_after(10):
            return await self._reply()

    async def _reply(self) -> dict[str, Any]:
        while True:
            line = await self._stdout.receive_until(b"\n", 10 * 1024 * 1024)
            self.lines.append(line)
            message = json.loads(line)
            if message.get("id") == self._next_id:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    async def call(self, tool: str, **args: Any) -> dict[str, Any]:
        with anyio.fail_after(10):
            result = await self.request("tools/call", {"name": tool, "arguments": args})
        assert not result.get("isError"), result
        content: dict[str, Any] = result["structuredContent"]
        return content

    async def rest_of_stdout(self) -> list[bytes]:
        """Every remaining stdout line, until the process closes stdout."""
        rest = b""
        try:
            while True:
                rest += await self._stdout.receive()
        except (anyio.EndOfStream, anyio.IncompleteRead):
            pass
        return self.lines + rest.splitlines()

    async def wait(self) -> int:
        with anyio.fail_after(20):
            return await self.process.wait()

    async def terminate(self) -> None:
        """SIGTERM (a graceful stop) if still running, then release the process's pipes."""
        if self.process.returncode is None:
            self.process.terminate()
            with anyio.fail_after(START_S):
                await self.process.wait()
        await self.process.aclose()


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[StdioServer] = []

    async def spawn(env: dict[str, str]) -> StdioServer:
        server = await StdioServer.start(env, tmp_path / f"stderr-{len(started)}.log")
        started.append(server)
        return server

    yield spawn
    for server in started:
        if server.process.returncode is None:
            server.process.kill()
            await server.process.wait()
        await server.process.aclose()


async def test_stdout_carries_nothing_but_json_rpc_and_logs_go_to_stderr(settings: Settings, spawn: Any) -> None:
    server = await spawn(server_env(settings, "solo", MCP_QUEUE_LOG_LEVEL="DEBUG"))
    await server.request("tools/list", {})
    await server.call("enqueue_task", task_type="t", payload={"text": "héllo ✓"}, task_id="s1")
    [task] = (await server.call("read_tasks"))["tasks"]
    await server.call("ack", task_id="s1", result={"ok": True})
    with anyio.fail_after(10):
        failed = await server.request("tools/call", {"name": "get_task", "arguments": {"task_id": "missing"}})

    assert server.process.stdin is not None
    await server.process.stdin.aclose()
    lines = await server.rest_of_stdout()
    assert await server.wait() == 0

    assert task["payload"] == {"text": "héllo ✓"}
    assert failed["isError"] is True
    assert lines
    for line in lines:
        assert json.loads(line)["jsonrpc"] == "2.0", line
    log = server.stderr.read_text()
    assert "queue store ready (consumer solo" in log
    assert "held tasks were handed back" in log
    assert settings.redis_url_value() not in log


@pytest.mark.parametrize("how", ["stdin EOF", "SIGTERM", "SIGINT"])
async def test_shutdown_hands_a_held_task_back_at_once(
    settings: Settings, spawn: Any, make_queue: QueueFactory, how: str
) -> None:
    server = await spawn(server_env(settings, "leaving"))
    await server.call("enqueue_task", task_type="t", payload={}, task_id="held")
    [task] = (await server.call("read_tasks", lease_ms=600_000))["tasks"]
    assert task["task_id"] == "held"

    if how == "stdin EOF":
        assert server.process.stdin is not None
        await server.process.stdin.aclose()
    else:
        server.process.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
    code = await server.wait()

    other = await make_queue("successor", real_clock=True)
    [again] = await other.read_messages(count=1)
    assert code == (130 if how == "SIGINT" else 0)  # Ctrl-C exits 130, as every command does
    assert (again.task_id, again.attempt) == ("held", 1)
    assert f"received {how}" in server.stderr.read_text() or how == "stdin EOF"


async def test_the_sdk_client_runs_a_task_round_trip_over_stdio(settings: Settings) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_queue_server"], env=server_env(settings, "sdk"), cwd=ROOT
    )
    with anyio.fail_after(START_S + 20):
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            enqueued = await client.call_tool("enqueue_task", {"task_type": "t", "payload": {"n": 1}})
            read = await client.call_tool("read_tasks", {"count": 5})
            assert read.structured_content is not None
            [task] = read.structured_content["tasks"]
            acked = await client.call_tool("ack", {"task_id": task["task_id"], "result": [1, 2]})
            bad = await client.call_tool("read_tasks", {"count": 0})

    assert "read_tasks" in names
    assert enqueued.structured_content is not None
    assert task["task_id"] == enqueued.structured_content["task_id"]
    assert acked.structured_content is not None
    assert acked.structured_content["status"] == "acked"
    assert bad.is_error


def test_help_documents_every_flag_with_its_environment_variable() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mcp_queue_server", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout

    for flag, env in [
        ("--redis-url", "MCP_QUEUE_REDIS_URL"),
        ("--consumer", "MCP_QUEUE_CONSUMER"),
        ("--lease-ms", "MCP_QUEUE_LEASE_MS"),
        ("--max-attempts", "MCP_QUEUE_MAX_ATTEMPTS"),
        ("--retry-backoff-ms", "MCP_QUEUE_RETRY_BACKOFF_MS"),
        ("--priority-threshold", "MCP_QUEUE_PRIORITY_THRESHOLD"),
        ("--key-prefix", "MCP_QUEUE_KEY_PREFIX"),
        ("--max-payload-bytes", "MCP_QUEUE_MAX_PAYLOAD_BYTES"),
        ("--role", "MCP_QUEUE_ROLE"),
        ("--data-dir", "MCP_QUEUE_DATA_DIR"),
        ("--log-level", "MCP_QUEUE_LOG_LEVEL"),
        ("--transport", "MCP_QUEUE_TRANSPORT"),
        ("--host", "MCP_QUEUE_HOST"),
        ("--port", "MCP_QUEUE_PORT"),
        ("--auth-token", "MCP_QUEUE_AUTH_TOKEN"),
    ]:
        assert flag in out
        assert env in out.replace("\n", " ").replace("  ", ""), env


def test_flags_override_the_environment() -> None:
    from mcp_queue_server.cli.main import load_settings

    env = {"MCP_QUEUE_LEASE_MS": "1000", "MCP_QUEUE_ROLE": "admin", "MCP_QUEUE_REDIS_URL": ""}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = load_settings(["--lease-ms", "2500", "--allowed-host", "a.example", "--allowed-host", "b.example"])

    assert settings.lease_ms == 2500
    assert settings.role == "admin"
    assert settings.redis_url is None  # empty means unset: the embedded Redis
    assert settings.allowed_hosts == ["a.example", "b.example"]


def test_invalid_settings_exit_with_status_2_and_a_message() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_queue_server", "--max-attempts", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "")},
    )

    assert done.returncode == 2
    assert "--max-attempts" in done.stderr
    assert done.stdout == ""


async def test_nan_and_infinity_sent_over_the_wire_are_refused(settings: Settings, spawn: Any) -> None:
    server = await spawn(server_env(settings, "nan"))

    nan = await server.call_raw("enqueue_task", '{"task_type":"t","payload":{"x":NaN}}')
    inf = await server.call_raw("enqueue_task", '{"task_type":"t","payload":{},"priority":Infinity}')

    assert nan["isError"] is True
    assert "no NaN or Infinity" in nan["content"][0]["text"]
    assert inf["isError"] is True
    assert inf["content"][0]["text"] == "priority must be an integer, got an infinite number"


async def test_a_line_written_in_pieces_split_inside_a_character_is_read_as_one_message(
    settings: Settings, spawn: Any
) -> None:
    server = await spawn(server_env(settings, "pieces"))
    assert server.process.stdin is not None
    args = {"task_type": "t", "payload": {"text": "héllo ✓"}, "task_id": "split"}
    line = json.dumps({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "enqueue_task",
                       "arguments": args}}, ensure_ascii=False).encode() + b"\n"  # fmt: skip
    cut = line.index("✓".encode()) + 1  # inside the 3-byte character
    await server.process.stdin.send(line[:cut])
    await anyio.sleep(0.05)  # not a sync: the first piece mostly arrives alone, as from a slow client
    await server.process.stdin.send(line[cut:])
    server._next_id = 99
    with anyio.fail_after(10):
        result = await server._reply()
    [task] = (await server.call("read_tasks"))["tasks"]

    assert result["structuredContent"]["task_id"] == "split"
    assert task["payload"] == {"text": "héllo ✓"}


def test_lines_from_a_regular_file_on_stdin_are_read_to_the_last_unterminated_one_then_the_server_exits(
    settings: Settings, tmp_path: Path
) -> None:
    init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "file", "version": "1"}}
    lines = [
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        "not json",
        '{"jsonrpc": "2.0", "id": 2, "method": "tools/list"',  # cut short, and without a newline
    ]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(lines))
    with requests.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "mcp_queue_server"], stdin=stdin, capture_output=True, cwd=ROOT, timeout=START_S,
            env=server_env(settings, "file"),
        )  # fmt: skip

    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, done.stderr
    assert [a.get("id") for a in answers] == [1, None, None]
    assert answers[0]["result"]["serverInfo"]["name"] == "mcp-queue-server"
    assert [a["error"]["message"] for a in answers[1:]] == ["not valid JSON: line ignored"] * 2


def test_a_server_spawned_with_stdin_on_dev_null_sees_the_end_of_input_and_exits_cleanly(settings: Settings) -> None:
    # epoll refuses /dev/null (EPERM): an orchestrator that gives the server no input must get a
    # clean exit, not a traceback.
    done = subprocess.run(
        [sys.executable, "-m", "mcp_queue_server"], stdin=subprocess.DEVNULL, capture_output=True, cwd=ROOT,
        timeout=START_S, env=server_env(settings, "devnull"),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    assert b"Traceback" not in done.stderr


async def test_an_answer_larger_than_the_pipe_reaches_a_client_that_reads_it_late(
    settings: Settings, spawn: Any
) -> None:
    server = await spawn(server_env(settings, "big"))
    text = "x" * 60_000
    tasks = [{"task_type": "t", "payload": {"text": text, "n": i}} for i in range(20)]
    await server.call("enqueue_batch", tasks=tasks)
    assert server.process.stdin is not None
    await server.send({"jsonrpc": "2.0", "id": 500, "method": "tools/call",
                       "params": {"name": "read_tasks", "arguments": {"count": 20}}})  # fmt: skip
    # About 2.4 MB of answer (the text twice) against a 64 KiB pipe: the server must wait for
    # this reader, and then finish the message, while its loop keeps serving.
    server._next_id = 500
    with anyio.fail_after(20):
        read = await server._reply()
    acked = await server.call("ack", task_ids=[t["task_id"] for t in read["structuredContent"]["tasks"]])

    assert [t["payload"]["n"] for t in read["structuredContent"]["tasks"]] == list(range(20))
    assert all(t["payload"]["text"] == text for t in read["structuredContent"]["tasks"])
    assert [t["status"] for t in acked["tasks"]] == ["acked"] * 20
