"""What every chaos process shares: the run's configuration and append-only JSONL logs."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The project root: child processes run from here so ``-m chaos.*`` and the package import.
ROOT = Path(__file__).resolve().parent.parent

#: Every child process carries this variable (value: the run id), so a final sweep can find
#: and kill exactly this run's processes, including MCP servers orphaned by a SIGKILL.
RUN_ID_ENV = "CHAOS_RUN_ID"

QUEUE = "default"
#: The tokens file's principal the HTTP agents call as (role worker).
HTTP_PRINCIPAL = "crew"
#: A file in the run's workdir while the nemesis injects faults: producers keep producing
#: until it is gone (a slow restart must not leave a fault with no tasks to act on).
FAULTS_RUNNING = "faults.running"


@dataclass(frozen=True)
class Config:
    """One run's knobs, written to ``<workdir>/config.json`` for the child processes."""

    seed: int
    duration: float  #: length of the fault window (s)
    produce_for: float  #: how long producers produce (s): at least the fault window
    workers: int
    producers: int
    persistence: bool
    workdir: str
    redis_url: str
    run_id: str
    t0: float  #: wall-clock start of the run; log times are relative to it
    key_prefix: str = "chaos"
    lease_ms: int = 1500
    socket_timeout_s: float = 0.5
    retry_backoff_ms: int = 100
    healthy_max_attempts: int = 10  #: high, so kills and pauses never dead-letter a healthy task
    poison_max_attempts: int = 3
    rate: float = 10.0  #: producer operations per second, per producer
    skew_s: int = 120  #: the clock_skew fault runs one worker's MCP server this far off (s, signed)
    client_clock: bool = False  #: negative control: MCP servers run their scripts on their own clock
    http_workers: int = 0  #: HTTP agents, each an MCP session on one shared Streamable HTTP server
    http_port: int = 0
    tokens_file: str = ""  #: MCP_QUEUE_AUTH_TOKENS_FILE of the shared HTTP server (mode 600)
    #: Limits (issue 18): "limited" tasks share a key with max_working, "rated" ones a key with
    #: max_per_minute (each producer enqueues at most rated_tasks of them, so the minute's tail
    #: stays short).
    working_key: str = "chaos.w"
    max_working: int = 2
    rate_key: str = "chaos.r"
    max_per_minute: int = 12
    rated_tasks: int = 10
    #: A keyed task's work takes half this to this (ms): long enough that a key over its limit shows
    #: (several held at once), short enough that an agent (which waits for the slowest task of its
    #: read) keeps up with the offered load.
    limited_work_ms: int = 100
    client_limits: bool = False  #: negative control: MCP servers count limits before the read script

    split_sagas: bool = False  #: negative control: a saga's step transition in two calls (chaos/sagas.py)

    @property
    def server_module(self) -> str:
        """What the MCP servers run: the package, or a negative control's variant of it."""
        if self.client_clock:
            return "chaos.client_clock_server"
        return "chaos.client_limits_server" if self.client_limits else "mcp_queue_server"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/mcp"

    @property
    def logs(self) -> Path:
        return Path(self.workdir) / "logs"

    def save(self) -> Path:
        path = Path(self.workdir) / "config.json"
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls(**json.loads(Path(path).read_text()))

    def child_env(self, **extra: str) -> dict[str, str]:
        """A minimal environment for a child process: no stray MCP_QUEUE_* from the caller."""
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "USER")}
        return {**keep, "PYTHONPATH": str(ROOT), RUN_ID_ENV: self.run_id, **extra}

    def faults_running(self) -> bool:
        return (Path(self.workdir) / FAULTS_RUNNING).exists()

    def since_start(self) -> float:
        return round(time.time() - self.t0, 3)


FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)


def faketime_lib() -> str | None:
    """libfaketime (Debian's ``faketime`` package), which the clock_skew fault preloads."""
    return next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)


def wall_ms() -> int:
    """This process's wall clock in ms. Workers run unfaked on Redis's host, so this is Redis's
    clock (only their MCP servers get a skewed one): the checker bounds delivery times by it."""
    return time.time_ns() // 1_000_000


class Jsonl:
    """An append-only JSONL log. One ``write`` syscall per record on an O_APPEND descriptor,
    so a SIGKILL leaves at most one torn last line (which :func:`read_jsonl` skips)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **record: Any) -> None:
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by SIGKILL


def read_logs(directory: Path, prefix: str) -> Iterator[dict[str, Any]]:
    for path in sorted(directory.glob(f"{prefix}*.jsonl")):
        yield from read_jsonl(path)
