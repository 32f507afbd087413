"""The /status page in a real headless Chromium: signing in through the form, then screenshots.

Needs Debian's ``chromium`` (``.ci/run`` installs it). Without it the tests are skipped,
unless ``MCP_QUEUE_TEST_REQUIRE_BROWSER=1`` (set by CI) turns that into a failure.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette

from mcp_queue_server import NewTask, Settings, TaskQueue
from mcp_queue_server.observe.http import SESSION_COOKIE, routes
from mcp_queue_server.observe.metrics import Metrics
from mcp_queue_server.testing import free_port
from tests.chromium import PNG_MAGIC, Browser, browser, chromium, headless, read_png
from tests.conftest import FakeClock, QueueFactory
from tests.test_http import TOKEN
from tests.test_metrics import scrape_when_up
from tests.test_stdio import START_S, StdioServer, server_env

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
NASTY_ERROR = "<b>boom</b> " + "a long stack trace line " * 20


async def busy_queues(make_queue: QueueFactory, clock: FakeClock, metrics: Metrics) -> None:
    """Two queues with waiting, in-flight, overdue and dead tasks, and totals sampled between batches."""
    worker: TaskQueue = await make_queue("worker-<1>", real_clock=True)
    await metrics.refresh()
    for batch in range(6):
        ids = [f"r{batch}-{i}" for i in range(batch + 2)]
        tasks = [NewTask("render", {"n": i}, i % 2 * 20, t) for i, t in enumerate(ids)]
        await worker.enqueue_batch(tasks, queue="reports")
        for task in await worker.read_messages(count=batch + 1, lease_ms=600_000, queue="reports"):
            await worker.acknowledge(task.task_id, queue="reports")
        await worker.enqueue("mail", {}, task_id=f"m{batch}")
        await metrics.refresh()
    await worker.enqueue("mail", {}, task_id="doomed-7")
    delivered = [t.task_id for t in await worker.read_messages(count=10, lease_ms=600_000)]
    assert "doomed-7" in delivered
    await worker.fail("doomed-7", NASTY_ERROR, retry=False)
    await worker.read_messages(count=1, lease_ms=600_000, queue="reports")  # one more held by worker-<1>
    # Last, as no read of "reports" may follow (it would reclaim them): two leases that expired an hour ago.
    clock.advance(-3_600_000)  # an hour behind the store's clock: its leases have expired
    stale: TaskQueue = await make_queue("stalled-worker")
    await stale.enqueue_batch([NewTask("render", {}, 0, f"stuck-{i}") for i in range(2)], queue="reports")
    await stale.read_messages(count=2, lease_ms=1_000, queue="reports")


@asynccontextmanager
async def status_server(metrics: Metrics) -> AsyncIterator[str]:
    """``/metrics`` and ``/status`` served in this process on a free port; yields the base URL."""
    port = free_port()
    app = Starlette(routes=routes(metrics))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False)
    server = QuietServer(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            with anyio.fail_after(START_S):
                await server.ready.wait()
            yield f"http://127.0.0.1:{port}"
            server.should_exit = True
    finally:
        await metrics.aclose()


class QuietServer(uvicorn.Server):
    """uvicorn leaving the test runner's signal handlers alone, and saying when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def sign_in_and_shoot(binary: str, tmp_path: Path, base: str) -> dict[str, Any]:
    """In one browser: the form, the token typed in, the page, its cookie, four screenshots."""
    out: dict[str, Any] = {}
    with browser(binary, tmp_path / "profile") as page:
        page.open(f"{base}/status")
        out["form"] = page.html()
        page.submit_form("token", TOKEN)
        out["url"] = page.evaluate("location.href")
        out["html"] = page.html()
        out["cookies"] = page.send("Network.getCookies", {"urls": [f"{base}/status"]})["cookies"]
        out["shots"] = {
            (name, dark): shoot(page, tmp_path / f"status-{name}-{'dark' if dark else 'light'}.png", size, dark)
            for name, size in SIZES.items()
            for dark in (False, True)
        }
    return out


def shoot(page: Browser, path: Path, size: tuple[int, int], dark: bool) -> bytes:
    return page.screenshot(path, *size, dark=dark)


async def test_a_browser_signs_in_with_the_token_and_sees_the_queues_in_light_and_dark_at_two_widths(
    settings: Settings, make_queue: QueueFactory, clock: FakeClock, tmp_path: Path
) -> None:
    binary = chromium()
    configured = settings.model_copy(update={"auth_token": SecretStr(TOKEN)})
    metrics = Metrics(configured, ["default", "reports"], sample_gap_s=0)
    await busy_queues(make_queue, clock, metrics)

    async with status_server(metrics) as base:
        seen = await anyio.to_thread.run_sync(lambda: sign_in_and_shoot(binary, tmp_path, base))

    assert '<input type="password" name="token"' in seen["form"]
    assert seen["url"] == f"{base}/status"  # the redirect after the POST; no token in it
    html: str = seen["html"]
    assert "<h2>reports</h2>" in html
    assert "<h2>default</h2>" in html
    assert "<svg" in html
    assert html.count("<polyline") == 4  # enqueued and completed, per queue
    assert "doomed-7" in html  # the newest dead letter
    assert "&lt;b&gt;boom&lt;/b&gt;" in html
    assert "<b>boom</b>" not in html
    assert "worker-&lt;1&gt;" in html
    assert "<dt>overdue</dt><dd>2</dd>" in html
    assert "<script" not in html.lower()
    assert "http" not in html.split("<body", 1)[1]  # no external assets
    [cookie] = seen["cookies"]
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        SESSION_COOKIE,
        True,
        "Strict",
        "/status",
    )
    assert TOKEN not in cookie["value"]

    for (name, dark), png in seen["shots"].items():
        image = read_png(png)
        assert (image.width, image.height) == SIZES[name], name
        assert len(image.colours()) >= 8, f"{name} {dark}: a blank page"
    for name in SIZES:
        light, dark = read_png(seen["shots"][name, False]), read_png(seen["shots"][name, True])
        assert light.pixels != dark.pixels
        assert dark.mean() < light.mean() - 100, f"{name}: dark mode is not dark"


async def test_the_status_page_of_the_real_entry_point_renders_in_a_browser_without_a_token(
    settings: Settings, tmp_path: Path
) -> None:
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
    assert "<h2>reports</h2>" in html
    assert "<dt>waiting</dt><dd>3<small>high 2 · low 1</small></dd>" in html
    assert "too few samples yet" in html or "<svg" in html
    assert "<form" not in html  # no token configured: no login
    image = shot.read_bytes()
    assert image.startswith(PNG_MAGIC)
    assert len(read_png(image).colours()) >= 8
