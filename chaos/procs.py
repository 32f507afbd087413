"""Child processes: process groups, signals, the worker supervisor and the final sweep.

Every child runs in its own session (so its process group id is its pid) and an MCP
server started by a worker runs in another one (the SDK spawns it with
``start_new_session``). A worker's "tree" is therefore two groups: the worker loop's and
its server's; faults signal both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc

from chaos.common import ROOT, RUN_ID_ENV, Config


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


async def spawn(cfg: Config, module: str, args: list[str], log_name: str) -> anyio.abc.Process:
    """Start ``python -m module args`` in a new session, stdout and stderr to a log file."""
    with (cfg.logs / f"{log_name}.stderr").open("ab") as out:
        return await anyio.open_process(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=ROOT,
            env=cfg.child_env(),
            start_new_session=True,
        )


@dataclass
class Slot:
    """One worker position; each restart is a new incarnation with a new consumer name."""

    index: int
    gen: int = 0
    proc: anyio.abc.Process | None = None
    started: float = 0.0  #: monotonic time of the last start
    skew: str = ""  #: the next start's MCP server clock offset (clock_skew fault), e.g. "+120s"
    exit_codes: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"w{self.index}-g{self.gen}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Supervisor:
    """Keeps ``cfg.workers`` worker processes running, restarting any that die."""

    def __init__(self, cfg: Config, config_path: Path) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.slots = [Slot(i) for i in range(cfg.workers)]
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
