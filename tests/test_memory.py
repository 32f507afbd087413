"""Memory is finite: a full Redis refuses new work but keeps every task and lets the queue
drain; an evicting Redis is refused; a queue may be capped (MCP_QUEUE_MAX_QUEUE_LENGTH)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from mcp import Client
from pydantic import SecretStr

from mcp_queue_server import (
    NewTask,
    QueueFull,
    Settings,
    StoreFull,
    StoreMisconfigured,
    TaskQueue,
    TaskStatus,
)
from mcp_queue_server.server.app import build_server
from mcp_queue_server.store.binaries import server_args
from mcp_queue_server.store.open import Store
from mcp_queue_server.testing import RedisProc
from tests.conftest import QueueFactory

PAYLOAD = {"blob": "x" * 16_000}


def _settings(server: RedisProc, **extra: object) -> Settings:
    return Settings(
        redis_url=server.url,  # type: ignore[arg-type]
        key_prefix=f"m{uuid.uuid4().hex[:8]}",
        retry_backoff_ms=0,
        data_dir=Path("/nonexistent-test-data-dir"),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisProc]:
    """A Redis with 1.1 MB above its empty footprint, about 2 MB in all (noeviction, as every
    Redis we start); relative, because an empty Valkey 9 starts ~130 KB bigger than Redis."""
    server = RedisProc(tmp_path / "redis").start()
    try:
        with server.client() as r:
            r.config_set("maxmemory", int(r.info("memory")["used_memory"]) + 1_150_000)
        yield server
    finally:
        server.stop()


@pytest.fixture
def evicting_redis(tmp_path: Path) -> Iterator[RedisProc]:
    server = RedisProc(tmp_path / "redis", extra_args=["--maxmemory-policy", "allkeys-lru"]).start()
    try:
        yield server
    finally:
        server.stop()


async def _fill(q: TaskQueue, confirmed: list[str]) -> StoreFull:
    """Enqueue until Redis refuses for memory, adding the ids it confirmed (bounded). Near the
    limit a write may still fit after a refusal (Redis frees buffers), so callers fill again."""
    for _ in range(1_000):
        try:
            got = await q.enqueue_batch([NewTask("t", PAYLOAD) for _ in range(4)])
        except StoreFull as exc:
            return exc
        confirmed += [r.task_id for r in got]
    raise AssertionError("2 MB never filled up")


async def test_a_full_store_refuses_new_work_but_keeps_every_task_and_drains(small_redis: RedisProc) -> None:
    settings = _settings(small_redis)
    async with TaskQueue(settings, consumer="w") as q:
        confirmed: list[str] = []
        refusal = await _fill(q, confirmed)
        assert len(confirmed) >= 8
        # New work is refused with what frees memory, through the API and through a tool.
        assert "purge the dead-letter queue" in str(refusal)
        assert refusal.retryable
        async with Client(build_server(settings.model_copy(update={"consumer": "agent"}))) as agent:
            for _ in range(100):
                await _fill(q, confirmed)  # full again, then at once the tool
                refused = await agent.call_tool("enqueue_task", {"task_type": "t", "payload": PAYLOAD})
                if refused.is_error:
                    break
                assert refused.structured_content is not None
                confirmed.append(refused.structured_content["task_id"])
        assert refused.is_error
        assert "queue store is full" in refused.content[0].text  # type: ignore[union-attr]

        # Every confirmed task is there; reads, acks, fails and purges work while full.
        for task_id in confirmed:
            assert (await q.get_task(task_id)).status == TaskStatus.QUEUED
        await _fill(q, confirmed)
        first = await q.read_messages(count=2)
        assert len(first) == 2
        await _fill(q, confirmed)
        assert (await q.ack(first[0].task_id, {"ok": True})).status == "acked"
        await _fill(q, confirmed)
        await q.fail(first[1].task_id, "dead on purpose", retry=False)
        done = {first[0].task_id}
        while tasks := await q.read_messages(count=50):
            for task in tasks:
                await q.fail(task.task_id, "drain", retry=False)
        assert await q.purge_dlq() == len(confirmed) - 1

        # Room again: enqueue works.
        assert (await q.enqueue("t", PAYLOAD, task_id="after")).duplicate is False
        assert (await q.get_task(done.pop())).status == TaskStatus.COMPLETED


async def test_an_evicting_memory_policy_refuses_writes_and_names_the_policy_and_the_fix(
    evicting_redis: RedisProc,
) -> None:
    async with TaskQueue(_settings(evicting_redis)) as q:
        with pytest.raises(StoreMisconfigured, match="allkeys-lru") as caught:
            await q.enqueue("t", {})
        assert "CONFIG SET maxmemory-policy noeviction" in str(caught.value)
        assert "MCP_QUEUE_ALLOW_EVICTION" in str(caught.value)
        with pytest.raises(StoreMisconfigured):
            await q.check_store()


async def test_allow_eviction_accepts_the_risk(evicting_redis: RedisProc) -> None:
    async with TaskQueue(_settings(evicting_redis, allow_eviction=True)) as q:
        assert (await q.check_store()).maxmemory_policy == "allkeys-lru"
        assert (await q.enqueue("t", {})).duplicate is False


async def test_a_fixed_policy_takes_effect_at_the_next_write(evicting_redis: RedisProc) -> None:
    async with TaskQueue(_settings(evicting_redis)) as q:
        with pytest.raises(StoreMisconfigured):
            await q.enqueue("t", {})
        with redis.Redis.from_url(evicting_redis.url) as r:
            r.config_set("maxmemory-policy", "noeviction")
        assert (await q.enqueue("t", {})).duplicate is False


async def test_a_policy_no_one_may_read_is_served_with_a_warning_once(
    redis_url: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    user, password = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with redis.Redis.from_url(redis_url) as r:
        r.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-@dangerous"])
    url = redis_url.replace("redis://", f"redis://{user}:{password}@")
    try:
        async with TaskQueue(settings.model_copy(update={"redis_url": SecretStr(url)})) as q:
            assert (await q.store_info()).maxmemory_policy is None
            await q.enqueue("t", {})
            await q.enqueue("t", {}, queue="other")
        warnings = [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        with redis.Redis.from_url(redis_url) as r:
            r.acl_deluser(user)


# -- MCP_QUEUE_MAX_QUEUE_LENGTH -----------------------------------------------------------


async def test_a_capped_queue_takes_a_batch_whole_or_not_at_all(make_queue: QueueFactory) -> None:
    q = await make_queue("w", max_queue_length=5)
    await q.enqueue_batch([NewTask("t", {}) for _ in range(3)])

    with pytest.raises(QueueFull, match="3 tasks wait") as caught:
        await q.enqueue_batch([NewTask("t", {}, task_id=f"b{i}") for i in range(3)])

    assert caught.value.retryable
    assert caught.value.length == 3
    assert (await q.get_queue_stats()).available == 3  # none of the three
    await q.enqueue_batch([NewTask("t", {}) for _ in range(2)])  # exactly to the cap


async def test_a_capped_queue_counts_delayed_tasks_but_not_those_in_flight(make_queue: QueueFactory) -> None:
    q = await make_queue("w", max_queue_length=2)
    await q.enqueue("t", {}, delay_ms=60_000)
    await q.enqueue("t", {})
    with pytest.raises(QueueFull):
        await q.enqueue("t", {})
    await q.read_messages(count=1)  # taken by a worker: room for one more
    await q.enqueue("t", {})


async def test_a_repeated_enqueue_of_existing_tasks_is_not_refused_by_the_cap(make_queue: QueueFactory) -> None:
    q = await make_queue("w", max_queue_length=1)
    await q.enqueue("t", {}, task_id="only")
    assert (await q.enqueue("t", {}, task_id="only")).duplicate is True


async def test_a_fanout_past_the_cap_creates_nothing(make_queue: QueueFactory) -> None:
    q = await make_queue("w", max_queue_length=3)
    await q.enqueue("t", {})
    with pytest.raises(QueueFull, match="none of the 3 new task"):
        await q.fanout("parent", [NewTask("t", {}) for _ in range(3)])
    assert (await q.get_queue_stats()).available == 1
    await q.fanout("parent", [NewTask("t", {}) for _ in range(2)])


async def test_the_enqueue_tools_say_a_capped_queue_is_full(settings: Settings) -> None:
    async with Client(build_server(settings.model_copy(update={"max_queue_length": 1}))) as agent:
        await agent.call_tool("enqueue_task", {"task_type": "t", "payload": {}})
        refused = await agent.call_tool("enqueue_batch", {"tasks": [{"task_type": "t", "payload": {}}]})
    assert refused.is_error
    assert "queue default is full: 1 tasks wait" in refused.content[0].text  # type: ignore[union-attr]


# -- the embedded Redis ---------------------------------------------------------------------


def test_every_redis_we_start_runs_noeviction_and_the_embedded_one_has_a_memory_bound() -> None:
    args = server_args("redis-server", Path("/tmp/x"), aof=True, maxmemory="512mb")
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--maxmemory") + 1] == "512mb"
    assert Settings().embedded_maxmemory == "1gb"


async def test_the_store_starts_the_embedded_redis_with_the_configured_maxmemory(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "data", embedded_maxmemory="64mb"))
    try:
        q = await store.queue()
        info = await q.check_store()
        await q.disconnect()
    finally:
        await store.close()
    assert (info.maxmemory_policy, info.maxmemory) == ("noeviction", 64 * 1024 * 1024)
