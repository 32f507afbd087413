"""One clock, the Redis server's: a client whose clock is ten minutes off changes nothing.

The skewed client is a real process under libfaketime (Debian's ``faketime`` package);
without it these tests skip, unless ``MCP_QUEUE_TEST_REQUIRE_FAKETIME=1``. A negative
control runs the same client on its own clock (the behaviour before issue 12) and shows
the steal happening, so the tests can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_queue_server import Settings, TaskQueue, TaskStatus
from tests.conftest import FakeClock, QueueFactory

ROOT = Path(__file__).resolve().parent.parent
FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)
TEN_MINUTES_MS = 600_000


def faketime_lib() -> str:
    found = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
    if found is None:
        if os.environ.get("MCP_QUEUE_TEST_REQUIRE_FAKETIME") == "1":
            pytest.fail("libfaketime is required (MCP_QUEUE_TEST_REQUIRE_FAKETIME=1): apt-get install faketime")
        pytest.skip("libfaketime not installed (apt-get install faketime)")
    return found


def skewed_read(settings: Settings, consumer: str, skew: str, *, client_clock: bool = False) -> dict[str, Any]:
    """Read once from a separate process whose clock is moved by ``skew`` (e.g. "+600s")."""
    url = settings.redis_url_value()
    assert url is not None
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LD_PRELOAD": faketime_lib(),
        "FAKETIME": skew,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # timeouts keep working
    }
    args = [url, settings.key_prefix, consumer, *(["--client-clock"] if client_clock else [])]
    done = subprocess.run(
        [sys.executable, "-m", "tests.clock_client", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # The process really ran on a clock ten minutes off (else these tests prove nothing).
    off = out["wall_ms"] - time.time_ns() // 1_000_000
    assert abs(off - int(skew.removesuffix("s")) * 1000) < 60_000, off
    return out


async def _leased_by_a_normal_client(make_queue: QueueFactory) -> TaskQueue:
    holder: TaskQueue = await make_queue("holder", real_clock=True)
    await holder.enqueue("t", {}, task_id="job")
    [task] = await holder.read_messages(lease_ms=120_000)
    assert task.attempt == 1
    return holder


async def test_a_client_ten_minutes_ahead_does_not_take_a_valid_lease(
    make_queue: QueueFactory, settings: Settings
) -> None:
    holder = await _leased_by_a_normal_client(make_queue)
    got = skewed_read(settings, "ahead", f"+{TEN_MINUTES_MS // 1000}s")
    assert got["tasks"] == []
    info = await holder.get_task("job")
    assert (info.status, info.lease_holder, info.attempt) == (TaskStatus.WORKING, "holder", 1)
    assert (await holder.acknowledge("job")).status == "acked"


async def _due_by_redis_time_only(make_queue: QueueFactory, clock: FakeClock) -> TaskQueue:
    """Leased and delayed five minutes "ago" (a test clock moved back): both are due by
    Redis's clock now, though not by the clock of a client ten minutes behind."""
    clock.advance(-300_000)
    past: TaskQueue = await make_queue("holder")
    await past.enqueue("t", {}, task_id="job")
    await past.read_messages(lease_ms=60_000)
    await past.enqueue("t", {}, task_id="later", delay_ms=60_000)
    return past


async def test_a_client_ten_minutes_behind_takes_over_an_expired_lease_and_a_due_delayed_task(
    make_queue: QueueFactory, settings: Settings, clock: FakeClock
) -> None:
    past = await _due_by_redis_time_only(make_queue, clock)
    got = skewed_read(settings, "behind", f"-{TEN_MINUTES_MS // 1000}s")
    assert sorted(got["tasks"]) == [["job", 2], ["later", 1]]
    assert (await past.get_task("job")).lease_holder == "behind"


async def test_negative_control_a_client_on_its_own_clock_ten_minutes_ahead_steals_the_lease(
    make_queue: QueueFactory, settings: Settings
) -> None:
    holder = await _leased_by_a_normal_client(make_queue)
    got = skewed_read(settings, "thief", f"+{TEN_MINUTES_MS // 1000}s", client_clock=True)
    assert got["tasks"] == [["job", 2]]  # the steal: the holder's lease is valid for two minutes yet
    assert (await holder.get_task("job")).lease_holder == "thief"


async def test_negative_control_a_client_on_its_own_clock_ten_minutes_behind_sees_nothing_due(
    make_queue: QueueFactory, settings: Settings, clock: FakeClock
) -> None:
    await _due_by_redis_time_only(make_queue, clock)
    got = skewed_read(settings, "behind", f"-{TEN_MINUTES_MS // 1000}s", client_clock=True)
    assert got["tasks"] == []  # by its own clock the lease runs and the delay waits ten more minutes
