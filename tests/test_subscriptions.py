"""Resource subscriptions (issue 13, part 3, point 3): a subscriber of task://<queue>/<id> hears
that the task changed state whichever server process changed it (the bus is fed from Redis),
on subscriptions/listen (2026-07-28) and on resources/subscribe (the session revisions)."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server
from tests.conftest import QueueFactory
from tests.test_http import BEARER, http_server
from tests.test_server_tools import call
from tests.test_stdio import ROOT, START_S, server_env


def stdio_server(settings: Settings, consumer: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_queue_server"], env=server_env(settings, consumer), cwd=ROOT
    )


async def _first_update(subscription: Any) -> str:
    async for event in subscription:
        if isinstance(event, ResourceUpdated):
            return event.uri
    raise AssertionError("the subscription ended without an update")


async def test_a_subscriber_hears_of_a_task_acked_through_another_server_process(settings: Settings) -> None:
    with anyio.fail_after(START_S + 30):
        async with Client(stdio_server(settings, "a")) as a, Client(stdio_server(settings, "b")) as b:
            task_id = (await call(a, "enqueue_task", task_type="t", payload={}))["task_id"]
            uri = f"task://default/{task_id}"
            async with a.listen(resource_subscriptions=[uri]) as subscription:
                await call(b, "read_tasks")
                await call(b, "ack", task_id=task_id, result="done")
                heard = await _first_update(subscription)
            read = await a.read_resource(uri)

    assert heard == uri
    assert '"completed"' in read.contents[0].text  # type: ignore[union-attr]


async def test_a_stats_subscriber_hears_when_tasks_of_its_queue_finish(
    settings: Settings, make_queue: QueueFactory
) -> None:
    worker = await make_queue("worker")
    task_id = (await worker.enqueue("t", {}, queue="jobs")).task_id
    await worker.read_tasks(1, queue="jobs")
    async with Client(build_server(settings)) as client:
        with anyio.fail_after(15):
            async with client.listen(resource_subscriptions=["queue://jobs/stats"]) as subscription:
                await worker.fail(task_id, "no", retry=False, queue="jobs")
                heard = await _first_update(subscription)

    assert heard == "queue://jobs/stats"


async def test_a_subscriber_is_not_told_of_other_tasks(settings: Settings, make_queue: QueueFactory) -> None:
    worker = await make_queue("worker")
    watched = (await worker.enqueue("t", {})).task_id
    other = (await worker.enqueue("t", {})).task_id
    await worker.read_tasks(2)
    async with Client(build_server(settings)) as client:
        with anyio.fail_after(15):
            async with client.listen(resource_subscriptions=[f"task://default/{watched}"]) as subscription:
                await worker.ack(other)
                await worker.ack(watched)
                heard = await _first_update(subscription)

    assert heard == f"task://default/{watched}"  # the first update is the watched task's


# -- resources/subscribe and resources/unsubscribe (2025-11-25 and before: the session revisions) --


class Updates:
    """The URIs of the notifications/resources/updated a session receives, in order."""

    def __init__(self) -> None:
        self.uris: list[str] = []
        self._taken = 0
        self._arrived = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.uris.append(message.params.uri)
            self._arrived.set()

    async def next(self) -> str:
        """The next URI not yet taken, waiting for it (bound the wait with a deadline)."""
        while self._taken == len(self.uris):
            self._arrived = anyio.Event()
            await self._arrived.wait()
        self._taken += 1
        return self.uris[self._taken - 1]


async def test_a_session_subscribed_through_one_process_is_told_of_a_task_acked_elsewhere(
    settings: Settings, make_queue: QueueFactory
) -> None:
    worker = await make_queue("worker", real_clock=True)
    task_id = (await worker.enqueue("t", {}, queue="jobs")).task_id
    await worker.read_tasks(1, queue="jobs")
    uri = f"task://jobs/{task_id}"
    updates = Updates()
    async with (
        http_server(settings, "streamable-http") as server,
        httpx2.AsyncClient(headers=BEARER, timeout=30) as http,
    ):
        with anyio.fail_after(30):
            transport = streamable_http_client(server.url, http_client=http)
            async with Client(transport, mode="legacy", message_handler=updates) as client:
                declared = client.server_capabilities.resources
                await client.subscribe_resource(uri)
                await worker.ack(task_id, "done", queue="jobs")  # not through the server
                heard = await updates.next()

    assert declared is not None
    assert declared.subscribe is True
    assert heard == uri


async def test_after_unsubscribing_a_session_hears_nothing_more_of_that_uri(
    settings: Settings, make_queue: QueueFactory
) -> None:
    worker = await make_queue("worker", real_clock=True)
    first, later, sentinel = [(await worker.enqueue("t", {}, queue="jobs")).task_id for _ in range(3)]
    await worker.read_tasks(3, queue="jobs")
    stats, watched = "queue://jobs/stats", f"task://jobs/{sentinel}"
    updates = Updates()
    async with Client(build_server(settings), mode="legacy", message_handler=updates) as client:
        with anyio.fail_after(15):
            await client.subscribe_resource(stats)
            await client.subscribe_resource(watched)
            await worker.ack(first, queue="jobs")
            assert await updates.next() == stats
            await client.unsubscribe_resource(stats)
            heard_before = len(updates.uris)
            await worker.ack(later, queue="jobs")  # changes the stats: no longer subscribed
            await worker.ack(sentinel, queue="jobs")  # a later entry of the same stream
            assert await updates.next() == watched

    # Entries are delivered in stream order: had the stats update of `later` been sent, it came first.
    assert updates.uris[heard_before:][:1] == [watched]


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("task://bad queue/abc", "invalid queue name"),
        ("task://jobs/", "invalid task id"),
        ("dlq://jobs", "cannot subscribe to dlq://jobs: updates are published for task://"),
        ("test://watched-resource", "cannot subscribe to test://watched-resource"),
    ],
)
async def test_subscribing_to_a_uri_without_updates_is_refused_with_the_reason(
    settings: Settings, uri: str, reason: str
) -> None:
    async with Client(build_server(settings), mode="legacy") as client:
        with pytest.raises(MCPError, match=reason) as refused:
            await client.subscribe_resource(uri)
        with pytest.raises(MCPError, match=reason):
            await client.unsubscribe_resource(uri)

    assert refused.value.error.code == types.INVALID_PARAMS
