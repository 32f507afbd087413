"""The worker pool: real worker processes restarted, health-checked and autoscaled; the scaling rule alone."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from mcp_queue_server import InvalidInput, NewTask, QueueStats, Settings, StreamStats, TaskQueue
from mcp_queue_server.worker.pool import Autoscaler, ScalePolicy, WorkerPool, settings_env

HANDLERS = "tests.test_cli_worker:HANDLERS"
START_S = 60  # worker processes import the package: seconds on a loaded 2-core machine


@asynccontextmanager
async def running(pool: WorkerPool) -> AsyncIterator[WorkerPool]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.run)
        yield pool
        pool.stop()


async def wait(pool: WorkerPool, predicate: Any) -> None:
    with anyio.fail_after(START_S):
        await pool.wait_until(predicate)


def ready(pool: WorkerPool) -> int:
    return sum(w.ready for w in pool.live())


def processed(pool: WorkerPool) -> int:
    return sum(int(w.last_beat.get("processed", 0)) for w in pool.workers)


async def test_the_pool_restarts_a_worker_process_that_was_killed(settings: Settings, queue: TaskQueue) -> None:
    pool = WorkerPool(HANDLERS, settings, size=2, heartbeat_interval_s=0.2, grace_period_s=1)
    async with running(pool):
        await wait(pool, lambda p: ready(p) == 2)
        victim = pool.workers[0]
        old_pid = victim.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        await wait(pool, lambda p: victim.ready and victim.pid != old_pid)
        # The restarted pool still does the work.
        await queue.enqueue("echo", {"n": 1}, task_id="after-restart")
        await wait(pool, lambda p: processed(p) >= 1)
        processes = [w.process for w in pool.workers]

    assert victim.restarts == 1
    assert [p.returncode for p in processes if p is not None] == [0, 0]  # stopped gracefully
    assert (await queue.get_task("after-restart")).result == {"n": 1}


async def test_the_pool_kills_and_restarts_a_worker_whose_heartbeat_stops(settings: Settings, queue: TaskQueue) -> None:
    pool = WorkerPool(HANDLERS, settings, size=1, heartbeat_interval_s=0.2, health_timeout_s=2, grace_period_s=1)
    async with running(pool):
        await wait(pool, lambda p: ready(p) == 1)
        [worker] = pool.workers
        frozen_pid = worker.pid
        await queue.enqueue("freeze", {}, task_id="blocks-the-event-loop")
        await wait(pool, lambda p: worker.ready and worker.pid != frozen_pid)

    assert worker.restarts == 1


async def test_the_pool_scales_up_with_the_backlog_and_back_down_when_idle(
    settings: Settings, queue: TaskQueue
) -> None:
    policy = ScalePolicy(1, 2, tasks_per_worker=1, max_wait_ms=None, scale_down_after_s=0.5, interval_s=0.2)
    pool = WorkerPool(HANDLERS, settings, size=policy, heartbeat_interval_s=0.2, grace_period_s=10)
    async with running(pool):
        await wait(pool, lambda p: ready(p) == 1)
        # One worker alone would need 6 s: time enough for a second one to start and help.
        await queue.enqueue_batch([NewTask("slow", {"seconds": 0.5}) for _ in range(12)])
        await wait(pool, lambda p: ready(p) == 2)
        await wait(pool, lambda p: len(p.workers) == 1)
    # Stopping let the last worker finish its task (scaling down let the other finish its own).

    assert (await queue.get_queue_stats()).totals["completed"] == 12


def test_settings_pass_to_worker_processes_as_environment_variables(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = settings.model_copy(update={"allowed_hosts": ["a.example"], "lease_ms": 1234})
    env = settings_env(given)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    seen = Settings()

    assert "MCP_QUEUE_CONSUMER" not in env  # each worker names itself
    assert seen.model_dump(exclude={"consumer"}) == given.model_dump(exclude={"consumer"})
    assert seen.redis_url_value() == settings.redis_url_value()


# -- the scaling rule --------------------------------------------------------------------------


def stats(available: int = 0, in_flight: int = 0, oldest_ms: int | None = None) -> QueueStats:
    empty = StreamStats(0, 0, 0)
    return QueueStats("default", empty, empty, 0, in_flight, available, 0, oldest_ms, [])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_autoscaler_adds_workers_for_the_backlog_at_once_up_to_the_maximum() -> None:
    scaler = Autoscaler(ScalePolicy(1, 4, tasks_per_worker=10), clock=Clock())

    assert scaler.decide(1, stats(available=0)) == 1
    assert scaler.decide(1, stats(available=25)) == 3
    assert scaler.decide(3, stats(available=500)) == 4


def test_the_autoscaler_adds_a_worker_while_the_oldest_task_waits_too_long() -> None:
    scaler = Autoscaler(ScalePolicy(1, 4, tasks_per_worker=100, max_wait_ms=5_000), clock=Clock())

    assert scaler.decide(2, stats(available=3, oldest_ms=4_000)) == 2
    assert scaler.decide(2, stats(available=3, oldest_ms=6_000)) == 3


def test_the_autoscaler_keeps_workers_for_the_tasks_in_flight() -> None:
    scaler = Autoscaler(ScalePolicy(1, 8, scale_down_after_s=0), concurrency=2, clock=Clock())

    assert scaler.decide(4, stats(in_flight=6)) == 3


def test_the_autoscaler_removes_one_worker_per_quiet_period() -> None:
    clock = Clock()
    scaler = Autoscaler(ScalePolicy(1, 4, scale_down_after_s=60), clock=clock)

    assert scaler.decide(4, stats()) == 4  # quiet from now on
    clock.now = 59
    assert scaler.decide(4, stats()) == 4
    clock.now = 60
    assert scaler.decide(4, stats()) == 3
    clock.now = 100
    assert scaler.decide(3, stats()) == 3  # the next step waits a full period again
    clock.now = 120
    assert scaler.decide(3, stats()) == 2
    assert scaler.decide(2, stats(available=30)) == 3  # a backlog resets the quiet period


@pytest.mark.parametrize(("low", "high"), [(0, 1), (3, 2)])
def test_a_scale_policy_needs_one_to_max_workers(low: int, high: int) -> None:
    with pytest.raises(InvalidInput):
        ScalePolicy(low, high)
