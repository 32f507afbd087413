"""A reply lost on a dropped connection: the client re-sends the script once, and nothing runs twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream, SocketStream

from mcp_queue_server import NewTask, Settings, TaskQueue, TaskStatus
from tests.redis_proc import free_port


@dataclass
class ReplyDropper:
    """A TCP proxy in front of Redis that, when armed, closes the connection instead of
    passing on the next reply: the command ran, the client sees a ConnectionError."""

    target_port: int
    armed: bool = False
    dropped: int = 0

    async def _pipe(self, src: ByteStream, dst: ByteStream, replies: bool) -> None:
        try:
            async for chunk in src:
                if replies and self.armed:
                    self.armed = False
                    self.dropped += 1
                    break
                await dst.send(chunk)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            await src.aclose()
            await dst.aclose()

    async def handle(self, client: SocketStream) -> None:
        server = await anyio.connect_tcp("127.0.0.1", self.target_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pipe, client, server, False)
            tg.start_soon(self._pipe, server, client, True)


@pytest.fixture
async def proxied(settings: Settings) -> AsyncIterator[tuple[TaskQueue, ReplyDropper]]:
    url = settings.redis_url_value()
    assert url is not None
    dropper = ReplyDropper(int(url.rsplit(":", 1)[1].split("/")[0]))
    port = free_port()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, dropper.handle)
        s = settings.model_copy(update={"redis_url": settings.redis_url.__class__(f"redis://127.0.0.1:{port}/0")})
        queue = await TaskQueue(s, consumer="a").connect()
        # Load every script first, so the dropped reply is the script's and not a NOSCRIPT error.
        await queue.enqueue("t", {}, task_id="warm")
        await queue.read_messages()
        await queue.fail("warm", "x", retry=False)
        await queue.replay_dlq(["warm"])
        await queue.recover()
        await queue.read_messages()
        await queue.acknowledge("warm")
        yield queue, dropper
        await queue.disconnect(release=False)
        tg.cancel_scope.cancel()


async def _lost_reply(dropper: ReplyDropper, call: Any) -> Any:
    dropper.armed = True
    with anyio.fail_after(10):
        result = await call
    assert dropper.dropped == 1
    return result


async def test_a_resent_read_returns_the_tasks_the_first_run_leased(
    proxied: tuple[TaskQueue, ReplyDropper],
) -> None:
    queue, dropper = proxied
    await queue.enqueue_batch([NewTask("t", {}, task_id=f"r{i}") for i in range(4)])
    got = await _lost_reply(dropper, queue.read_messages(count=2))
    assert [(t.task_id, t.attempt) for t in got] == [("r0", 1), ("r1", 1)]
    assert (await queue.get_task("r2")).status == TaskStatus.QUEUED
    assert [t.task_id for t in await queue.read_messages(count=5)] == ["r2", "r3"]


async def test_a_resent_fail_reports_what_the_first_run_did(proxied: tuple[TaskQueue, ReplyDropper]) -> None:
    queue, dropper = proxied
    await queue.enqueue("t", {}, task_id="f")
    await queue.read_messages()
    result = await _lost_reply(dropper, queue.fail("f", "boom"))
    assert (result.status, result.attempt) == (TaskStatus.QUEUED, 1)
    assert (await queue.get_queue_stats()).totals["retried"] == 1


async def test_a_resent_replay_reports_the_replayed_tasks(proxied: tuple[TaskQueue, ReplyDropper]) -> None:
    queue, dropper = proxied
    await queue.enqueue("t", {}, task_id="d")
    await queue.read_messages(count=5)
    await queue.fail("d", "dead", retry=False)
    assert await _lost_reply(dropper, queue.replay_dlq(["d"])) == ["d"]
    assert (await queue.get_task("d")).replays == 1
