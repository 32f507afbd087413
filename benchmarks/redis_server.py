"""A throwaway redis-server on loopback for one benchmark run (no persistence unless asked)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from mcp_queue_server.store.binaries import find_redis_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` on 127.0.0.1 and a free port, in a temporary directory.

    ``aof=True`` turns on ``appendonly`` with ``appendfsync everysec`` (the durable
    setting); otherwise nothing is persisted.
    """

    def __init__(self, binary: str | None = None, *, aof: bool = False) -> None:
        self.binary = find_redis_server(binary)
        self.aof = aof
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="mcpq-bench-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", "everysec",
            "--protected-mode", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError(f"redis-server ({self.binary}) did not start on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def info(self, section: str = "server") -> dict[str, object]:
        with redis.Redis(port=self.port) as client:
            return dict(client.info(section))

    def version(self) -> str:
        return str(self.info("server")["redis_version"])

    def pid(self) -> int:
        return int(str(self.info("server")["process_id"]))

    def flush(self) -> None:
        """Empty the server between repetitions (it is ours alone)."""
        with redis.Redis(port=self.port) as client:
            client.flushall()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
