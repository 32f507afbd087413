"""Resource subscriptions (issue 13, part 3, point 3): a subscriber of task://<queue>/<id> hears
that the task changed state whichever server process changed it (the bus is fed from Redis)."""

from __future__ import annotations

import sys
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.shared.subscriptions import ResourceUpdated

from mcp_queue_server import Settings
from mcp_queue_server.server.app import build_server
from tests.conftest import QueueFactory
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
