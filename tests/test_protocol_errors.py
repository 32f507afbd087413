"""The protocol's own checks: a request the server cannot serve gets the right JSON-RPC error
with its reason (-32602 for bad params, -32700 for a line it cannot parse), at once, and the
server answers the next request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.types import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server
from tests.test_stdio import StdioServer, server_env


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as c:
        yield c


@pytest.mark.parametrize(
    ("name", "arguments", "says"),
    [
        ("worker_lop", {}, "unknown prompt worker_lop: did you mean worker_loop?"),
        ("nope", {}, "unknown prompt nope: the valid ones are worker_loop, triage_dlq"),
        ("worker_loop", {"queeu": "q"}, "unknown argument queeu of prompt worker_loop: did you mean queue?"),
        ("worker_loop", {"queue": "bad*name"}, "invalid queue name 'bad*name': use 1-64 characters"),
        ("triage_dlq", {"queue": "a b"}, "invalid queue name 'a b'"),
    ],
)
async def test_a_prompt_that_cannot_be_served_is_invalid_params_with_the_reason(
    client: Client, name: str, arguments: dict[str, str], says: str
) -> None:
    with pytest.raises(MCPError) as caught:
        await client.get_prompt(name, arguments)

    assert caught.value.code == INVALID_PARAMS
    assert says in caught.value.message


async def test_prompt_arguments_are_described(client: Client) -> None:
    prompts = (await client.list_prompts()).prompts

    assert all(argument.description for prompt in prompts for argument in prompt.arguments or ())


@pytest.mark.parametrize("uri", ["queue://bad*name/stats", "dlq://a b", "task://ok/bad id"])
async def test_a_resource_uri_with_a_bad_name_is_invalid_params_with_the_reason(client: Client, uri: str) -> None:
    with pytest.raises(MCPError) as caught:
        await client.read_resource(uri)

    assert caught.value.code == INVALID_PARAMS
    assert "invalid" in caught.value.message
    assert "use 1-" in caught.value.message


async def _answer(server: StdioServer, line: bytes, want_id: Any) -> dict[str, Any]:
    """Write one raw line and read stdout until the message answering ``want_id`` (bounded)."""
    assert server.process.stdin is not None
    await server.process.stdin.send(line + b"\n")
    with anyio.fail_after(5):  # at once: no client timeout involved
        while True:
            raw = await server._stdout.receive_until(b"\n", 10 * 1024 * 1024)  # the raw pipe
            message: dict[str, Any] = json.loads(raw)
            if message.get("id") == want_id and ("result" in message or "error" in message):
                return message


def _deep_request(request_id: int, depth: int) -> bytes:
    arguments = {"task_type": "t", "payload": {"x": 0}}
    text = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {}})
    deep = "[" * depth + "]" * depth
    body = json.dumps({"name": "enqueue_task", "arguments": arguments}).replace("0}}", deep + "}}")
    return text.replace('"params": {}', f'"params": {body}').encode()


async def test_a_request_nested_past_the_parser_s_limit_gets_a_parse_error_at_once_over_stdio(
    settings: Settings, tmp_path: Path
) -> None:
    server = await StdioServer.start(server_env(settings, "deep"), tmp_path / "stderr.log")
    try:
        deep = await _answer(server, _deep_request(501, 300), 501)
        deeper = await _answer(server, _deep_request(502, 100_000), None)
        garbage = await _answer(server, b"not json at all", None)
        stranger = await _answer(server, b'{"jsonrpc": "2.0", "id": 503, "method": 7}', 503)
        stats = await server.call("queue_stats")
    finally:
        await server.terminate()

    assert deep["error"]["code"] == PARSE_ERROR
    assert "nested too deep" in deep["error"]["message"]
    assert deeper["error"]["code"] == PARSE_ERROR  # too deep even to find its id
    assert garbage["error"] == {"code": PARSE_ERROR, "message": "not valid JSON: line ignored"}
    assert stranger["error"]["code"] == INVALID_REQUEST
    assert stats["queue"] == "default"
