"""The CLI on a terminal and on a pipe: progress bars and rich tables only for a person watching.

The terminal is a real pseudo-terminal (``pty``); the child's stdout and/or stderr is its
slave side, and the test reads the master side until the child exits (bounded by a deadline).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass

import anyio
import pytest

from mcp_queue_server import NewTask, Settings, TaskQueue
from tests.test_cli import ROOT, RUN_S, cli, cli_env, dead_tasks

ESC = "\x1b["


@dataclass
class Run:
    code: int
    terminal: str  #: what the child wrote to the terminal
    piped: str  #: what it wrote to the stream that stayed a pipe


def run_on_terminal(
    settings: Settings,
    *args: str,
    tty: str = "stderr",
    stdin: str | None = None,
    interrupt_after: str | None = None,
    **env: str,
) -> Run:
    """Run the CLI with ``tty`` (stdout or stderr) on a pseudo-terminal and the other stream piped.

    ``interrupt_after``: send SIGINT (Ctrl-C) once the terminal showed this text.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))  # 40 rows, 200 columns
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_queue_server", *args],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=slave if tty == "stdout" else subprocess.PIPE,
        stderr=slave if tty == "stderr" else subprocess.PIPE,
        env=cli_env(settings, TERM="xterm-256color", **env),
        cwd=ROOT,
    )
    os.close(slave)
    piped_stream = process.stderr if tty == "stdout" else process.stdout
    assert piped_stream is not None
    if stdin is not None:
        assert process.stdin is not None
        process.stdin.write(stdin.encode())
        process.stdin.close()
    terminal, piped = b"", b""
    deadline = time.monotonic() + RUN_S
    open_fds = {master, piped_stream.fileno()}
    interrupted = False
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the command did not finish; the terminal showed {terminal!r}")
            ready, _, _ = select.select(list(open_fds), [], [], left)
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: every slave side closed (the child exited)
                    chunk = b""
                if not chunk:
                    open_fds.discard(fd)
                elif fd == master:
                    terminal += chunk
                else:
                    piped += chunk
            if interrupt_after and not interrupted and interrupt_after.encode() in terminal:
                process.send_signal(signal.SIGINT)
                interrupted = True
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
        piped_stream.close()
    return Run(code, terminal.decode(errors="replace"), piped.decode(errors="replace"))


@pytest.mark.parametrize("action", ["purge", "replay"])
async def test_dlq_all_on_a_terminal_shows_a_progress_bar(settings: Settings, queue: TaskQueue, action: str) -> None:
    await dead_tasks(queue, 5)

    run = await anyio.to_thread.run_sync(
        lambda: run_on_terminal(settings, "dlq", action, "--all", "--json", MCP_QUEUE_PENDING_BATCH_SIZE="2")
    )

    verb = "purged" if action == "purge" else "replayed"
    assert run.code == 0, run.terminal
    assert json.loads(run.piped) == {verb: 5}
    assert verb in run.terminal
    assert "5/5" in run.terminal
    assert "━" in run.terminal  # the bar
    assert ESC in run.terminal


async def test_enqueue_of_many_tasks_shows_progress_on_a_terminal_and_nothing_when_piped(
    settings: Settings, queue: TaskQueue
) -> None:
    many = "\n".join(json.dumps({"task_type": "t", "task_id": f"n{i}"}) for i in range(250))
    more = "\n".join(json.dumps({"task_type": "t", "task_id": f"m{i}"}) for i in range(250))

    on_terminal = await anyio.to_thread.run_sync(lambda: run_on_terminal(settings, "enqueue", stdin=many))
    piped = await cli(settings, "enqueue", stdin=more)

    assert on_terminal.code == 0, on_terminal.terminal
    assert "250/250" in on_terminal.terminal
    assert len(on_terminal.piped.split()) == 250
    assert (piped.code, piped.err) == (0, "")
    assert (await queue.get_queue_stats()).available == 500


async def test_stats_on_a_terminal_is_a_rich_table_and_piped_a_plain_one(settings: Settings, queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, priority=20)

    on_terminal = await anyio.to_thread.run_sync(lambda: run_on_terminal(settings, "stats", tty="stdout"))
    piped = await cli(settings, "stats")

    assert on_terminal.code == 0, on_terminal.piped
    assert ESC in on_terminal.terminal  # bold headers
    assert "─" in on_terminal.terminal  # the rule under them
    row = next(line for line in on_terminal.terminal.splitlines() if "default" in line)
    assert row.split()[:4] == ["default", "1", "1", "0"]
    assert ESC not in piped.out
    assert piped.out.splitlines()[1].split()[:4] == ["default", "1", "1", "0"]


async def test_top_on_a_terminal_redraws_with_rich_until_ctrl_c_which_exits_130(
    settings: Settings, queue: TaskQueue
) -> None:
    await queue.enqueue_batch([NewTask("t", {}) for _ in range(3)])

    run = await anyio.to_thread.run_sync(
        lambda: run_on_terminal(settings, "top", "--interval", "0.1", tty="stdout", interrupt_after="Ctrl-C to quit")
    )

    assert run.code == 130
    assert "mcp-queue-server top" in run.terminal
    assert "IN/S" in run.terminal
    assert "Traceback" not in run.piped
