"""The /status page rendered by a real headless Chromium, with a screenshot.

Needs Debian's ``chromium`` (``.ci/run`` installs it). Without it the test is skipped,
unless ``MCP_QUEUE_TEST_REQUIRE_BROWSER=1`` (set by CI) turns that into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest

from mcp_queue_server import Settings
from tests.redis_proc import free_port
from tests.test_metrics import scrape_when_up
from tests.test_stdio import StdioServer, server_env

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("MCP_QUEUE_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return found


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    # The flags keep Chromium off the (closed) network and away from a user profile.
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([binary, *flags, *args], capture_output=True, timeout=60, check=True)


async def test_the_status_page_renders_queue_figures_in_a_real_browser(settings: Settings, tmp_path: Path) -> None:
    binary = chromium()
    port = free_port()
    server = await StdioServer.start(
        server_env(settings, "browser", MCP_QUEUE_METRICS_PORT=str(port)), tmp_path / "stderr.log"
    )
    try:
        for i in range(3):
            await server.call("enqueue_task", task_type="t", payload={"i": i}, queue="reports", priority=i * 10)
        await scrape_when_up(f"http://127.0.0.1:{port}/metrics")
        url = f"http://127.0.0.1:{port}/status"
        shot = tmp_path / "status.png"
        dom = await anyio.to_thread.run_sync(lambda: headless(binary, tmp_path / "p1", "--dump-dom", url))
        await anyio.to_thread.run_sync(
            lambda: headless(binary, tmp_path / "p2", f"--screenshot={shot}", "--window-size=1100,700", url)
        )
    finally:
        await server.terminate()

    html = dom.stdout.decode()
    assert "<td>reports</td><td>3 (2 / 1)</td>" in html
    assert "<script" not in html.lower()  # no scripts, no external assets
    assert "http" not in html.split("<body", 1)[1].replace(url, "")
    image = shot.read_bytes()
    assert image.startswith(PNG_MAGIC)
    assert len(image) > 5_000  # a rendered page, not an empty canvas
