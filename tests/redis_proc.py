"""A real redis-server process for tests: free port, own directory, kill and restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from mcp_queue_server.store.binaries import find_redis_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProc:
    """One redis-server on 127.0.0.1; ``aof`` turns on appendonly so kill -9 loses nothing acked."""

    directory: Path
    aof: bool = False
    binary: str = field(default_factory=lambda: find_redis_server(os.environ.get("MCP_QUEUE_TEST_REDIS_SERVER")))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    client_kwargs: dict[str, object] = field(default_factory=dict)  #: how to reach it (e.g. TLS options)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProc:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", "everysec",
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2, **self.client_kwargs)  # type: ignore[arg-type]
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server ({self.binary}) did not start on port {self.port}") from None
                time.sleep(0.02)  # polling for readiness of an external process, bounded by the deadline
        client.close()
        return self

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

    def restart(self) -> RedisProc:
        self.kill()
        return self.start()

    def version(self) -> str:
        with redis.Redis(port=self.port) as client:
            return str(client.info("server")["redis_version"])
