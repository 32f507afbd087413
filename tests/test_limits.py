"""Limits per key: max_working and max_per_minute, enforced by the read script atomically with
each delivery, without head-of-line blocking, in order, freed by every path that ends a holding."""

from __future__ import annotations

import time

import anyio
import pytest

from mcp_queue_server import InvalidInput, NewTask, Settings, TaskQueue, TaskStatus
from mcp_queue_server.core import codec
from mcp_queue_server.core.codec import ReadRequest
from mcp_queue_server.core.connection import request_id
from tests.conftest import FakeClock, QueueFactory
from tests.test_recovery import age_pending_entries


def ids(tasks: list[object]) -> list[str]:
    return [t.task_id for t in tasks]  # type: ignore[attr-defined]


async def keyed(q: TaskQueue, key: str, *task_ids: str, priority: int = 0) -> None:
    await q.enqueue_batch([NewTask("t", {}, priority, i, limit_key=key) for i in task_ids])


async def limit_row(q: TaskQueue, key: str) -> tuple[int | None, int | None, int, int, int]:
    [row] = [r for r in await q.get_limits() if r.key == key]
    return row.max_working, row.max_per_minute, row.working, row.waiting, row.started_last_minute


async def test_a_key_at_its_limit_is_held_back_while_the_read_delivers_other_tasks(queue: TaskQueue) -> None:
    await queue.set_limit("api", max_working=1)
    await keyed(queue, "api", "k1", "k2", "k3")
    await queue.enqueue("t", {}, task_id="u1")
    await queue.enqueue("t", {}, task_id="u2", limit_key="other")
    got = await queue.read_messages(count=10)
    assert ids(got) == ["k1", "u1", "u2"]  # no head-of-line blocking behind k2, k3
    assert await limit_row(queue, "api") == (1, None, 1, 2, 1)
    assert (await queue.get_task("k2")).status == TaskStatus.QUEUED  # held back, still queued to the user
    stats = await queue.get_queue_stats()
    assert stats.in_flight == 3  # the held-back entries are not in flight
    assert [c.name for c in stats.consumers] == ["w1"]


async def test_held_back_tasks_are_delivered_in_their_original_order_as_slots_free(queue: TaskQueue) -> None:
    await queue.set_limit("api", max_working=2)
    for i in range(6):
        await keyed(queue, "api", f"k{i}")
        await queue.enqueue("t", {}, task_id=f"u{i}")
    order = ids(await queue.read_messages(count=100))
    assert [t for t in order if t.startswith("k")] == ["k0", "k1"]
    assert len(order) == 8
    working = ["k0", "k1"]
    for expected in ("k2", "k3", "k4", "k5"):
        await queue.acknowledge(working.pop(0))
        assert ids(await queue.read_messages(count=10)) == [expected]
        working.append(expected)


async def test_held_back_time_is_not_an_attempt_and_consumes_no_lease(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.set_limit("api", max_working=1)
    await keyed(queue, "api", "k1", "k2")
    [first] = await queue.read_messages(count=5, lease_ms=1000)
    clock.advance(500)
    await queue.acknowledge(first.task_id)
    clock.advance(10_000)  # k2 waited far longer than a lease
    before = await queue.server_now()
    [second] = await queue.read_messages(count=5, lease_ms=1000)
    after = await queue.server_now()
    assert (second.task_id, second.attempt) == ("k2", 1)
    assert before + 1000 <= second.lease_expires_at <= after + 1000  # a fresh lease from its delivery


async def test_max_per_minute_counts_deliveries_in_a_rolling_minute(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.set_limit("llm", max_per_minute=2)
    await keyed(queue, "llm", *(f"k{i}" for i in range(5)))
    first = await queue.read_messages(count=10)
    assert ids(first) == ["k0"] or len(first) == 2
    assert ids(first) == ["k0", "k1"]
    await queue.ack_many(ids(first))
    assert await queue.read_messages(count=10) == []  # finished or not, two started this minute
    clock.advance(30_000)
    assert await queue.read_messages(count=10) == []
    clock.advance(30_001)  # the first two are more than a minute old
    got = await queue.read_messages(count=10)
    assert ids(got) == ["k2", "k3"]
    assert (await limit_row(queue, "llm"))[2:] == (2, 1, 2)


async def test_a_rate_limited_key_tells_the_reader_when_it_falls_due(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.set_limit("llm", max_per_minute=1)
    await keyed(queue, "llm", "k1", "k2")
    [first] = await queue.read_messages()
    started = first.lease_expires_at - queue.settings.lease_ms
    await queue.acknowledge("k1")
    req = ReadRequest(5, 1000, 1, 100)
    reply = codec.read_reply(await queue._conn.script("read", "default", codec.read_args(req, request_id())), "default")
    assert reply.tasks == []
    assert reply.next_wake_ms == started + 60_000  # a blocked reader wakes then, not later


async def test_both_limits_apply_together(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.set_limit("x", max_working=1, max_per_minute=2)
    await keyed(queue, "x", "a", "b", "c")
    assert ids(await queue.read_messages(count=5)) == ["a"]
    await queue.acknowledge("a")
    assert ids(await queue.read_messages(count=5)) == ["b"]
    await queue.acknowledge("b")
    assert await queue.read_messages(count=5) == []  # a slot, but two started this minute
    clock.advance(60_001)
    assert ids(await queue.read_messages(count=5)) == ["c"]


async def test_every_path_that_ends_a_holding_frees_its_slot(make_queue: QueueFactory, clock: FakeClock) -> None:
    q = await make_queue("w1", retry_backoff_ms=0)
    await q.set_limit("api", max_working=1)
    await keyed(q, "api", *(f"k{i}" for i in range(8)))

    async def holding() -> str:
        [t] = await q.read_messages(count=5, lease_ms=1000)
        assert await q.read_messages(count=5) == []  # the only slot is taken
        return t.task_id

    await q.acknowledge(await holding())  # ack
    await q.fail(await holding(), "boom", retry=True)  # failed, requeued (at the end of the line)
    await q.fail(await holding(), "boom", retry=False)  # dead-lettered
    assert await q.release_tasks([await holding()]) == 1  # released
    held = await holding()
    await q.cancel(held)
    await q.fail(held, "stopping")  # a cancel request ends on the worker's fail
    assert (await q.get_task(held)).status == TaskStatus.CANCELLED
    await holding()
    clock.advance(1001)
    assert (await q.recover()).requeued  # lease expired, recovered
    held = await holding()
    await q.fanout(held, [NewTask("child", {}, task_id="child")])  # the parent leaves to wait for its child
    got = ids(await q.read_messages(count=5, lease_ms=1000))
    assert len(got) == 2
    assert "child" in got
    clock.advance(1001)
    got = ids(await q.read_messages(count=5))  # expired leases: delivered again, one of the key at a time
    assert "child" in got
    assert len(got) == 2
    assert (await limit_row(q, "api"))[2] == 1


async def test_a_task_whose_lease_expired_rejoins_the_end_of_its_keys_line(
    make_queue: QueueFactory, clock: FakeClock
) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.set_limit("api", max_working=1)
    await keyed(w1, "api", "k1", "k2")
    [t] = await w1.read_messages(lease_ms=1000)
    clock.advance(1001)
    assert ids(await w2.read_messages(count=5)) == ["k2"]
    await w2.acknowledge("k2")
    [again] = await w2.read_messages(count=5)
    assert (again.task_id, again.attempt) == (t.task_id, 2)


async def test_an_expired_task_alone_in_its_key_is_delivered_again_at_once(
    make_queue: QueueFactory, clock: FakeClock
) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.set_limit("api", max_working=1)
    await keyed(w1, "api", "k1")
    await w1.read_messages(lease_ms=1000)
    clock.advance(1001)
    [again] = await w2.read_messages()
    assert (again.task_id, again.attempt) == ("k1", 2)
    assert (await limit_row(w1, "api"))[2:4] == (1, 0)


async def test_two_consumers_never_hold_more_than_max_working_between_them(make_queue: QueueFactory) -> None:
    readers = [await make_queue(f"w{i}") for i in range(4)]
    await readers[0].set_limit("api", max_working=3)
    await keyed(readers[0], "api", *(f"k{i}" for i in range(20)))
    held: list[str] = []
    async with anyio.create_task_group() as tg:
        for r in readers:

            async def read(r: TaskQueue = r) -> None:
                held.extend(ids(await r.read_messages(count=10)))

            tg.start_soon(read)
    assert held == ["k0", "k1", "k2"] or sorted(held) == ["k0", "k1", "k2"]


async def test_a_blocked_reader_wakes_when_a_slot_frees(make_queue: QueueFactory) -> None:
    w1, w2 = await make_queue("w1"), await make_queue("w2")
    await w1.set_limit("api", max_working=1)
    await keyed(w1, "api", "k1", "k2")
    await w1.read_messages()
    got: list[str] = []
    start = time.monotonic()
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            got.extend(ids(await w2.read_messages(block_ms=8000)))

        tg.start_soon(wait)
        await w1.acknowledge("k1")
    assert got == ["k2"]
    assert time.monotonic() - start < 4  # woken by the freed slot, not by block_ms running out


async def test_raising_or_removing_a_limit_lets_held_back_tasks_go(queue: TaskQueue) -> None:
    await queue.set_limit("api", max_working=1)
    await keyed(queue, "api", "k1", "k2", "k3", "k4")
    assert ids(await queue.read_messages(count=10)) == ["k1"]
    assert await queue.set_limit("api", max_working=2) is True
    assert ids(await queue.read_messages(count=10)) == ["k2"]
    assert await queue.remove_limit("api") is True
    assert ids(await queue.read_messages(count=10)) == ["k3", "k4"]
    assert await queue.remove_limit("api") is False
    assert [r.key for r in await queue.get_limits()] == []


async def test_cancelling_a_held_back_task_takes_it_out_of_the_line(queue: TaskQueue) -> None:
    await queue.set_limit("api", max_working=1)
    await keyed(queue, "api", "k1", "k2", "k3")
    await queue.read_messages(count=10)
    assert (await queue.cancel("k2")).status == "cancelled"
    assert (await limit_row(queue, "api"))[3] == 1
    await queue.acknowledge("k1")
    assert ids(await queue.read_messages(count=10)) == ["k3"]


async def test_list_tasks_shows_held_back_tasks_as_queued_after_the_streams(queue: TaskQueue) -> None:
    await queue.set_limit("api", max_working=1)
    await keyed(queue, "api", "k1", "k2", "k3", "k4")
    await queue.read_messages(count=1)  # k1 working; the read held nothing back yet
    await queue.enqueue("t", {}, task_id="u1")
    await queue.read_messages(count=10)  # u1 delivered, k2..k4 held back
    await queue.enqueue("t", {}, task_id="u2")
    seen: list[str] = []
    cursor = None
    while True:
        page = await queue.list_tasks("queued", count=2, cursor=cursor)
        seen += [t.task_id for t in page.tasks]
        assert all(t.status == TaskStatus.QUEUED for t in page.tasks)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["u2", "k2", "k3", "k4"]


async def test_high_priority_tasks_of_a_key_go_before_its_low_priority_ones(queue: TaskQueue) -> None:
    await queue.set_limit("api", max_working=1)
    await keyed(queue, "api", "low1", "low2")
    await keyed(queue, "api", "high1", priority=10)
    first = await queue.read_messages(count=10, prefer_high_priority=False)
    await queue.acknowledge(first[0].task_id)
    [nxt] = await queue.read_messages(count=10)
    assert nxt.task_id == "high1"


async def test_fanout_subtasks_and_the_continuation_carry_their_limit_key(queue: TaskQueue) -> None:
    await queue.set_limit("api", max_working=1)
    await queue.fanout(
        "p",
        [NewTask("c", {}, task_id=f"c{i}", limit_key="api") for i in range(3)],
        on_complete=NewTask("done", {}, task_id="cont", limit_key="api"),
    )
    for expected in ("c0", "c1", "c2", "cont"):
        [t] = await queue.read_messages(count=10)
        assert t.task_id == expected
        assert (await queue.get_task(expected)).limit_key == "api"
        await queue.acknowledge(expected)
    assert (await queue.get_task("cont")).limit_key == "api"  # kept on the completed record


async def test_a_limit_set_later_counts_tasks_already_running(queue: TaskQueue) -> None:
    await keyed(queue, "api", "k1", "k2", "k3")
    assert len(await queue.read_messages(count=2)) == 2
    await queue.set_limit("api", max_working=2)
    assert await queue.read_messages(count=10) == []
    assert await limit_row(queue, "api") == (2, None, 2, 1, 2)


async def test_unkeyed_tasks_write_no_limit_keys(queue: TaskQueue) -> None:
    await queue.enqueue_batch([NewTask("t", {}) for _ in range(3)])
    await queue.ack_many(ids(await queue.read_messages(count=3)))
    names = [k.decode() async for k in queue.redis.scan_iter(match=queue.keys("default").base + "*")]
    limit_keys = [
        n for n in names if n.split("}:", 1)[1].startswith(("lw:", "lr:", "lp:", "limits", "lwait", "parked"))
    ]
    assert names
    assert limit_keys == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_working": 0}, "max_working must be between 1 and"),
        ({"max_per_minute": -1}, "max_per_minute must be between 1 and"),
        ({"max_working": True}, "max_working must be an integer"),
    ],
)
async def test_a_limit_outside_its_bounds_is_refused(queue: TaskQueue, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        await queue.set_limit("api", **kwargs)  # type: ignore[arg-type]


async def test_a_bad_limit_key_is_refused_everywhere(queue: TaskQueue) -> None:
    with pytest.raises(InvalidInput, match="invalid limit_key"):
        await queue.set_limit("a b", max_working=1)
    with pytest.raises(InvalidInput, match="invalid limit_key"):
        await queue.enqueue("t", {}, limit_key="")
    assert (await queue.get_queue_stats()).totals.get("enqueued", 0) == 0


async def test_ack_with_read_next_hands_over_the_freed_slot_in_the_same_call(queue: TaskQueue) -> None:
    await queue.set_limit("api", max_working=1, max_per_minute=100)
    await keyed(queue, "api", "k0", "k1", "k2")
    # Loads the ack script: on a Redis that lacks it, the read of the same call runs first.
    await queue.ack_many(ids(await queue.read_messages(count=5)))
    await queue.read_messages(count=5)
    done = await queue.ack_and_read(["k1"], 5)
    assert ids(done.tasks) == ["k2"]


async def test_recover_by_idle_time_leaves_held_back_tasks_and_still_finds_the_stuck_ones(
    make_queue: QueueFactory, settings: Settings
) -> None:
    q = await make_queue("w1", real_clock=True, pending_batch_size=2)
    await q.set_limit("api", max_working=1)
    await keyed(q, "api", *(f"k{i}" for i in range(6)))
    await q.enqueue("t", {}, task_id="stuck")
    assert sorted(ids(await q.read_messages(count=10))) == ["k0", "stuck"]  # k1..k5 held back
    await age_pending_entries(settings, 5_000)  # every pending entry, the held-back ones too
    report = await q.recover(min_idle_ms=2_000)
    assert sorted(report.requeued) == ["k0", "stuck"]
    assert (await limit_row(q, "api"))[2:4] == (0, 5)  # k0 went back to the stream, k1..k5 still wait
    assert ids(await q.read_messages(count=10)) == ["k1", "stuck"]  # the line first, then the stream
