"""queue_stats over every queue comes in pages (issue 17): one round trip of queue_stats.lua per
page, each row the record get_queue_stats reads for that queue, and a walk sees each queue once."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from mcp import Client
from redis.asyncio import Redis

from mcp_queue_server import InvalidInput, NewTask, QueueStats, Settings, TaskQueue
from mcp_queue_server.core.keys import registry_index_key, registry_key
from mcp_queue_server.limits import STATS_PAGE
from mcp_queue_server.server.app import build_server
from tests.conftest import QueueFactory


class FixedClock:
    """The queue's clock held still (``@<ms>``: the scripts take it instead of TIME), so two reads
    of the same queue see the same ``now``: ages and last-seen times compare exactly."""

    def __init__(self) -> None:
        self.at = int(time.time() * 1000)

    def script_arg(self) -> str:
        return f"@{self.at}"

    def advance(self, ms: int) -> None:
        self.at += ms


def still(s: QueueStats) -> QueueStats:
    """``s`` without the group members' idle times: XINFO counts them on Redis's own clock."""
    return dataclasses.replace(s, consumers=[dataclasses.replace(c, idle_ms=0) for c in s.consumers])


async def _busy_queue(settings: Settings, clock: FixedClock, name: str) -> None:
    """A queue with something in every figure: both streams, in flight, delayed, dead, overdue,
    past its deadline, limit keys with and without a line, a holder, totals."""
    w1, w2, watcher = (TaskQueue(settings, consumer=c, clock=clock) for c in ("w1", "w2", "watcher"))
    for q in (w1, w2, watcher):
        await q.connect()
    try:
        await w1.enqueue_batch([NewTask("t", {"i": i}, priority=20 * (i % 2)) for i in range(8)], queue=name)
        await w1.enqueue("t", {}, task_id="late", deadline_ms=1_000, queue=name)
        await w1.enqueue("t", {}, task_id="later", delay_ms=3_600_000, queue=name)
        await w1.enqueue("t", {}, task_id="doomed", max_attempts=1, priority=20, queue=name)
        [doomed] = await w2.read_messages(1, queue=name)
        await w2.fail(doomed.task_id, "no", retry=False, queue=name)
        await w1.set_limit("api", max_working=1, queue=name)
        await w1.set_limit("quiet", max_per_minute=5, queue=name)
        await w1.enqueue_batch([NewTask("t", {}, limit_key="api") for _ in range(3)], queue=name)
        await w1.read_messages(20, queue=name)  # one api task held, two held back in its line
        await w1.enqueue_batch([NewTask("t", {}, priority=20 * (i % 2)) for i in range(4)], queue=name)
        await w2.read_messages(2, lease_ms=1_000, queue=name)  # w2's leases run out below: overdue
        clock.advance(2_000)  # and "late" is past its deadline
        await watcher.heartbeat([name])
        clock.advance(500)
    finally:
        for q in (w1, w2, watcher):
            await q.disconnect(release=False)  # their tasks stay in flight


async def test_each_paged_row_is_the_record_get_queue_stats_reads_for_that_queue(settings: Settings) -> None:
    clock = FixedClock()
    await _busy_queue(settings, clock, "busy")
    async with TaskQueue(settings, clock=clock) as q:
        for i in range(STATS_PAGE + 20):  # more than a page, some read from and acked
            await q.enqueue("t", {"i": i}, queue=f"q{i:03d}")
            if i % 3 == 0:
                [task] = await q.read_messages(1, queue=f"q{i:03d}")
                await q.acknowledge(task.task_id, queue=f"q{i:03d}")
        names = await q.known_queues()
        paged = await q.all_queue_stats()
        single = [await q.get_queue_stats(name) for name in names]
    assert [s.queue for s in paged] == names
    assert [still(s) for s in paged] == [still(s) for s in single]
    busy = paged[0]
    # The busy queue really has something in every figure: the comparison above covers each.
    assert busy.queue == "busy"
    assert busy.high.length
    assert busy.low.length
    assert busy.in_flight
    assert busy.delayed
    assert busy.dead_letter
    assert busy.overdue == 2
    assert busy.past_deadline
    assert busy.most_past_deadline_ms
    assert busy.oldest_waiting_age_ms is not None
    assert busy.totals["enqueued"] == 18
    assert busy.totals["dead_lettered"] == 1
    assert {c.name for c in busy.consumers} == {"w1", "w2", "watcher"}
    assert [(x.key, x.working, x.waiting) for x in busy.limits] == [("api", 1, 2), ("quiet", 0, 0)]


async def test_a_page_loads_its_script_when_redis_has_lost_it(make_queue: QueueFactory, redis_url: str) -> None:
    q: TaskQueue = await make_queue()
    for name in ("a", "b"):
        await q.enqueue("t", {}, queue=name)
    async with Redis.from_url(redis_url) as r:
        await r.script_flush()  # as after a restart without persistence
    assert [(s.queue, s.available) for s in await q.all_queue_stats()] == [("a", 1), ("b", 1)]


async def test_a_page_walk_sees_every_queue_once_while_queues_come_and_go(make_queue: QueueFactory) -> None:
    q: TaskQueue = await make_queue()
    names = [f"q{i:03d}" for i in range(2 * STATS_PAGE + 30)]
    for name in names:
        await q.enqueue("t", {}, queue=name)
    seen: list[str] = []
    pages: list[int] = []
    cursor: str | None = None
    while True:
        page = await q.queue_stats_page(cursor)
        seen += [s.queue for s in page.queues]
        pages.append(len(page.queues))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        if len(pages) == 1:  # mid-walk: one added behind the cursor, one ahead, one forgotten ahead
            await q.enqueue("t", {}, queue="a-new")
            await q.enqueue("t", {}, queue="z-new")
            assert await q.forget_queue("q150")
    assert pages == [STATS_PAGE, STATS_PAGE, 30]
    assert sorted(seen) == sorted(set(seen))  # none twice
    assert seen == sorted([n for n in names if n != "q150"] + ["z-new"])


async def test_a_page_of_fewer_queues_than_asked_has_no_next_cursor_and_none_known_is_default(
    queue: TaskQueue,
) -> None:
    empty = await queue.queue_stats_page()
    assert [s.queue for s in empty.queues] == ["default"]
    assert empty.next_cursor is None
    for name in ("a", "b", "c"):
        await queue.enqueue("t", {}, queue=name)
    assert await queue.known_queues(limit=2) == ["a", "b"]  # from the index, like a page
    first = await queue.queue_stats_page(count=2)
    assert ([s.queue for s in first.queues], first.next_cursor) == (["a", "b"], "b")
    last = await queue.queue_stats_page(first.next_cursor, count=2)
    assert ([s.queue for s in last.queues], last.next_cursor) == (["c"], None)


@pytest.mark.parametrize("cursor", ["", "no spaces", "x" * 65])
async def test_a_cursor_no_page_returned_is_refused_in_one_line(queue: TaskQueue, cursor: str) -> None:
    with pytest.raises(InvalidInput, match="not a next_cursor of queue_stats") as got:
        await queue.queue_stats_page(cursor)
    assert "\n" not in str(got.value)
    with pytest.raises(InvalidInput, match="count"):
        await queue.queue_stats_page(count=STATS_PAGE + 1)


async def test_the_queue_stats_tool_pages_every_queue_with_a_cursor(settings: Settings, queue: TaskQueue) -> None:
    # The server registers its own queue when it first beats, in the background: registered here
    # first, so the pages do not depend on whether that beat came before the first call.
    for name in ["default", *(f"q{i:03d}" for i in range(STATS_PAGE + 5))]:
        await queue.enqueue("t", {}, queue=name)
    async with Client(build_server(settings)) as client:
        first = json.loads((await client.call_tool("queue_stats", {"all_queues": True})).content[0].text)
        more = await client.call_tool("queue_stats", {"cursor": first["next_cursor"]})
        second = json.loads(more.content[0].text)
        bad = await client.call_tool("queue_stats", {"cursor": "not a cursor"})
        one = json.loads((await client.call_tool("queue_stats", {})).content[0].text)
    walked = [r["queue"] for r in first["queues"] + second["queues"]]
    assert len(first["queues"]) == STATS_PAGE
    assert first["next_cursor"] == walked[STATS_PAGE - 1]
    assert walked == ["default", *(f"q{i:03d}" for i in range(STATS_PAGE + 5))]
    assert second["next_cursor"] is None
    assert bad.is_error
    assert "\n" not in bad.content[0].text
    assert "cursor" in bad.content[0].text
    assert one["queues"] is None
    assert one["next_cursor"] is None


async def test_queues_an_older_version_registered_without_the_index_are_paged_all_the_same(
    make_queue: QueueFactory, redis_url: str
) -> None:
    q: TaskQueue = await make_queue()
    await q.enqueue("t", {}, queue="new")
    prefix = q.settings.key_prefix
    async with Redis.from_url(redis_url) as r:
        await r.sadd(registry_key(prefix), "old-1", "old-2")  # as a version before the index wrote it
        await r.zadd(registry_index_key(prefix), {"gone": 0})  # and one forgotten by such a version
        page = await q.queue_stats_page()
        assert [s.queue for s in page.queues] == ["new", "old-1", "old-2"]
        assert await r.zrange(registry_index_key(prefix), 0, -1) == [b"new", b"old-1", b"old-2"]
