"""Named tokens with roles (issue 12, part 3): MCP_QUEUE_AUTH_TOKENS_FILE against a real HTTP server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_queue_server import Settings
from mcp_queue_server.server.app import tool_names
from mcp_queue_server.settings import Role
from tests.conftest import QueueFactory
from tests.test_http import http_server, post_initialize
from tests.test_stdio import ROOT

TOKENS = {
    "maker": {"token": "producer-token-0123456789", "role": "producer"},
    "crew1": {"token": "worker-token-0123456789ab", "role": "worker"},
    "ops": {"token": "admin-token-0123456789abcd", "role": "admin"},
}


def tokens_file(directory: Path, tokens: object = TOKENS, mode: int = 0o600) -> Path:
    path = directory / "tokens.json"
    path.write_text(json.dumps(tokens))
    path.chmod(mode)
    return path


def bearer(principal: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[principal]['token']}"}


async def test_each_principal_sees_and_calls_only_its_roles_tools_and_holds_under_its_name(
    settings: Settings, make_queue: QueueFactory, tmp_path: Path
) -> None:
    observer = await make_queue("observer", real_clock=True)
    await observer.enqueue("t", {}, task_id="p1")
    path = tokens_file(tmp_path)
    seen: dict[str, set[str]] = {}
    async with http_server(settings, "streamable-http", token=None, MCP_QUEUE_AUTH_TOKENS_FILE=str(path)) as server:
        for principal in TOKENS:
            async with httpx2.AsyncClient(headers=bearer(principal), timeout=30) as http:
                with anyio.fail_after(30):
                    async with Client(streamable_http_client(server.url, http_client=http), mode="legacy") as c:
                        seen[principal] = {t.name for t in (await c.list_tools()).tools}
                        if principal == "maker":
                            refused = await c.call_tool("read_tasks", {})
                        if principal == "crew1":
                            await c.call_tool("read_tasks", {"lease_ms": 600_000})
                            held = await c.call_tool("get_task", {"task_id": "p1"})
        wrong = await post_initialize(server.url, {"Authorization": "Bearer producer-token-0123456789x"})
        async with httpx2.AsyncClient(timeout=10) as http:
            metrics_url = server.url.removesuffix("/mcp") + "/metrics"
            by_admin = await http.get(metrics_url, headers=bearer("ops"))
            by_worker = await http.get(metrics_url, headers=bearer("crew1"))

    assert seen == {p: set(tool_names(Role(e["role"]))) for p, e in TOKENS.items()}
    assert refused.is_error
    assert refused.content[0].text.startswith("read_tasks is not available to principal maker (role producer)")  # type: ignore[union-attr]
    assert held.structured_content is not None
    assert held.structured_content["lease_holder"].startswith("http-streamable-http/crew1/")
    assert wrong.status_code == 401
    assert (by_admin.status_code, by_worker.status_code) == (200, 401)
    assert not any(entry["token"] in "".join(server.log) for entry in TOKENS.values())


def _serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_queue_server", "--transport", "streamable-http", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "MCP_QUEUE_REDIS_URL": "redis://127.0.0.1:1/0", **env},
        timeout=60,
    )


def test_a_tokens_file_others_may_read_refuses_the_start_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tokens_file(tmp_path, mode=0o644)

    done = _serve("--auth-tokens-file", str(path))

    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert str(path) in line
    assert "chmod 600" in line


def test_a_tokens_file_with_a_short_token_or_beside_the_single_token_refuses_the_start(tmp_path: Path) -> None:
    short = tokens_file(tmp_path, {"a": {"token": "short", "role": "worker"}})
    both = _serve("--auth-tokens-file", str(short), MCP_QUEUE_AUTH_TOKEN="x" * 20)
    too_short = _serve("--auth-tokens-file", str(short))

    assert (both.returncode, too_short.returncode) == (2, 2)
    assert "not both" in both.stderr
    assert "at least 16 characters" in too_short.stderr
