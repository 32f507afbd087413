"""Enqueue: named queues, key layout, priority routing, idempotency, delays, batches."""

from __future__ import annotations

import pytest

from mcp_queue_server import InvalidInput, NewTask, TaskQueue, TaskStatus
from tests.conftest import FakeClock, QueueFactory


async def test_all_keys_of_a_queue_share_one_hash_tag_and_only_the_registry_and_its_index_lie_outside(
    queue: TaskQueue,
) -> None:
    await queue.enqueue("t", {"n": 1}, queue="jobs.eu-1", task_id="a")
    prefix = queue.settings.key_prefix
    keys = {k.decode() async for k in queue.redis.scan_iter(match=f"{prefix}:*")}
    keys.remove(f"{prefix}:queues")  # the registry of queues: written by its own SADD, never by a script
    keys.remove(f"{prefix}:queues:byname")  # and its index in name order (ZADD)
    assert keys
    assert all(k.startswith(f"{prefix}:{{jobs.eu-1}}:") for k in keys), keys


@pytest.mark.parametrize("name", ["", "a b", "a*", "q?", "[x]", "{q}", "a:b", "new\nline", "x" * 65, "ünï"])
async def test_queue_names_outside_the_allowlist_are_refused(queue: TaskQueue, name: str) -> None:
    with pytest.raises(InvalidInput, match="queue name"):
        await queue.enqueue("t", {}, queue=name)


async def test_priority_at_or_above_threshold_goes_to_the_high_stream(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, priority=10, task_id="hi")
    await queue.enqueue("t", {}, priority=9, task_id="lo")
    k = queue.keys("default")
    assert await queue.redis.xlen(k.high) == 1
    assert await queue.redis.xlen(k.low) == 1


async def test_priority_threshold_is_configurable(make_queue: QueueFactory) -> None:
    q = await make_queue(priority_threshold=100)
    await q.enqueue("t", {}, priority=50)
    assert await q.redis.xlen(q.keys("default").low) == 1


async def test_an_existing_task_id_creates_nothing_and_reports_the_task(queue: TaskQueue) -> None:
    first = await queue.enqueue("t", {"v": 1}, task_id="job-1")
    again = await queue.enqueue("t", {"v": 2}, task_id="job-1")
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.status == TaskStatus.QUEUED
    [task] = await queue.read_messages(count=5)
    assert task.payload == {"v": 1}
    assert (await queue.enqueue("t", {}, task_id="job-1")).status == TaskStatus.WORKING
    await queue.acknowledge("job-1")
    done = await queue.enqueue("t", {}, task_id="job-1")
    assert (done.duplicate, done.status) == (True, TaskStatus.COMPLETED)
    assert await queue.read_messages(count=5) == []


async def test_a_dead_lettered_task_id_is_not_enqueued_again(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="dead-1")
    await queue.read_messages()
    await queue.fail("dead-1", "boom", retry=False)
    again = await queue.enqueue("t", {}, task_id="dead-1")
    assert (again.duplicate, again.status) == (True, TaskStatus.FAILED)


async def test_ids_are_generated_when_not_given_and_are_unique(queue: TaskQueue) -> None:
    results = await queue.enqueue_batch([NewTask("t", {"i": i}) for i in range(50)])
    ids = {r.task_id for r in results}
    assert len(ids) == 50
    assert all(not r.duplicate for r in results)


async def test_a_batch_is_one_round_trip_and_keeps_order(queue: TaskQueue) -> None:
    before = await _evalsha_calls(queue)
    results = await queue.enqueue_batch([NewTask("t", {"i": i}, task_id=f"b{i}") for i in range(100)])
    assert await _evalsha_calls(queue) - before == 1
    tasks = await queue.read_messages(count=100)
    assert [t.task_id for t in tasks] == [r.task_id for r in results]
    assert [t.payload["i"] for t in tasks] == list(range(100))


async def test_a_batch_reports_duplicates_per_task(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="x")
    results = await queue.enqueue_batch([NewTask("t", {}, task_id="x"), NewTask("t", {}, task_id="y")])
    assert [(r.task_id, r.duplicate) for r in results] == [("x", True), ("y", False)]


async def test_a_batch_with_repeated_ids_is_refused(queue: TaskQueue) -> None:
    with pytest.raises(InvalidInput, match="distinct"):
        await queue.enqueue_batch([NewTask("t", {}, task_id="x"), NewTask("t", {}, task_id="x")])
    assert (await queue.get_queue_stats()).totals == {}


async def test_a_delayed_task_is_not_delivered_before_its_time(queue: TaskQueue, clock: FakeClock) -> None:
    before = await queue.server_now()
    result = await queue.enqueue("t", {}, task_id="later", delay_ms=60_000)
    run_at = (await queue.get_task("later")).run_at
    assert run_at is not None
    assert before + 60_000 <= run_at <= await queue.server_now() + 60_000
    assert result.status == TaskStatus.DELAYED
    assert await queue.read_messages() == []
    clock.advance(55_000)  # a margin: real time runs on underneath the test clock
    assert await queue.read_messages() == []
    clock.advance(5_000)
    [task] = await queue.read_messages()
    assert (task.task_id, task.attempt) == ("later", 1)


async def test_per_task_max_attempts_overrides_the_default(queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="once", max_attempts=1)
    await queue.read_messages()
    failed = await queue.fail("once", "nope")
    assert failed.status == TaskStatus.FAILED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"payload": {"x": float("nan")}}, "NaN"),
        ({"payload": {"x": "a" * 70_000}}, "limit 64 KiB"),
        ({"payload": ["not", "an", "object"]}, "JSON object"),
        ({"priority": True}, "integer"),
        ({"priority": "5"}, "integer"),
        ({"delay_ms": -1}, "between"),
        ({"max_attempts": 0}, "between"),
        ({"task_id": "bad id"}, "task id"),
        ({"task_id": "x" * 129}, "task id"),
        ({"task_type": ""}, "task type"),
    ],
)
async def test_invalid_tasks_are_refused_with_a_reason(
    queue: TaskQueue, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"task_type": "t", "payload": {}} | kwargs
    with pytest.raises(InvalidInput, match=message):
        await queue.enqueue(**args)  # type: ignore[arg-type]
    assert (await queue.get_queue_stats()).totals == {}


async def _evalsha_calls(queue: TaskQueue) -> int:
    stats = await queue.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(stats.get("cmdstat_eval", {}).get("calls", 0))


@pytest.mark.parametrize("delay_ms", [0, 60_000])
async def test_the_first_enqueue_of_a_queue_makes_both_streams_with_the_group_and_later_ones_only_add(
    queue: TaskQueue, delay_ms: int
) -> None:
    k = queue.keys("fresh")
    await queue.enqueue("t", {}, queue="fresh", delay_ms=delay_ms, task_id="first")
    for stream in (k.high, k.low):
        groups = await queue.redis.xinfo_groups(stream)
        assert [g["name"].decode() for g in groups] == [queue.settings.group]
    before = (await queue.redis.info("commandstats")).get("cmdstat_exists", {}).get("calls", 0)
    await queue.enqueue("t", {}, queue="fresh", task_id="second")
    after = (await queue.redis.info("commandstats")).get("cmdstat_exists", {}).get("calls", 0)
    assert after == before  # the groups are not looked for again
    expected = ["second"] if delay_ms else ["first", "second"]
    assert [t.task_id for t in await queue.read_messages(10, queue="fresh")] == expected
