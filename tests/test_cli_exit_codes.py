"""Exit statuses of the long-running commands: a busy port is a configuration error (2), Ctrl-C is 130."""

from __future__ import annotations

import signal
import socket

import anyio
import pytest

from mcp_queue_server import Settings, TaskQueue, TaskStatus
from tests.test_cli import RUN_S, cli
from tests.test_cli_worker import start_worker, wait_for_line
from tests.test_http import http_server


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_serving_http_on_a_port_in_use_exits_2_with_one_line_naming_the_port(
    settings: Settings, transport: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await cli(settings, "--transport", transport, "--port", str(port))

    assert done.code == 2, done.err
    [line] = done.err.splitlines()
    assert f"cannot listen on 127.0.0.1 port {port}: the port is already in use" in line
    assert "--port or MCP_QUEUE_PORT" in line


async def test_a_stdio_server_whose_metrics_port_is_in_use_exits_2_naming_that_setting(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await cli(settings, "--metrics-port", str(port))

    assert done.code == 2, done.err
    [line] = done.err.splitlines()
    assert f"port {port}" in line
    assert "--metrics-port or MCP_QUEUE_METRICS_PORT" in line


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
async def test_the_http_server_exits_130_on_ctrl_c_and_0_on_sigterm_after_handing_tasks_back(
    settings: Settings, sig: signal.Signals, status: int
) -> None:
    async with http_server(settings, "streamable-http") as server:
        server.process.send_signal(sig)
        with anyio.fail_after(RUN_S):
            code = await server.process.wait()

    assert code == status, server.log
    assert any("held tasks were handed back" in line for line in server.log)
    assert not any("Traceback" in line for line in server.log)


async def test_the_worker_command_exits_130_on_ctrl_c_after_handing_its_task_back(
    settings: Settings, queue: TaskQueue
) -> None:
    await queue.enqueue("hold", {}, task_id="held")
    process = await start_worker(settings, "--grace-period", "0")
    out: list[str] = []
    try:
        await wait_for_line(process.stdout, "holding held", out)
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(RUN_S):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()

    info = await queue.get_task("held")
    assert code == 130
    assert (info.status, info.attempt) == (TaskStatus.QUEUED, 0)
