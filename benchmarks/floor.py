"""The raw redis-py floor: the same Redis work as a queue operation, with no queue logic.

Plain XADD / pipelined XADD / XREADGROUP + XACK on one stream and consumer group. The
payload is the same ~200-byte JSON the library workloads send, serialised per message
(any producer has to) and parsed per delivered message (any worker has to).
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from benchmarks.common import payload

GROUP = "g"


def connect(url: str) -> Redis:
    """A plain asyncio client (hiredis parser when installed, as for the library)."""
    return Redis.from_url(url)


def _fields(i: int) -> dict[str, Any]:
    return {"type": "noop", "payload": json.dumps(payload(i), separators=(",", ":"))}


async def xadd_sequential(r: Redis, stream: str, n: int) -> float:
    """XADD one awaited at a time; returns messages/s."""
    t0 = time.perf_counter()
    for i in range(n):
        await r.xadd(stream, _fields(i))
    return n / (time.perf_counter() - t0)


async def xadd_pipelined(r: Redis, stream: str, n: int, batch: int = 100) -> float:
    """XADD ``batch`` per round trip (a non-transactional pipeline); returns messages/s."""
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        async with r.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + batch, n)):
                pipe.xadd(stream, _fields(i))
            await pipe.execute()
    return n / (time.perf_counter() - t0)


async def prefill(r: Redis, stream: str, n: int) -> None:
    """``n`` messages in ``stream`` and the consumer group at its start (not timed)."""
    await r.delete(stream)
    await r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await xadd_pipelined(r, stream, n, batch=500)


async def consume(r: Redis, stream: str, consumer: str, batch: int, block_ms: int | None = None) -> int:
    """XREADGROUP COUNT ``batch`` then one XACK for the whole batch, until the stream is drained.

    Returns the number of messages consumed (payloads parsed, as a worker would).
    """
    done = 0
    while True:
        reply = await r.xreadgroup(GROUP, consumer, {stream: ">"}, count=batch, block=block_ms)
        if not reply:
            return done
        entries = reply[0][1]
        ids = [entry_id for entry_id, fields in entries if json.loads(fields[b"payload"]) is not None]
        await r.xack(stream, GROUP, *ids)
        done += len(ids)


async def consume_rate(r: Redis, stream: str, consumer: str, batch: int) -> float:
    t0 = time.perf_counter()
    n = await consume(r, stream, consumer, batch)
    return n / (time.perf_counter() - t0)


async def produce_and_drain(r: Redis, stream: str, consumer: str, n: int) -> float:
    """Pipelined XADD of ``n``, one XREADGROUP COUNT ``n``, one XACK: the floor of a fanout's
    Redis work (children out, delivered, completed). Returns seconds."""
    t0 = time.perf_counter()
    await xadd_pipelined(r, stream, n, batch=n)
    got = await consume(r, stream, consumer, n)
    assert got == n, got
    return time.perf_counter() - t0
