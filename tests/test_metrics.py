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
from mcp_queue_server.core.models import DeadTask
from mcp_queue_server.observe.metrics import HISTORY_SAMPLES, MAX_QUEUES, MIN_SAMPLE_GAP_S, Metrics, QueueView, Sample
from mcp_queue_server.observe.status_page import status_page
from mcp_queue_server.testing import free_port
from tests.conftest import FakeClock
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
    assert "<h2>default</h2>" in status.text
    assert "<dt>waiting</dt><dd>2<small>high 0 · low 2</small></dd>" in status.text
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
    assert "<h2>jobs</h2>" in status.text
    assert server.process.returncode == 0


def test_the_status_page_escapes_names_and_says_when_the_store_is_down() -> None:
    empty = StreamStats(0, 0, 0)
    odd = QueueStats("<b>q</b>", empty, empty, 0, 1, 0, 1, None, [ConsumerInfo("<script>x</script>", 1, 10)])
    dead = DeadTask("<i>id</i>", "<u>type</u>", None, "<img src=x>" + "e" * 500, 3, 3, 0, None, None, None, 0, None)

    page = status_page([QueueView(odd, [], [dead])], True, "mcpq")
    down = status_page([], False, "mcpq")

    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "&lt;b&gt;q&lt;/b&gt;" in page
    assert "&lt;i&gt;id&lt;/i&gt;" in page
    assert "&lt;u&gt;type&lt;/u&gt;" in page
    assert "<img" not in page
    assert "e" * 200 not in page.split("title=")[0]  # the error is clipped in the cell
    assert "queue store unavailable" in down


async def test_an_expired_lease_not_yet_reclaimed_counts_as_overdue_until_a_recovery(
    settings: Settings, queue: TaskQueue, clock: FakeClock
) -> None:
    clock.advance(-3_600_000)  # this queue runs an hour behind: its leases have expired by the store's clock
    await queue.enqueue_batch([NewTask("t", {}, 0, f"t{i}") for i in range(3)])
    await queue.read_messages(count=2, lease_ms=1_000)
    metrics = Metrics(settings)

    before = await queue.get_queue_stats()
    clock.advance(1_000)
    expired = await queue.get_queue_stats()
    scraped = parse((await metrics.render()).decode())
    await queue.recover()
    after = parse((await metrics.render()).decode())
    await metrics.aclose()

    assert (before.overdue, before.in_flight) == (0, 2)
    assert (expired.overdue, expired.in_flight) == (2, 2)
    assert sample(scraped, "mcp_queue_overdue_tasks", queue="default") == 2
    assert sample(after, "mcp_queue_overdue_tasks", queue="default") == 0


async def test_each_refresh_samples_the_totals_in_a_bounded_ring_at_least_a_gap_apart(
    settings: Settings, queue: TaskQueue
) -> None:
    metrics = Metrics(settings)
    await metrics.refresh()
    await metrics.aclose()

    metrics.history.clear()
    for i in range(HISTORY_SAMPLES + 20):
        metrics._sample(i * MIN_SAMPLE_GAP_S)
        metrics._sample(i * MIN_SAMPLE_GAP_S + MIN_SAMPLE_GAP_S / 2)  # too soon: skipped
    ring = metrics.history["default"]

    assert len(ring) == HISTORY_SAMPLES
    assert ring[0].at == 20 * MIN_SAMPLE_GAP_S
    assert all(b.at - a.at == MIN_SAMPLE_GAP_S for a, b in zip(ring, list(ring)[1:], strict=False))


def test_the_status_page_draws_rates_once_it_has_samples_and_says_so_before() -> None:
    empty = StreamStats(0, 0, 0)
    stats = QueueStats("jobs", empty, empty, 0, 0, 0, 0, None, [], {"enqueued": 40, "completed": 30})
    samples = [Sample(100.0 + 5 * i, 10 * i, 6 * i) for i in range(5)]

    early = status_page([QueueView(stats, samples[:2], [])], True, "mcpq")
    drawn = status_page([QueueView(stats, samples, [])], True, "mcpq")

    assert "too few samples yet" in early
    assert "<svg" not in early
    assert drawn.count("<polyline") == 2
    assert "enqueued 120/min" in drawn  # 10 per 5 s
    assert "completed 72/min" in drawn


async def test_the_status_view_lists_the_newest_dead_letters_of_each_queue(
    settings: Settings, queue: TaskQueue
) -> None:
    await busy_queue(queue)
    metrics = Metrics(settings)

    [view] = await metrics.status_view()
    page = status_page([view], metrics.store_up, settings.key_prefix)
    await metrics.aclose()

    assert [d.task_id for d in view.dead] == ["t0"]
    assert "newest dead letters (1 of 1)" in page
    assert "broken" in page
    assert view.samples[-1].enqueued == 5


async def test_a_scrape_and_the_status_page_show_each_limit_keys_limit_and_counts(
    settings: Settings, queue: TaskQueue
) -> None:
    await queue.set_limit("llm/x", max_working=1, max_per_minute=10)
    await queue.set_limit("db", max_per_minute=5)
    await queue.enqueue_batch([NewTask("t", {}, task_id=f"k{i}", limit_key="llm/x") for i in range(3)])
    await queue.read_messages(count=10)
    metrics = Metrics(settings)

    samples = parse((await metrics.render()).decode())
    [view] = await metrics.status_view()
    await metrics.aclose()

    def limit(name: str, key: str) -> float:
        return sample(samples, f"mcp_queue_limit_{name}", queue="default", key=key)

    assert [limit(n, "llm/x") for n in ("working", "waiting", "started_last_minute")] == [1, 2, 1]
    assert (limit("max_working", "llm/x"), limit("max_per_minute", "llm/x")) == (1, 10)
    assert limit("max_per_minute", "db") == 5
    assert ("mcp_queue_limit_max_working", (("key", "db"), ("queue", "default"))) not in samples
    page = status_page([view], True, "mcpq")
    assert "<h3>limits</h3>" in page
    assert "llm/x" in page
    assert "<td>1 / 1</td>" in page


async def test_a_scrape_over_more_queues_than_it_reports_shows_the_first_ones_each_with_its_own_depth(
    settings: Settings, queue: TaskQueue
) -> None:
    for i in range(MAX_QUEUES + 30):  # read in pages of 100 queues: each row must stay its queue's
        await queue.enqueue_batch([NewTask("t", {}) for _ in range(i % 7 + 1)], queue=f"q{i:03d}")
    metrics = Metrics(settings)

    samples = parse((await metrics.render()).decode())
    await metrics.aclose()

    reported = {dict(labels)["queue"] for (name, labels) in samples if name == "mcp_queue_in_flight_tasks"}
    assert reported == {"default", *(f"q{i:03d}" for i in range(MAX_QUEUES - 1))}  # the bound, in name order
    for i in range(MAX_QUEUES - 1):
        assert sample(samples, "mcp_queue_waiting_tasks", queue=f"q{i:03d}", priority="low") == i % 7 + 1
