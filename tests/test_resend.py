"""A reply lost on a dropped connection: the client re-sends the script once, and nothing runs twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream, SocketStream

from mcp_queue_server import NewTask, Settings, TaskQueue, TaskStatus
from mcp_queue_server.testing import free_port
from tests.conftest import QueueFactory
from tests.test_read import _wait_until_blocked


@dataclass
class ReplyDropper:
    """A TCP proxy in front of Redis that, when armed, closes the connection instead of
    passing on the next reply: the command ran, the client sees a ConnectionError."""

    target_port: int
    armed: bool = False
    dropped: int = 0
    #: When set, the next replies on that connection are swallowed (it stays open) and
    #: ``held`` is set: the command ran, the client waits for an answer that never comes.
    holding: bool = False
    held: anyio.Event = field(default_factory=anyio.Event)

    async def _pipe(self, src: ByteStream, dst: ByteStream, replies: bool) -> None:
        swallow = False
        try:
            async for chunk in src:
                if replies and self.armed:
                    self.armed = False
                    self.dropped += 1
                    break
                if replies and (swallow or self.holding):
                    swallow, self.holding = True, False
                    self.held.set()
                    continue
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


async def test_a_blocking_read_whose_reply_is_lost_is_resent_and_returns_the_task_it_leased(
    proxied: tuple[TaskQueue, ReplyDropper], make_queue: QueueFactory
) -> None:
    queue, dropper = proxied
    producer = await make_queue("producer")
    got: list[tuple[str, int]] = []

    async def read() -> None:
        got.extend((t.task_id, t.attempt) for t in await queue.read_messages(block_ms=5_000))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await _wait_until_blocked(queue)
            dropper.armed = True
            await producer.enqueue("t", {}, task_id="woke")
    assert dropper.dropped == 1
    assert got == [("woke", 1)]
    assert (await queue.get_task("woke")).lease_holder == "a"


async def test_a_blocking_read_cancelled_after_it_leased_hands_the_task_back(
    proxied: tuple[TaskQueue, ReplyDropper], make_queue: QueueFactory
) -> None:
    queue, dropper = proxied
    producer, other = await make_queue("producer"), await make_queue("other")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.read_messages, 1, 5_000)
            await _wait_until_blocked(queue)
            dropper.holding = True
            await producer.enqueue("t", {}, task_id="caught")
            await dropper.held.wait()  # the read ran and leased the task; its reply is held
            tg.cancel_scope.cancel()
        [task] = await other.read_messages()
    assert (task.task_id, task.attempt) == ("caught", 1)
