"""The operator CLI through its real entry point: ``python -m mcp_queue_server COMMAND``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import redis

from mcp_queue_server import NewTask, QueueStats, Settings, StreamStats, TaskQueue, TaskStatus
from mcp_queue_server.testing import free_port
from tests.conftest import QueueFactory

ROOT = Path(__file__).resolve().parent.parent
RUN_S = 60


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli_env(settings: Settings | None, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "PYTHONIOENCODING": "utf-8"}
    if settings is not None:
        env |= {"MCP_QUEUE_REDIS_URL": settings.redis_url_value() or "", "MCP_QUEUE_KEY_PREFIX": settings.key_prefix}
    return env | extra


async def cli(settings: Settings | None, *args: str, stdin: str | None = None, **env: str) -> Result:
    with anyio.fail_after(RUN_S):
        done = await anyio.run_process(
            [sys.executable, "-m", "mcp_queue_server", *args],
            input=None if stdin is None else stdin.encode(),
            stdin=subprocess.DEVNULL if stdin is None else None,
            env=cli_env(settings, **env),
            cwd=ROOT,
            check=False,
        )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


async def dead_tasks(queue: TaskQueue, n: int) -> list[str]:
    ids = [f"dead-{i}" for i in range(n)]
    await queue.enqueue_batch([NewTask("t", {"i": i}, task_id=task_id) for i, task_id in enumerate(ids)])
    for task in await queue.read_messages(count=n):
        await queue.fail(task.task_id, "broken for good", retry=False)
    return ids


# -- stats, top, tasks -----------------------------------------------------------------------


async def test_stats_prints_one_table_row_per_queue(settings: Settings, queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, priority=20)
    await queue.enqueue("t", {})
    await queue.enqueue("t", {}, queue="other")

    done = await cli(settings, "stats", "--queue", "default", "--queue", "other")

    assert done.code == 0, done.err
    header, first, second, store = done.out.splitlines()
    assert store.startswith("store: maxmemory-policy noeviction")
    assert header.split()[:3] == ["QUEUE", "WAITING", "HIGH"]
    assert first.split()[:4] == ["default", "2", "1", "1"]
    assert second.split()[:2] == ["other", "1"]


async def test_stats_json_gives_depths_and_totals_by_queue(settings: Settings, queue: TaskQueue) -> None:
    await queue.enqueue("t", {})
    await queue.read_messages(count=1)

    done = await cli(settings, "stats", "--json")

    stats = json.loads(done.out)["default"]
    assert (stats["in_flight"], stats["available"], stats["totals"]["enqueued"]) == (1, 0, 1)


async def test_stats_json_of_an_empty_queue_gives_every_total_as_zero(settings: Settings) -> None:
    done = await cli(settings, "stats", "--json")

    assert done.code == 0, done.err
    assert json.loads(done.out)["default"]["totals"] == {
        "enqueued": 0,
        "completed": 0,
        "retried": 0,
        "dead_lettered": 0,
        "replayed": 0,
    }


async def test_top_once_prints_one_frame_with_queues_and_consumers(settings: Settings, queue: TaskQueue) -> None:
    await queue.enqueue("t", {})
    await queue.enqueue("t", {})
    await queue.read_messages(count=1)

    done = await cli(settings, "top", "--once")

    assert done.code == 0, done.err
    assert "\x1b[" not in done.out  # --once: no ANSI codes
    lines = done.out.splitlines()
    assert lines[0].startswith(f"mcp-queue-server top   key prefix {settings.key_prefix}")
    assert lines[2].split()[-2:] == ["IN/S", "DONE/S"]
    assert lines[3].split()[:2] == ["default", "1"]
    assert "consumers of default" in done.out
    assert any(line.split()[:2] == ["w1", "1"] for line in lines)


def test_top_shows_rates_from_the_change_in_totals_between_frames() -> None:
    from mcp_queue_server.cli.top import rates

    empty = StreamStats(0, 0, 0)

    def snap(enqueued: int, completed: int) -> QueueStats:
        return QueueStats("q", empty, empty, 0, 0, 0, 0, None, [], {"enqueued": enqueued, "completed": completed})

    assert rates([snap(30, 10)], None, 2.0) == {}
    assert rates([snap(30, 10)], [snap(10, 4)], 2.0) == {"q": (10.0, 3.0)}


async def test_tasks_get_prints_the_task_as_json(settings: Settings, queue: TaskQueue) -> None:
    await queue.enqueue("t", {"n": 1}, task_id="seen")

    done = await cli(settings, "tasks", "get", "seen")

    info = json.loads(done.out)
    assert (done.code, info["task_id"], info["status"], info["task_type"]) == (0, "seen", "queued", "t")


async def test_tasks_get_of_an_unknown_task_fails_with_status_1(settings: Settings) -> None:
    done = await cli(settings, "tasks", "get", "nope")

    assert done.code == 1
    assert done.out == ""
    assert "task nope not found" in done.err


# -- dead letters ----------------------------------------------------------------------------


async def test_dlq_list_shows_dead_tasks_with_their_errors(settings: Settings, queue: TaskQueue) -> None:
    await dead_tasks(queue, 2)

    table = await cli(settings, "dlq", "list")
    page = await cli(settings, "dlq", "list", "--json", "--count", "1")

    assert table.code == 0
    assert table.out.splitlines()[0].split()[:3] == ["TASK", "ID", "TYPE"]
    assert "broken for good" in table.out
    listed = json.loads(page.out)
    assert len(listed["tasks"]) == 1
    assert listed["next_cursor"]


async def test_dlq_replay_puts_the_given_tasks_back_in_the_queue(settings: Settings, queue: TaskQueue) -> None:
    ids = await dead_tasks(queue, 2)

    done = await cli(settings, "dlq", "replay", ids[0])

    assert (done.code, done.out.strip()) == (0, "replayed 1 dead task(s) of queue default")
    assert (await queue.get_task(ids[0])).status == TaskStatus.QUEUED
    assert (await queue.get_task(ids[1])).status == TaskStatus.FAILED


async def test_dlq_purge_all_purges_batch_by_batch_and_piped_prints_no_progress(
    settings: Settings, queue: TaskQueue
) -> None:
    await dead_tasks(queue, 5)

    done = await cli(settings, "dlq", "purge", "--all", "--json", MCP_QUEUE_PENDING_BATCH_SIZE="2")

    assert json.loads(done.out) == {"purged": 5}
    assert done.err == ""  # the progress bar is for a terminal (tests/test_cli_terminal.py)
    assert (await queue.get_queue_stats()).dead_letter == 0


async def test_dlq_replay_all_replays_every_dead_task(settings: Settings, queue: TaskQueue) -> None:
    await dead_tasks(queue, 3)

    done = await cli(settings, "dlq", "replay", "--all")

    assert done.out.strip() == "replayed 3 dead task(s) of queue default"
    assert (await queue.get_queue_stats()).available == 3


async def test_dlq_replay_needs_ids_or_all_but_not_both(settings: Settings) -> None:
    neither = await cli(settings, "dlq", "replay")
    both = await cli(settings, "dlq", "purge", "x", "--all")

    assert (neither.code, both.code) == (2, 2)
    assert "give task ids or --all" in neither.err


async def test_replaying_a_task_that_is_not_dead_fails_with_status_1(settings: Settings, queue: TaskQueue) -> None:
    await queue.enqueue("t", {}, task_id="alive")

    done = await cli(settings, "dlq", "replay", "alive")

    assert done.code == 1
    assert "alive" in done.err


# -- recovery, enqueue -----------------------------------------------------------------------


async def test_recover_requeues_a_task_whose_lease_expired(settings: Settings, make_queue: QueueFactory) -> None:
    crashed: TaskQueue = await make_queue("crashed", real_clock=True)
    await crashed.enqueue("t", {}, task_id="stuck")
    await crashed.read_messages(count=1, lease_ms=1)  # its worker "dies"; the lease runs out at once

    done = await cli(settings, "recover", "--json")

    assert json.loads(done.out) == {"requeued": ["stuck"], "dead_lettered": []}
    assert (await crashed.get_task("stuck")).status == TaskStatus.QUEUED


async def test_enqueue_from_arguments_prints_the_task_id(settings: Settings, queue: TaskQueue) -> None:
    done = await cli(settings, "enqueue", "summarise", "--payload", '{"doc": 7}', "--priority", "12", "--task-id", "s1")

    info = await queue.get_task("s1")
    assert (done.code, done.out) == (0, "s1\n")
    assert (info.task_type, info.priority) == ("summarise", 12)


async def test_enqueue_reads_json_lines_or_an_array_from_stdin(settings: Settings, queue: TaskQueue) -> None:
    lines = '{"task_type": "a", "task_id": "l1"}\n{"task_type": "b", "payload": {"x": 1}, "task_id": "l2"}\n'
    array = json.dumps([{"task_type": "c", "task_id": "a1"}, {"task_type": "c", "task_id": "l1"}])

    first = await cli(settings, "enqueue", stdin=lines)
    second = await cli(settings, "enqueue", "--json", stdin=array)

    assert first.out.split() == ["l1", "l2"]
    assert [(r["task_id"], r["duplicate"]) for r in json.loads(second.out)] == [("a1", False), ("l1", True)]
    assert "1 task id(s) existed already" in second.err
    assert (await queue.get_queue_stats()).available == 3


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["enqueue", "t", "--payload", "{nope"], None, "--payload is not valid JSON"),
        (["enqueue", "t", "--payload", "[1]"], None, "--payload must be a JSON object"),
        (["enqueue"], '{"task_type": "t", "colour": 1}', "unknown field(s) ['colour']"),
        (["enqueue"], "", "no tasks on stdin"),
        (["enqueue", "bad type!"], None, "invalid task type"),
        (["stats", "--max-attempts", "0"], None, "invalid --max-attempts 0: expected a whole number from 1 to"),
        (["stats", "--bogus"], None, "unrecognized arguments: --bogus"),
    ],
)
async def test_bad_input_exits_with_status_2_and_says_why(
    settings: Settings, args: list[str], stdin: str | None, message: str
) -> None:
    done = await cli(settings, *args, stdin=stdin)

    assert done.code == 2
    assert message in done.err
    assert done.out == ""


async def test_an_invalid_setting_is_named_as_the_user_gave_it_with_what_it_takes(settings: Settings) -> None:
    from_env = await cli(settings, "stats", MCP_QUEUE_LEASE_MS="abc")
    from_flag = await cli(settings, "stats", "--lease-ms", "0")
    unparsable_flag = await cli(settings, "stats", "--lease-ms", "abc")
    not_a_list = await cli(settings, "stats", MCP_QUEUE_ALLOWED_HOSTS="q.example")

    assert (from_env.code, from_flag.code, unparsable_flag.code, not_a_list.code) == (2, 2, 2, 2)
    assert from_env.err == (
        "mcp-queue-server: error: invalid MCP_QUEUE_LEASE_MS='abc': expected a whole number of at least 1; "
        "fix the variable or unset it (default: 60000)\n"
    )
    assert from_flag.err == (
        "mcp-queue-server: error: invalid --lease-ms 0: expected a whole number of at least 1; "
        "fix the flag or leave it out (default: 60000)\n"
    )
    assert "argument --lease-ms: invalid value 'abc': expected a whole number of at least 1" in unparsable_flag.err
    assert "invalid MCP_QUEUE_ALLOWED_HOSTS: expected a JSON list" in not_a_list.err
    assert "Traceback" not in not_a_list.err


async def test_an_invalid_redis_url_is_a_configuration_error_that_hides_the_url() -> None:
    done = await cli(None, "stats", MCP_QUEUE_REDIS_URL="http://user:s3cret@example.invalid/")

    assert done.code == 2
    assert "invalid Redis URL" in done.err
    assert "s3cret" not in done.err


async def test_an_unreachable_queue_store_exits_with_status_3() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    done = await cli(None, "stats", MCP_QUEUE_REDIS_URL=url, MCP_QUEUE_SOCKET_TIMEOUT_S="2")

    assert done.code == 3
    assert "queue store unavailable" in done.err


# -- entry point -----------------------------------------------------------------------------


async def test_help_lists_the_commands_and_their_exit_codes() -> None:
    top = await cli(None, "--help")
    ops = await cli(None, "stats", "--help")

    for command in ("stats", "top", "tasks get", "dlq", "recover", "enqueue", "worker", "demo"):
        assert command in top.out
    assert "--redis-url" in top.out  # the server's flags are still listed
    assert "3 queue store unavailable" in ops.out.replace("\n", " ").replace("  ", " ")
    assert "--key-prefix" in ops.out


async def test_serve_as_a_command_runs_the_server_with_its_flags() -> None:
    done = await cli(None, "serve", "--max-attempts", "0")

    assert done.code == 2
    assert "mcp-queue-server: invalid --max-attempts 0: expected a whole number from 1 to" in done.err


async def test_settings_flags_may_come_before_the_command(settings: Settings, queue: TaskQueue) -> None:
    await queue.enqueue("t", {})
    url = settings.redis_url_value() or ""

    done = await cli(None, "--redis-url", url, "--key-prefix", settings.key_prefix, "stats", "--json")

    assert json.loads(done.out)["default"]["available"] == 1


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mcpq-cli-", dir="/tmp"))  # short: the socket path must fit
    try:
        yield path
    finally:
        sock = path / "redis.sock"
        if sock.exists():
            with suppress(redis.RedisError):
                redis.Redis(unix_socket_path=str(sock)).shutdown(nosave=False)
        shutil.rmtree(path, ignore_errors=True)


async def test_commands_without_a_url_use_the_embedded_redis_and_stop_it_after(data_dir: Path) -> None:
    env = {"MCP_QUEUE_DATA_DIR": str(data_dir), "MCP_QUEUE_KEY_PREFIX": "emb"}

    enqueued = await cli(None, "enqueue", "t", "--task-id", "kept", **env)
    assert not (data_dir / "redis.sock").exists()  # the last (only) user stopped it
    shown = await cli(None, "tasks", "get", "kept", **env)

    assert enqueued.code == 0, enqueued.err
    assert json.loads(shown.out)["status"] == "queued"  # persisted across the restart
