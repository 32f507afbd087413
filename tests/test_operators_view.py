"""Operators see every queue and every worker: the registry of queues, holders' heartbeats,
and start-up errors that tell a wrong MCP_QUEUE_REDIS_URL from a passing outage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from mcp import Client
from pydantic import SecretStr

from mcp_queue_server import NewTask, QueueError, QueueUnavailable, Settings, StoreMisconfigured, TaskQueue
from mcp_queue_server.limits import HOLDER_STALE_MS
from mcp_queue_server.server.app import build_server
from mcp_queue_server.server.lifespan import ServerState
from mcp_queue_server.testing import RedisProc, free_port
from mcp_queue_server.worker.runtime import Worker
from tests.conftest import FakeClock, QueueFactory
from tests.test_cli import cli

WAIT_S = 10


async def test_a_queue_joins_the_registry_with_its_first_enqueue_and_stats_show_it_unasked(
    queue: TaskQueue,
) -> None:
    await queue.enqueue_batch([_new() for _ in range(20)], queue="orch")
    await queue.enqueue("t", {})

    assert await queue.known_queues() == ["default", "orch"]
    stats = {s.queue: s for s in await queue.all_queue_stats()}
    assert stats["orch"].available == 20


async def test_a_fanout_registers_its_queue(queue: TaskQueue) -> None:
    await queue.fanout("parent", [_new()], queue="fans")
    assert await queue.known_queues() == ["fans"]


async def test_cli_stats_and_top_show_every_known_queue_without_being_told(
    settings: Settings, queue: TaskQueue
) -> None:
    await queue.enqueue_batch([_new() for _ in range(20)], queue="orch")

    stats = await cli(settings, "stats")
    top = await cli(settings, "top", "--once")

    assert stats.code == top.code == 0, stats.err + top.err
    assert [line.split()[:2] for line in stats.out.splitlines()[1:-1]] == [["orch", "20"]]
    assert any(line.split()[:2] == ["orch", "20"] for line in top.out.splitlines())


async def test_queues_forget_takes_a_queue_out_and_its_next_enqueue_puts_it_back(
    settings: Settings, make_queue: QueueFactory
) -> None:
    producer = await make_queue("producer")
    await producer.enqueue("t", {}, queue="old")

    listed = await cli(settings, "queues", "list")
    forgot = await cli(settings, "queues", "forget", "old")
    after = await cli(settings, "queues", "list", "--json")

    assert listed.out.split() == ["old"]
    assert forgot.code == 0
    assert "forgot queue old" in forgot.err
    assert after.out.strip() == "[]"
    fresh = await make_queue("another-process")
    await fresh.enqueue("t", {}, queue="old")
    assert await fresh.known_queues() == ["old"]


async def test_a_queue_emptied_and_its_dead_letters_purged_leaves_the_registry(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="doomed", queue="short-lived")
    [task] = await queue.read_messages(queue="short-lived")
    await queue.fail(task.task_id, "no", retry=False, queue="short-lived")
    assert await queue.known_queues() == ["short-lived"]

    # The reader is still a live holder: the queue stays while someone uses it.
    await queue.purge_dlq(queue="short-lived")
    assert await queue.known_queues() == ["short-lived"]
    await queue.release()  # leaving drops the holder
    await queue.purge_dlq(queue="short-lived")
    assert await queue.known_queues() == []


async def test_an_idle_worker_on_an_empty_queue_shows_as_a_consumer_with_its_last_heartbeat(
    make_queue: QueueFactory,
) -> None:
    worker_queue = await make_queue("idle-worker", real_clock=True)
    admin = await make_queue("admin", real_clock=True)
    worker = Worker(worker_queue, {"t": _noop}, queue_name="orch", name="idle-worker")
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(WAIT_S):
            await worker.ready.wait()
            # Poll (bounded): the first heartbeat, sent as the worker starts, registers the queue.
            while "orch" not in await admin.known_queues():  # noqa: ASYNC110
                await anyio.sleep(0.01)
        [stats] = [s for s in await admin.all_queue_stats() if s.queue == "orch"]
        worker.stop(0)
    [holder] = stats.consumers
    assert (holder.name, holder.pending) == ("idle-worker", 0)
    assert holder.last_seen_ms is not None
    assert holder.last_seen_ms < WAIT_S * 1000


async def test_a_holder_not_heard_from_for_a_minute_ages_out(make_queue: QueueFactory, clock: FakeClock) -> None:
    gone = await make_queue("gone")
    await gone.heartbeat(["default"])
    assert [c.name for c in (await gone.get_queue_stats()).consumers] == ["gone"]

    clock.advance(HOLDER_STALE_MS + 1)

    assert (await gone.get_queue_stats()).consumers == []


async def test_queue_stats_tool_with_all_queues_lists_every_known_queue_and_its_holders(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        await client.call_tool("enqueue_task", {"task_type": "t", "payload": {}, "queue": "orch"})
        await client.call_tool("read_tasks", {"queue": "orch"})
        one = await client.call_tool("queue_stats", {})
        every = await client.call_tool("queue_stats", {"all_queues": True})
    assert one.structured_content is not None
    assert one.structured_content["queues"] is None
    assert every.structured_content is not None
    rows = {row["queue"]: row for row in every.structured_content["queues"]}
    assert "orch" in rows
    [holder] = rows["orch"]["consumers"]
    assert (holder["name"], holder["pending"]) == (settings.consumer, 1)
    assert holder["last_seen_ms"] is not None


# -- a wrong MCP_QUEUE_REDIS_URL ------------------------------------------------------------


@pytest.fixture
def locked_redis(tmp_path: Path) -> Any:
    server = RedisProc(tmp_path / "redis").start()
    with redis.Redis.from_url(server.url) as r:
        r.config_set("requirepass", "s3cret-pw")
    try:
        yield server
    finally:
        server.stop()


def _url_settings(url: str) -> Settings:
    return Settings(redis_url=SecretStr(url), key_prefix="wrong", data_dir=Path("/nonexistent-test-data-dir"))


async def _first_error(url: str) -> QueueError:
    async with TaskQueue(_url_settings(url)) as q:
        with anyio.fail_after(WAIT_S), pytest.raises((QueueUnavailable, StoreMisconfigured)) as caught:
            await q.enqueue("t", {})
        await q.disconnect(release=False)
    return caught.value


async def test_a_wrong_password_is_a_configuration_mistake_not_an_outage(locked_redis: RedisProc) -> None:
    url = locked_redis.url.replace("redis://", "redis://:wrong-pw@")
    error = await _first_error(url)
    assert isinstance(error, StoreMisconfigured)
    assert not error.retryable
    assert "MCP_QUEUE_REDIS_URL" in str(error)
    assert "credentials" in str(error)
    assert "wrong-pw" not in str(error)
    assert str(locked_redis.port) not in str(error)


async def test_no_password_where_one_is_required_is_a_configuration_mistake(locked_redis: RedisProc) -> None:
    error = await _first_error(locked_redis.url)
    assert isinstance(error, StoreMisconfigured)
    assert "MCP_QUEUE_REDIS_URL" in str(error)


async def test_an_unknown_host_is_a_configuration_mistake() -> None:
    error = await _first_error("redis://no-such-host.invalid:6379/0")
    assert isinstance(error, StoreMisconfigured)
    assert "host name does not resolve" in str(error)
    assert "no-such-host" not in str(error)


async def test_a_refused_connection_stays_retryable_and_names_the_url_as_a_possible_cause() -> None:
    port = free_port()
    error = await _first_error(f"redis://127.0.0.1:{port}/0")
    assert isinstance(error, QueueUnavailable)
    assert error.retryable
    assert "MCP_QUEUE_REDIS_URL" in str(error)
    assert str(port) not in str(error)


async def test_the_server_logs_an_unreachable_store_at_start_and_keeps_serving(
    caplog: pytest.LogCaptureFixture, locked_redis: RedisProc
) -> None:
    state = ServerState(_url_settings(locked_redis.url.replace("redis://", "redis://:wrong-pw@")))
    with caplog.at_level(logging.INFO, logger="mcp_queue_server.server.lifespan"):
        async with state.lifespan(None):
            queue = await state.queue()  # still served: tools report the problem per call
            with pytest.raises(StoreMisconfigured):
                await queue.get_queue_stats()
    messages = [r.getMessage() for r in caplog.records]
    assert any("unreachable or misconfigured" in m and "credentials" in m for m in messages), messages
    assert not any("queue store ready" in m for m in messages)
    assert not any("wrong-pw" in m for m in messages)


def _new() -> NewTask:
    return NewTask("t", {})


async def _noop(*_: Any) -> None:
    return None
