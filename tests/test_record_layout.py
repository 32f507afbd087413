"""A waiting task's record stays a compact hash (listpack) for the usual payload sizes, and every
payload comes back byte for byte however it is stored (whole, or in 64-byte pieces: _lib.lua)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_queue_server import NewTask, TaskQueue

#: OBJECT ENCODING of a compact hash: Redis 7 and Valkey say listpack, Redis 6.2 ziplist.
COMPACT = {b"listpack", b"ziplist"}


def payload_of_size(size: int) -> dict[str, Any]:
    """A JSON object of exactly ``size`` bytes as the queue stores it (compact separators),
    with multi-byte characters so a piece boundary may fall inside one."""
    body: dict[str, Any] = {"s": ""}
    base = len(json.dumps(body, separators=(",", ":")).encode())
    text = ("é€x" * size)[: max(size - base, 0)]
    while len(json.dumps({"s": text}, separators=(",", ":"), ensure_ascii=False).encode()) > size:
        text = text[:-1]
    text += "x" * (size - len(json.dumps({"s": text}, separators=(",", ":"), ensure_ascii=False).encode()))
    return {"s": text}


async def encoding(queue: TaskQueue, task_id: str) -> bytes:
    return await queue.redis.object("encoding", queue.keys("default").task(task_id))  # type: ignore[no-any-return]


@pytest.mark.parametrize("size", [8, 64, 65, 200, 1024, 1025, 5000])
async def test_a_payload_of_any_size_is_delivered_and_dead_lettered_unchanged(queue: TaskQueue, size: int) -> None:
    payload = payload_of_size(size)
    await queue.enqueue("t", payload, task_id="a", max_attempts=1)
    [task] = await queue.read_messages(1)
    assert task.payload == payload
    await queue.fail("a", "boom", retry=False)
    [dead] = (await queue.inspect_dlq()).tasks
    assert dead.payload == payload


async def test_a_waiting_task_with_a_200_byte_payload_is_a_compact_hash(queue: TaskQueue) -> None:
    await queue.enqueue_batch([NewTask("t", payload_of_size(200), task_id="a")])
    assert await encoding(queue, "a") in COMPACT


async def test_a_payload_past_the_pieces_limit_is_stored_whole_in_a_hash_table(queue: TaskQueue) -> None:
    # The negative control: stored whole (one value over 64 bytes), the record is a hash table.
    await queue.enqueue("t", payload_of_size(1025), task_id="big")
    assert await encoding(queue, "big") == b"hashtable"
    assert await queue.redis.hget(queue.keys("default").task("big"), "payload") is not None


async def test_fanout_children_and_their_continuation_keep_pieced_payloads(queue: TaskQueue) -> None:
    await queue.enqueue("parent", {}, task_id="p")
    await queue.read_messages(1)
    child = payload_of_size(300)
    await queue.fanout("p", [NewTask("c", child, task_id="c1")], on_complete=NewTask("done", payload_of_size(150)))
    assert await encoding(queue, "c1") in COMPACT
    [task] = await queue.read_messages(1)
    assert task.payload == child
    await queue.acknowledge("c1", {"r": "x" * 100})
    [cont] = await queue.read_messages(1)
    assert cont.payload["s"] == payload_of_size(150)["s"]
    assert cont.payload["fanout"]["results"] == {"c1": {"r": "x" * 100}}
