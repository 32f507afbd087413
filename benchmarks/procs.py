"""Starting and talking to worker processes (see :mod:`benchmarks.workers`)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio.to_thread

ROOT = Path(__file__).resolve().parents[1]


class WorkerProc:
    """One ``python -m benchmarks.workers`` child; lines of JSON in, lines of JSON out."""

    def __init__(self, mode: str, **options: str | int) -> None:
        flags = [part for k, v in options.items() for part in (f"--{k.replace('_', '-')}", str(v))]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.workers", mode, *flags],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._buf = b""

    def _read_line(self, limit_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + limit_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"worker {self.proc.args} said nothing in {limit_s} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"worker {self.proc.args} exited with {self.proc.wait()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return dict(json.loads(line))

    async def expect(self, limit_s: float = 120.0) -> dict[str, Any]:
        """The next line the worker prints, within ``limit_s`` (read in a thread: the
        caller's loop keeps running meanwhile)."""
        return await anyio.to_thread.run_sync(self._read_line, limit_s)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, held tasks stay leased."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
