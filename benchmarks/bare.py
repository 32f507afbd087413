"""The ceiling under every client library: XADD over a bare asyncio socket, hiredis parsing.

No pool, no timeouts, no retries, no command layer: one write and one read per round trip.
What this reaches is the most any asyncio Redis client can do on this machine, so it bounds
the absolute enqueue targets (a queue also has to run its own logic and script).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import hiredis

from benchmarks.common import payload


class BareClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._parser = hiredis.Reader()

    @classmethod
    async def connect(cls, host: str, port: int) -> BareClient:
        return cls(*await asyncio.open_connection(host, port))

    async def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        self._writer.write(b"".join(hiredis.pack_command(c) for c in commands))
        replies: list[Any] = []
        while len(replies) < len(commands):
            reply = self._parser.gets()
            if reply is False:
                self._parser.feed(await self._reader.read(65536))
            else:
                replies.append(reply)
        return replies

    async def aclose(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


def _xadd(stream: str, i: int) -> tuple[Any, ...]:
    return ("XADD", stream, "*", "type", "noop", "payload", json.dumps(payload(i), separators=(",", ":")))


async def xadd_sequential(c: BareClient, stream: str, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        await c.execute([_xadd(stream, i)])
    return n / (time.perf_counter() - t0)


async def xadd_pipelined(c: BareClient, stream: str, n: int, batch: int = 100) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        await c.execute([_xadd(stream, i) for i in range(start, min(start + batch, n))])
    return n / (time.perf_counter() - t0)


async def prefill_group(c: BareClient, stream: str, group: str, n: int) -> None:
    """``n`` entries in ``stream`` and ``group`` at its start (not timed)."""
    await c.execute([("DEL", stream), ("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")])
    await xadd_pipelined(c, stream, n, batch=500)


async def consume(c: BareClient, stream: str, group: str, consumer: str, batch: int = 100) -> int:
    """XREADGROUP COUNT ``batch`` + one XACK of the batch until drained, payloads parsed; returns entries."""
    done = 0
    while True:
        (reply,) = await c.execute([("XREADGROUP", "GROUP", group, consumer, "COUNT", batch, "STREAMS", stream, ">")])
        if not reply:
            return done
        entries = reply[0][1]
        ids = [entry_id for entry_id, fields in entries if json.loads(fields[3]) is not None]
        await c.execute([("XACK", stream, group, *ids)])
        done += len(ids)
