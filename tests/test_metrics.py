"""Prometheus metrics: scraped from /metrics and parsed, in-process and from the real entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from mcp_queue_server import ConsumerInfo, NewTask, QueueStats, Settings, StreamStats, TaskQueue
from mcp_queue_server.observe.metrics import Metrics
from mcp_queue_server.observe.status_page import status_page
from tests.redis_proc import free_port
from tests.test_http import BEARER, TOKEN, http_server
from tests.test_stdio import START_S, StdioServer, server_env

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def scrape(url: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    async with httpx2.AsyncClient() as client:
        return await client.get(url, headers=headers)


async def scrape_when_up(url: str) -> Samples:
    """Scrape a server that may still be starting (bounded: an external process's readiness)."""
    with anyio.fail_after(START_S):
        while True:
            try:
                response = await scrape(url)
            except httpx2.ConnectError:
                await anyio.sleep(0.1)
                continue
            assert response.status_code == 200
            return parse(response.text)


async def busy_queue(queue: TaskQueue) -> None:
    """Two waiting (one high), one in flight, one dead, one completed."""
    await queue.enqueue_batch([NewTask("t", {}, p, f"t{p}") for p in (0, 1, 2, 20, 3)])
    await queue.read_messages(count=3)  # t20 (high), t0, t1
    await queue.acknowledge("t20")
    await queue.fail("t0", "broken", retry=False)


async def test_a_scrape_reports_depths_in_flight_dead_letters_and_totals(settings: Settings, queue: TaskQueue) -> None:
    await busy_queue(queue)
    metrics = Metrics(settings)

    samples = parse((await metrics.render()).decode())
    await metrics.aclose()

    assert sample(samples, "mcp_queue_store_up") == 1
    assert sample(samples, "mcp_queue_waiting_tasks", queue="default", priority="low") == 2
    assert sample(samples, "mcp_queue_waiting_tasks", queue="default", priority="high") == 0
    assert sample(samples, "mcp_queue_in_flight_tasks", queue="default") == 1
    assert sample(samples, "mcp_queue_dead_letter_tasks", queue="default") == 1
    assert sample(samples, "mcp_queue_tasks_enqueued_total", queue="default") == 5
    assert sample(samples, "mcp_queue_tasks_completed_total", queue="default") == 1
    assert sample(samples, "mcp_queue_tasks_dead_lettered_total", queue="default") == 1
    assert sample(samples, "mcp_queue_oldest_waiting_age_seconds", queue="default") >= 0


async def test_a_timed_tool_records_its_latency_and_the_queue_it_named(settings: Settings) -> None:
    metrics = Metrics(settings)

    async def enqueue_task(payload: dict[str, Any], queue: str = "default") -> str:
        return "ok"

    async def fail_task(queue: str = "default") -> None:
        raise RuntimeError("refused")

    timed_ok, timed_error = metrics.timed(enqueue_task), metrics.timed(fail_task)
    await timed_ok({}, queue="reports")
    with pytest.raises(RuntimeError):
        await timed_error()
    samples = parse((await metrics.render()).decode())
    await metrics.aclose()

    assert timed_ok.__name__ == "enqueue_task"
    assert sample(samples, "mcp_queue_tool_call_duration_seconds_count", tool="enqueue_task", outcome="ok") == 1
    assert sample(samples, "mcp_queue_tool_call_duration_seconds_count", tool="fail_task", outcome="error") == 1
    assert sample(samples, "mcp_queue_in_flight_tasks", queue="reports") == 0  # now reported


async def test_a_scrape_while_the_store_is_down_reports_it_instead_of_failing(settings: Settings) -> None:
    url = SecretStr(f"redis://127.0.0.1:{free_port()}/0")
    metrics = Metrics(settings.model_copy(update={"redis_url": url, "socket_timeout_s": 1.0}))

    samples = parse((await metrics.render()).decode())
    await metrics.aclose()

    assert sample(samples, "mcp_queue_store_up") == 0


async def test_the_http_transport_serves_metrics_and_status_behind_its_token_and_host_checks(
    settings: Settings, queue: TaskQueue
) -> None:
    await busy_queue(queue)
    async with http_server(settings, "streamable-http") as server:
        url = server.url.replace("/mcp", "/metrics")
        refused = await scrape(url)
        allowed = await scrape(url, BEARER)
        rebound = await scrape(url, BEARER | {"Host": "evil.example"})
        status = await scrape(server.url.replace("/mcp", "/status"), BEARER)

    assert (refused.status_code, rebound.status_code, status.status_code) == (401, 421, 200)
    assert status.headers["content-type"].startswith("text/html")
    assert "<td>default</td><td>2 (0 / 2)</td>" in status.text
    assert allowed.status_code == 200
    assert allowed.headers["content-type"].startswith("text/plain")
    assert sample(parse(allowed.text), "mcp_queue_waiting_tasks", queue="default", priority="low") == 2
    assert TOKEN not in allowed.text


async def test_stdio_mode_serves_metrics_on_the_metrics_port_with_tool_latencies(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = server_env(settings, "stdio-metrics", MCP_QUEUE_METRICS_PORT=str(port))
    server = await StdioServer.start(env, tmp_path / "stderr.log")
    try:
        await server.call("enqueue_task", task_type="t", payload={}, queue="jobs")
        samples = await scrape_when_up(f"http://127.0.0.1:{port}/metrics")
        status = await scrape(f"http://127.0.0.1:{port}/status")
    finally:
        await server.terminate()

    assert sample(samples, "mcp_queue_tool_call_duration_seconds_count", tool="enqueue_task", outcome="ok") == 1
    assert sample(samples, "mcp_queue_waiting_tasks", queue="jobs", priority="low") == 1
    assert sample(samples, "mcp_queue_store_up") == 1
    assert "<td>jobs</td>" in status.text
    assert server.process.returncode == 0


def test_the_status_page_escapes_names_and_says_when_the_store_is_down() -> None:
    empty = StreamStats(0, 0, 0)
    odd = QueueStats("q", empty, empty, 0, 1, 0, 0, None, [ConsumerInfo("<script>x</script>", 1, 10)])

    page = status_page([odd], True, "mcpq")
    down = status_page([], False, "mcpq")

    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "queue store unavailable" in down
