"""Child processes: process groups, signals, the worker supervisor, the shared HTTP
server and the final sweep.

Every child runs in its own session (so its process group id is its pid) and an MCP
server started by a stdio worker runs in another one (the SDK spawns it with
``start_new_session``). A stdio worker's "tree" is therefore two groups: the worker loop's
and its server's; faults signal both. An HTTP agent is one process (its MCP server is the
shared :class:`HttpServer`, one MCP session per agent).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc

from chaos.common import HTTP_PRINCIPAL, ROOT, RUN_ID_ENV, Config


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ")".
    return int(stat.rsplit(")", 1)[1].split()[1])


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (for a worker: its MCP server)."""
    return [p for p in _pids() if _ppid(p) == pid]


async def wait_until(predicate: Callable[[], bool], interval: float) -> None:
    """Poll state owned by other processes (there is no event to wait on); callers bound it."""
    while True:
        if predicate():
            return
        await anyio.sleep(interval)


def signal_group(pgid: int, sig: int) -> None:
    """Signal one process group; never our own, and a group already gone is fine."""
    if pgid <= 1 or pgid == os.getpgrp():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_tree(pid: int, sig: int) -> None:
    """Signal a worker's MCP server groups first, then the worker's own group (its pid).

    Server first: killed the other way round, a server would see EOF on stdin and shut
    down gracefully (handing its tasks back), which is not the crash we want."""
    for child in children(pid):
        with contextlib.suppress(ProcessLookupError):
            signal_group(os.getpgid(child), sig)
    signal_group(pid, sig)


def sweep(run_id: str) -> list[int]:
    """SIGKILL every process still carrying this run's id in its environment."""
    marker = f"{RUN_ID_ENV}={run_id}".encode()
    killed = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker in env.split(b"\0"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


async def spawn(
    cfg: Config, module: str, args: list[str], log_name: str, env: dict[str, str] | None = None
) -> anyio.abc.Process:
    """Start ``python -m module args`` in a new session, stdout and stderr to a log file."""
    with (cfg.logs / f"{log_name}.stderr").open("ab") as out:
        return await anyio.open_process(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=ROOT,
            env=env or cfg.child_env(),
            start_new_session=True,
        )


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class HttpServer:
    """The one ``mcp-queue-server --transport streamable-http`` the HTTP agents share: named
    tokens (a worker principal, file mode 600), a fixed port across restarts."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.proc: anyio.abc.Process | None = None
        self.starts = 0

    def env(self) -> dict[str, str]:
        from chaos.worker import server_env  # the stdio workers' server settings, minus the transport

        env = server_env(self.cfg, "http")
        env.update(
            MCP_QUEUE_TRANSPORT="streamable-http",
            MCP_QUEUE_PORT=str(self.cfg.http_port),
            MCP_QUEUE_AUTH_TOKENS_FILE=self.cfg.tokens_file,
        )
        return env

    async def start(self, within: float) -> None:
        """Start it and wait (at most ``within`` s) until it accepts connections."""
        self.starts += 1
        self.proc = await spawn(self.cfg, self.cfg.server_module, [], "http-server", self.env())
        with anyio.fail_after(within):
            await wait_until(lambda: listening(self.cfg.http_port), 0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            signal_group(self.proc.pid, signal.SIGKILL)

    async def stop(self, grace: float) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(grace):
            await self.proc.wait()
        self.kill()


def write_tokens_file(cfg: Config) -> None:
    """The tokens file: the HTTP agents' worker principal (the server refuses a file others may read)."""
    path = Path(cfg.tokens_file)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({HTTP_PRINCIPAL: {"token": f"chaos-{cfg.run_id}-worker-token", "role": "worker"}}, f)
    path.chmod(0o600)


@dataclass
class Slot:
    """One worker position; each restart is a new incarnation with a new consumer name."""

    index: int
    http: bool = False  #: an HTTP agent (a session on the shared server), else a stdio worker
    gen: int = 0
    proc: anyio.abc.Process | None = None
    started: float = 0.0  #: monotonic time of the last start
    skew: str = ""  #: the next start's MCP server clock offset (clock_skew fault), e.g. "+120s"
    exit_codes: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{'h' if self.http else 'w'}{self.index}-g{self.gen}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Supervisor:
    """Keeps ``cfg.workers`` worker processes running, restarting any that die."""

    def __init__(self, cfg: Config, config_path: Path) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.slots = [Slot(i) for i in range(cfg.workers)] + [Slot(i, http=True) for i in range(cfg.http_workers)]
        self.stopping = False
        self.restarts = 0

    async def run(self, task_group: anyio.abc.TaskGroup) -> None:
        for slot in self.slots:
            await self._start(slot)
            task_group.start_soon(self._keep, slot)

    async def _start(self, slot: Slot) -> None:
        slot.gen += 1
        args = [str(self.config_path), slot.name, *([slot.skew] if slot.skew else [])]
        slot.proc = await spawn(self.cfg, "chaos.worker", args, f"worker-{slot.name}")
        slot.started = time.monotonic()

    async def _keep(self, slot: Slot) -> None:
        while True:
            assert slot.proc is not None
            slot.exit_codes.append(await slot.proc.wait())
            if self.stopping:
                return
            await anyio.sleep(0.2)  # like a real supervisor's restart delay
            if self.stopping:
                return
            self.restarts += 1
            await self._start(slot)

    async def stop(self, grace: float) -> None:
        """SIGTERM every worker (it stops reading and closes its server); SIGKILL stragglers."""
        self.stopping = True
        for slot in self.slots:
            if slot.alive():
                assert slot.proc is not None
                signal_tree(slot.proc.pid, signal.SIGCONT)
                slot.proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(grace):
            for slot in self.slots:
                if slot.proc is not None:
                    await slot.proc.wait()
        self.kill_all()

    def kill_all(self) -> None:
        self.stopping = True
        for slot in self.slots:
            if slot.alive():
                assert slot.proc is not None
                signal_tree(slot.proc.pid, signal.SIGKILL)

    def working(self, slot: Slot) -> bool:
        """The worker's last log line says it is in the middle of a task (holding its lease)."""
        path = self.cfg.logs / f"worker-{slot.name}.jsonl"
        try:
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - 400))
                last = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        except OSError:
            return False
        return b'"op":"work"' in last

    def ready(self, slot: Slot) -> bool:
        """Alive, its signal handlers installed and its MCP session up (it logged "start")."""
        if not slot.alive():
            return False
        try:
            with (self.cfg.logs / f"worker-{slot.name}.jsonl").open() as f:
                return '"op":"start"' in f.readline()
        except FileNotFoundError:
            return False
