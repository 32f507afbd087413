"""Redis Cluster: the same queue on 3 masters with replicas, queues spread over slots, failover, WAIT."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from mcp import Client
from redis.asyncio import Redis as AsyncRedis

from mcp_queue_server import NewTask, QueueError, QueueUnavailable, Settings, TaskQueue, TaskStatus
from mcp_queue_server.server.app import build_server
from mcp_queue_server.testing import ClusterProc, RedisProc
from tests.test_state_machine import QueueModel
from tests.test_stats_pages import FixedClock, still


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterProc]:
    proc = ClusterProc(Path(tempfile.mkdtemp(prefix="mcpq-cl-", dir="/tmp")), masters=3, replicas=True)
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def cluster_settings(cluster: ClusterProc) -> Settings:
    return Settings(redis_url=cluster.url, key_prefix=f"c{uuid.uuid4().hex[:8]}", retry_backoff_ms=0)


async def test_queues_spread_over_masters_and_each_queue_keeps_one_slot(
    cluster: ClusterProc, cluster_settings: Settings
) -> None:
    async with TaskQueue(cluster_settings) as q:
        names = [f"queue-{i}" for i in range(12)]
        for name in names:
            await q.enqueue("t", {}, queue=name, task_id="a")
            await q.enqueue("t", {}, queue=name, task_id="b", priority=20, delay_ms=1)
        masters = {cluster.node_of(q.keys(name).base).port for name in names}
        assert len(masters) >= 2
        sync = redis.Redis(port=cluster.nodes[0].port)
        for name in names[:3]:
            k = q.keys(name)
            slots = {sync.cluster("KEYSLOT", key) for key in (k.high, k.low, k.delayed, k.dlq, k.task("a"))}
            assert len(slots) == 1
        sync.close()


async def test_the_whole_task_life_works_on_a_cluster(cluster_settings: Settings) -> None:
    async with TaskQueue(cluster_settings, consumer="w1") as w1, TaskQueue(cluster_settings, consumer="w2") as w2:
        for queue in ("alpha", "beta", "gamma"):
            await w1.enqueue_batch(
                [NewTask("t", {"i": i}, priority=i * 5, task_id=f"t{i}") for i in range(4)], queue=queue
            )
            tasks = await w1.read_messages(count=4, queue=queue)
            assert [t.task_id for t in tasks] == ["t2", "t3", "t0", "t1"]
            await w1.ack_many([t.task_id for t in tasks[:2]], queue=queue)
            await w1.fail("t0", "poison", retry=False, queue=queue)
            with pytest.raises(Exception, match=r"leased by another worker \(w1\)"):
                await w2.acknowledge("t1", queue=queue)
            await w1.disconnect(release=False)
            assert await w1.release(queue) == 1
            [again] = await w2.read_messages(queue=queue)
            assert (again.task_id, again.attempt) == ("t1", 1)
            await w2.acknowledge("t1", queue=queue)
            assert await w2.replay_dlq(queue=queue) == ["t0"]
            await w2.fanout(
                "p", [NewTask("c", {}, task_id="c1")], on_complete=NewTask("m", {}, task_id="m"), queue=queue
            )
            for task in await w2.read_messages(count=5, queue=queue):
                await w2.acknowledge(task.task_id, 1, queue=queue)
            [merge] = await w2.read_messages(count=5, queue=queue)
            assert merge.task_id == "m"
            await w2.acknowledge("m", queue=queue)
            stats = await w2.get_queue_stats(queue)
            assert (stats.available, stats.in_flight, stats.dead_letter) == (0, 0, 0)
            assert (await w2.get_task("p", queue=queue)).status == TaskStatus.COMPLETED


async def test_a_blocking_read_on_a_cluster_wakes_for_a_new_task(
    cluster: ClusterProc, cluster_settings: Settings
) -> None:
    async with TaskQueue(cluster_settings, consumer="r") as reader, TaskQueue(cluster_settings) as producer:
        node = AsyncRedis(port=cluster.node_of(reader.keys("blocking").base).port)
        got: list[str] = []

        async def read() -> None:
            got.extend(t.task_id for t in await reader.read_messages(block_ms=10_000, queue="blocking"))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await _until_parked_in_xread(node)
                await producer.enqueue("t", {}, task_id="wake", queue="blocking")
        await node.aclose()
        assert got == ["wake"]


def test_the_queue_model_holds_on_a_cluster(cluster: ClusterProc) -> None:
    QueueModel.redis_url = cluster.url
    run_state_machine_as_test(
        QueueModel,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


async def test_mcp_agents_work_through_a_cluster(cluster_settings: Settings) -> None:
    async with Client(build_server(cluster_settings)) as client:

        async def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
            result = await client.call_tool(tool, args)
            assert not result.is_error, result.content
            assert result.structured_content is not None
            return result.structured_content

        for queue in ("q1", "q2", "q3", "q4"):
            await call("enqueue_task", {"task_type": "t", "payload": {"q": queue}, "task_id": "x", "queue": queue})
            [task] = (await call("read_tasks", {"queue": queue}))["tasks"]
            assert task["payload"] == {"q": queue}
            await call("checkpoint", {"task_id": "x", "data": {"s": 1}, "queue": queue})
            assert (await call("ack", {"task_id": "x", "result": 1, "queue": queue}))["status"] == "acked"
            assert (await call("get_task", {"task_id": "x", "queue": queue}))["status"] == "completed"


async def test_wait_reports_how_many_replicas_hold_an_enqueue(cluster_settings: Settings) -> None:
    s = cluster_settings.model_copy(update={"wait_replicas": 1, "wait_timeout_ms": 2_000})
    async with TaskQueue(s) as q:
        for queue in ("w1", "w2", "w3"):
            assert (await q.enqueue("t", {}, queue=queue)).replicas_confirmed == 1
            assert (await q.fanout("p", [NewTask("c", {})], queue=queue)).replicas_confirmed == 1


async def test_wait_on_a_single_node_reports_zero_replicas_instead_of_hiding_it(redis_url: str) -> None:
    s = Settings(redis_url=redis_url, key_prefix=f"w{uuid.uuid4().hex[:6]}", wait_replicas=1, wait_timeout_ms=50)
    async with TaskQueue(s) as q:
        assert (await q.enqueue("t", {})).replicas_confirmed == 0


async def test_wait_confirms_a_standalone_replica(tmp_path: Path) -> None:
    primary = RedisProc(tmp_path / "p").start()
    replica = RedisProc(tmp_path / "r").start()
    try:
        with redis.Redis(port=replica.port) as r:
            r.replicaof("127.0.0.1", primary.port)
            # Until the first sync is done WAIT blocks for it, and its 5 s timeout would race
            # the client's 5 s socket timeout.
            with anyio.fail_after(10):
                while True:
                    if r.info("replication").get("master_link_status") == "up":
                        break
                    await anyio.sleep(0.01)
        s = Settings(redis_url=primary.url, key_prefix="w", wait_replicas=1, wait_timeout_ms=5_000)
        async with TaskQueue(s) as q:
            assert (await q.enqueue("t", {})).replicas_confirmed == 1
    finally:
        replica.stop()
        primary.stop()


async def test_a_manual_failover_while_workers_run_loses_no_acknowledged_task(
    cluster: ClusterProc, cluster_settings: Settings
) -> None:
    queue = "failover"
    async with TaskQueue(cluster_settings, consumer="prod") as producer:
        master = cluster.node_of(producer.keys(queue).base)
        replica = cluster.replica_of(master)
        enqueued: set[str] = set()
        completed: set[str] = set()
        stop = anyio.Event()
        milestones: dict[int, anyio.Event] = {200: anyio.Event()}

        async def produce() -> None:
            i = 0
            while not stop.is_set():
                task_id = f"f{i}"
                try:
                    await producer.enqueue("t", {}, task_id=task_id, queue=queue)
                    enqueued.add(task_id)
                    i += 1
                    if i in milestones:
                        milestones[i].set()
                except QueueUnavailable:
                    await anyio.sleep(0.05)  # the cluster is switching masters: retry the same id
                await anyio.lowlevel.checkpoint()

        async def work(name: str) -> None:
            async with TaskQueue(cluster_settings, consumer=name) as w:
                while not (stop.is_set() and completed >= enqueued):
                    try:
                        for task in await w.read_messages(count=10, block_ms=100, lease_ms=2_000, queue=queue):
                            await w.acknowledge(task.task_id, queue=queue)
                            completed.add(task.task_id)
                    except QueueUnavailable:
                        await anyio.sleep(0.05)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                tg.start_soon(work, "a")
                tg.start_soon(work, "b")
                await milestones[200].wait()
                # The failover is asynchronous (the replica catches up first), and Redis drops a
                # manual failover that times out without saying so: ask again until it has taken
                # over, producing all along, then 200 more tasks against the new master.
                await _fail_over_to(cluster, producer.keys(queue).base, replica.port)
                after = milestones[len(enqueued) + 200] = anyio.Event()
                await after.wait()
                stop.set()
        assert cluster.node_of(producer.keys(queue).base).port == replica.port
        assert completed == enqueued
        stats = await producer.get_queue_stats(queue)
        assert (stats.available, stats.in_flight, stats.delayed) == (0, 0, 0)
        assert stats.totals["completed"] == len(enqueued)


async def _fail_over_to(cluster: ClusterProc, key: str, port: int) -> None:
    """Make the replica on ``port`` take over ``key``'s slot (polling: the switch raises no event)."""
    asked_at = -1.0
    while cluster.node_of(key).port != port:
        if anyio.current_time() - asked_at > 5:
            with redis.Redis(port=port) as r:
                r.execute_command("CLUSTER FAILOVER")
            asked_at = anyio.current_time()
        await anyio.sleep(0.02)


async def _until_parked_in_xread(node: AsyncRedis) -> None:
    """Wait until a client of ``node`` is blocked in XREAD (polling: Redis has no event for it)."""
    while True:
        if any(c.get("cmd") == "xread" for c in await node.client_list()):
            return
        await anyio.sleep(0.005)


async def test_an_unreachable_cluster_is_reported_as_unavailable_without_its_address() -> None:
    s = Settings(redis_url="redis+cluster://user:secret@127.0.0.1:1/0", key_prefix="u", socket_timeout_s=1)
    async with TaskQueue(s) as q:
        with anyio.fail_after(10), pytest.raises(QueueUnavailable) as caught:
            await q.enqueue("t", {})
        with anyio.fail_after(10), pytest.raises(QueueUnavailable):
            await q.get_queue_stats()
        await q.disconnect(release=False)
    assert "secret" not in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)


async def test_waitaof_confirms_the_local_fsync_where_the_server_has_it(tmp_path: Path) -> None:
    server = RedisProc(tmp_path / "aof", aof=True).start()
    try:
        with redis.Redis(port=server.port) as r:
            major, minor = (int(x) for x in str(r.info("server")["redis_version"]).split(".")[:2])
        s = Settings(redis_url=server.url, key_prefix="aof", wait_aof=True, wait_timeout_ms=2_000)
        async with TaskQueue(s) as q:
            if (major, minor) < (7, 2):
                with pytest.raises(QueueError, match=r"(?i)unknown command"):
                    await q.enqueue("t", {})
                return
            assert (await q.enqueue("t", {})).replicas_confirmed == 0
    finally:
        server.stop()


async def test_a_page_of_queue_stats_reads_queues_on_every_master_as_get_queue_stats_does(
    cluster: ClusterProc, cluster_settings: Settings
) -> None:
    clock = FixedClock()
    names = sorted(f"queue-{i}" for i in range(12))
    async with TaskQueue(cluster_settings, clock=clock) as q:
        for i, name in enumerate(names):
            await q.enqueue_batch([NewTask("t", {}, priority=20 * (j % 2)) for j in range(i + 1)], queue=name)
            await q.read_messages(1, queue=name)
        assert len({cluster.node_of(q.keys(name).base).port for name in names}) >= 2
        page = await q.queue_stats_page(count=10)
        rest = await q.queue_stats_page(page.next_cursor)
        single = [await q.get_queue_stats(name) for name in names]
    assert [s.queue for s in page.queues + rest.queues] == names
    assert rest.next_cursor is None
    assert [still(s) for s in page.queues + rest.queues] == [still(s) for s in single]
    assert sorted(s.available for s in single) == list(range(12))
