"""Redis failures: fail fast while down, work again after, lose nothing acknowledged."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis

from mcp_queue_server import NewTask, QueueUnavailable, Settings, TaskQueue, TaskStatus
from mcp_queue_server.testing import RedisProc


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProc]:
    """A redis-server with AOF that this test may kill, pause and restart."""
    server = RedisProc(tmp_path / "redis", aof=True).start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()


def _settings(server: RedisProc, **extra: object) -> Settings:
    return Settings(redis_url=server.url, key_prefix=f"f{uuid.uuid4().hex[:8]}", retry_backoff_ms=0, **extra)  # type: ignore[arg-type]


async def test_operations_fail_fast_with_a_clear_error_while_redis_is_down(own_redis: RedisProc) -> None:
    # With appendfsync everysec Redis may hold an AOF write back (up to 2 s) while a background
    # fsync runs, so a kill just after a reply can lose it; this test is about failing fast.
    with redis.Redis.from_url(own_redis.url) as r:
        r.config_set("appendfsync", "always")
    async with TaskQueue(_settings(own_redis)) as q:
        await q.enqueue("t", {}, task_id="before")
        own_redis.kill()
        with anyio.fail_after(5), pytest.raises(QueueUnavailable, match="queue store unavailable") as caught:
            await q.enqueue("t", {}, task_id="during")
        assert str(own_redis.port) not in str(caught.value)
        assert "127.0.0.1" not in str(caught.value)
        own_redis.start()
        assert (await q.enqueue("t", {}, task_id="after")).duplicate is False
        tasks = await q.read_messages(count=10)
        assert sorted(t.task_id for t in tasks) == ["after", "before"]
        await q.disconnect()


async def test_a_paused_redis_times_out_and_the_retried_enqueue_creates_no_duplicate(own_redis: RedisProc) -> None:
    assert own_redis.proc is not None
    async with TaskQueue(_settings(own_redis, socket_timeout_s=0.3)) as q:
        await q.enqueue("t", {}, task_id="warmup")
        own_redis.proc.send_signal(signal.SIGSTOP)
        with anyio.fail_after(5), pytest.raises(QueueUnavailable):
            await q.enqueue("t", {"n": 1}, task_id="maybe")
        own_redis.proc.send_signal(signal.SIGCONT)
        # The outcome was unknown; the caller retries with the same id.
        with anyio.fail_after(5):
            while True:
                try:
                    await q.enqueue("t", {"n": 1}, task_id="maybe")
                    break
                except QueueUnavailable:
                    await anyio.sleep(0.05)  # the client reconnects; retrying is what a caller does
        stats = await q.get_queue_stats()
        assert stats.totals["enqueued"] == 2
        assert stats.available == 2


async def test_a_redis_killed_and_restarted_with_aof_loses_no_acknowledged_work(own_redis: RedisProc) -> None:
    settings = _settings(own_redis)
    async with TaskQueue(settings, consumer="w1") as q:
        await q.enqueue_batch([NewTask("t", {"i": i}, task_id=f"e{i}") for i in range(500)])
        tasks = await q.read_messages(count=100)
        for task in tasks[:50]:
            await q.acknowledge(task.task_id, task.payload["i"])
        own_redis.restart()
        with anyio.fail_after(10):
            stats = await q.get_queue_stats()
        assert stats.totals == {"enqueued": 500, "completed": 50}
        assert (stats.in_flight, stats.available) == (50, 400)
        assert (await q.get_task("e10")).status == TaskStatus.COMPLETED
        assert (await q.acknowledge(tasks[60].task_id)).status == "acked"
        rest = await q.read_messages(count=100)
        assert rest[0].task_id == "e100"
