"""The lane: the queue's lean path to a standalone Redis keeps every reply in step."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from mcp_queue_server import TaskQueue
from mcp_queue_server.core.lane import Lane
from tests.conftest import QueueFactory


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_url)
    yield r
    await r.aclose()


@pytest.fixture
async def lane(client: Redis) -> AsyncIterator[Lane]:
    lane = Lane(client.connection_pool, timeout_s=5.0)
    yield lane
    await lane.aclose()


async def _calls(client: Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_replies_of_one_write_come_back_in_order_with_errors_in_place(lane: Lane) -> None:
    key = f"lane-{uuid.uuid4().hex}"
    with anyio.fail_after(10):
        ok, wrong, value = await lane.execute(("SET", key, "v"), ("HGET", key, "f"), ("GET", key))
    assert ok == b"OK"
    assert isinstance(wrong, redis_errors.ResponseError)
    assert "WRONGTYPE" in str(wrong)
    assert value == b"v"


async def test_concurrent_calls_each_get_their_own_reply(lane: Lane) -> None:
    replies: dict[int, object] = {}

    async def echo(i: int) -> None:
        (replies[i],) = await lane.execute(("ECHO", f"m{i}"))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(echo, i)
    assert replies == {i: f"m{i}".encode() for i in range(50)}


async def test_a_timed_out_call_is_not_sent_again_and_leaves_the_next_reply_in_step(lane: Lane, client: Redis) -> None:
    key = f"lane-{uuid.uuid4().hex}"
    before = await _calls(client, "xread")
    with anyio.fail_after(10):
        with pytest.raises(TimeoutError):
            await lane.execute(("XREAD", "BLOCK", 0, "STREAMS", key, "$"), timeout_s=0.2)
        # Wakes the abandoned XREAD, were it still waiting on a reused connection: its reply
        # would then be taken for the next caller's.
        await client.xadd(key, {"f": "v"})
        assert await lane.execute(("ECHO", "next")) == [b"next"]
    # Sent once, never again. Redis counts the abandoned XREAD when it blocks; Valkey 9 counts a
    # blocked command only if it completes, so there it may not count at all.
    assert before <= await _calls(client, "xread") <= before + 1


async def test_a_cancelled_call_leaves_the_lane_usable(lane: Lane, client: Redis) -> None:
    key = f"lane-{uuid.uuid4().hex}"
    with anyio.fail_after(10):
        with anyio.move_on_after(0.2):
            await lane.execute(("XREAD", "BLOCK", 0, "STREAMS", key, "$"))
        await client.xadd(key, {"f": "v"})
        assert await lane.execute(("ECHO", "after")) == [b"after"]
        assert await lane.execute(("XLEN", key)) == [1]


async def test_scripts_flushed_from_redis_are_loaded_again_on_the_next_call(
    make_queue: QueueFactory, client: Redis
) -> None:
    q: TaskQueue = await make_queue("w1")
    with anyio.fail_after(10):
        await q.enqueue("t", {"n": 1}, task_id="before")
        await client.script_flush()
        created = await q.enqueue("t", {"n": 2}, task_id="after")
        tasks = await q.read_messages(10)
    assert not created.duplicate
    assert sorted(t.task_id for t in tasks) == ["after", "before"]
