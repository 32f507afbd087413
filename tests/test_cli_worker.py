"""``mcp-queue-server worker MODULE:ATTR`` as a real process: handlers, SIGTERM, grace, hand-back.

The handlers below are also what the worker processes of these tests (and of the pool tests)
import: ``tests.test_cli_worker:HANDLERS``.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from mcp_queue_server import Settings, Task, TaskQueue, TaskStatus
from mcp_queue_server.worker.runtime import TaskContext
from tests.conftest import QueueFactory
from tests.test_cli import ROOT, RUN_S, cli, cli_env

# -- handlers run by the worker processes ------------------------------------------------------


async def echo(task: Task, ctx: TaskContext) -> dict[str, Any]:
    return task.payload


async def hold(task: Task, ctx: TaskContext) -> None:
    print(f"holding {task.task_id}", flush=True)
    await anyio.sleep_forever()


async def slow(task: Task, ctx: TaskContext) -> str:
    await anyio.sleep(float(task.payload.get("seconds", 1)))
    return "slept"


async def freeze(task: Task, ctx: TaskContext) -> None:
    time.sleep(600)  # blocks the worker's event loop: its heartbeat stops  # noqa: ASYNC251


HANDLERS = {"echo": echo, "hold": hold, "slow": slow, "freeze": freeze}

# -- tests -------------------------------------------------------------------------------------


async def lines_of(stream: Any) -> Any:
    buffer = ""
    async for chunk in TextReceiveStream(stream):
        buffer += chunk
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            yield line


async def wait_for_line(stream: Any, text: str, seen: list[str]) -> None:
    with anyio.fail_after(RUN_S):
        async for line in lines_of(stream):
            seen.append(line)
            if text in line:
                return
    raise AssertionError(f"{text!r} never came; saw {seen}")


async def wait_for_lines(stream: Any, texts: list[str], seen: list[str]) -> None:
    """Wait for lines containing each of ``texts``, in that order (one reader: no line is lost)."""
    left = list(texts)
    with anyio.fail_after(RUN_S):
        async for line in lines_of(stream):
            seen.append(line)
            if left[0] in line:
                left.pop(0)
                if not left:
                    return
    raise AssertionError(f"{left!r} never came; saw {seen}")


async def start_worker(settings: Settings, *args: str) -> Process:
    return await anyio.open_process(
        [sys.executable, "-m", "mcp_queue_server", "worker", "tests.test_cli_worker:HANDLERS", *args],
        env=cli_env(settings, MCP_QUEUE_CONSUMER="cli-worker"),
        cwd=ROOT,
    )


async def test_the_worker_command_acks_results_and_hands_back_a_running_task_on_sigterm(
    settings: Settings, queue: TaskQueue
) -> None:
    await queue.enqueue("echo", {"n": 1}, priority=20, task_id="first")
    await queue.enqueue("hold", {}, task_id="second")
    process = await start_worker(settings, "--grace-period", "0.5")
    out: list[str] = []
    try:
        # One at a time: "second" starts only once "first" was acked.
        await wait_for_line(process.stdout, "holding second", out)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(RUN_S):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()

    first, second = await queue.get_task("first"), await queue.get_task("second")
    assert code == 0
    assert (first.status, first.result) == (TaskStatus.COMPLETED, {"n": 1})
    assert (second.status, second.attempt) == (TaskStatus.QUEUED, 0)  # handed back, not charged


async def test_a_second_sigterm_hands_running_tasks_back_without_waiting_for_the_grace_period(
    settings: Settings, queue: TaskQueue
) -> None:
    await queue.enqueue("hold", {}, task_id="held")
    process = await start_worker(settings, "--grace-period", "600")
    out: list[str] = []
    err: list[str] = []
    try:
        await wait_for_line(process.stdout, "holding held", out)
        process.send_signal(signal.SIGTERM)
        await wait_for_line(process.stderr, "finishing 1 running task(s) within 600 s", err)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(RUN_S):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()

    assert code == 0
    assert (await queue.get_task("held")).status == TaskStatus.QUEUED


async def test_the_worker_command_hands_back_task_types_it_has_no_handler_for_without_charging_them(
    settings: Settings, make_queue: QueueFactory
) -> None:
    queue: TaskQueue = await make_queue("producer", real_clock=True, max_attempts=1)
    await queue.enqueue("translate", {}, priority=20, task_id="foreign")
    await queue.enqueue("echo", {"n": 2}, task_id="own")
    process = await start_worker(settings, "--max-attempts", "1", "--summary-interval", "0.1")
    err: list[str] = []
    try:
        # Its own task, behind the foreign one: one line for it, then the interval's summary.
        expected = [
            "no handler for task type 'translate'",
            ": task own (type echo, attempt 1) acked in",
            "tasks/s; 0 running",
        ]
        await wait_for_lines(process.stderr, expected, err)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(RUN_S):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()

    foreign, own = await queue.get_task("foreign"), await queue.get_task("own")
    assert code == 0
    assert (foreign.status, foreign.attempt, foreign.max_attempts) == (TaskStatus.QUEUED, 0, 1)
    assert (own.status, own.result) == (TaskStatus.COMPLETED, {"n": 2})
    assert (await queue.inspect_dlq()).tasks == []


async def test_the_worker_command_rejects_a_handler_it_cannot_load(settings: Settings) -> None:
    missing = await cli(settings, "worker", "tests.no_such_module:handle")
    no_attr = await cli(settings, "worker", "tests.test_cli_worker:nothing")
    malformed = await cli(settings, "worker", "just_a_module")

    assert (missing.code, no_attr.code, malformed.code) == (2, 2, 2)
    assert "cannot import 'tests.no_such_module'" in missing.err
    assert "has no attribute 'nothing'" in no_attr.err
    assert "MODULE:ATTR" in malformed.err
