"""The nemesis: a seeded fault schedule and its injection into real processes.

The schedule (kinds, times, targets, hold times) comes from ``random.Random(seed)``
alone, so a seed names the same faults every time; what the processes happen to be
doing when a fault lands is up to the OS. One fault at a time, each logged with its
kind and time. Every selected kind appears at least once (the first round is a shuffled
list of all of them), then random kinds fill the rest of the window.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread

from chaos.common import Config, Jsonl
from chaos.procs import Slot, Supervisor, signal_tree, wait_until
from mcp_queue_server.testing import RedisProc

KINDS = ("kill_worker", "pause_worker", "kill_redis", "pause_redis", "crash_before_ack", "clock_skew")
#: How long a slot may take to come (back) up before a fault aimed at it is skipped.
TARGET_WAIT_S = 20.0
#: How long a kill or pause waits for its target to be in the middle of a task.
MID_TASK_WAIT_S = 2.0
#: clock_skew: how long the skewed MCP server runs once up, and a budget for its start.
SKEW_HOLD_S, SKEW_START_S = 1.5, 2.5


@dataclass(frozen=True)
class Fault:
    at: float  #: seconds after the fault window opens
    kind: str
    target: int | None  #: worker slot, for worker faults
    hold: float  #: how long a pause or an outage lasts (s)


def hold_time(kind: str, cfg: Config) -> float:
    if kind == "pause_worker":
        return cfg.lease_ms / 1000 + 1.5  # past the lease, and time for another worker to take over
    if kind == "pause_redis":
        return cfg.socket_timeout_s * 3  # past the client timeout: calls end with unknown outcomes
    if kind == "kill_redis":
        return 0.5  # down time before the restart on the same AOF
    if kind == "clock_skew":
        return SKEW_START_S + SKEW_HOLD_S  # a restart, then the skewed server reading for a lease's length
    return 0.0


def plan(cfg: Config, kinds: tuple[str, ...], window: float) -> list[Fault]:
    """The faults of a run: every kind once (even past ``window``), then more while they fit."""
    rng = random.Random(f"{cfg.seed}/nemesis")
    first = list(kinds)
    rng.shuffle(first)
    faults: list[Fault] = []
    t = rng.uniform(0.3, 0.8)
    while True:
        kind = first.pop(0) if first else rng.choice(kinds)
        hold = hold_time(kind, cfg)
        if not first and faults and len(faults) >= len(kinds) and t + hold > window:
            return faults
        target = rng.randrange(cfg.workers) if kind.endswith(("worker", "ack", "skew")) else None
        faults.append(Fault(round(t, 3), kind, target, hold))
        t += hold + rng.uniform(0.4, 1.2)


class Nemesis:
    def __init__(self, cfg: Config, supervisor: Supervisor, redis: RedisProc, log: Jsonl) -> None:
        self.cfg, self.supervisor, self.redis, self.log = cfg, supervisor, redis, log
        self.injected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    async def run(self, faults: list[Fault]) -> None:
        start = time.monotonic()
        for fault in faults:
            await anyio.sleep(max(0.0, start + fault.at - time.monotonic()))
            await self.inject(fault)

    async def _target(self, index: int) -> Slot | None:
        """The planned slot once its MCP session is up; if it is still restarting after a
        moment, the next ready slot, so the schedule keeps its timing (bounded wait)."""
        slots = self.supervisor.slots
        order = slots[index:] + slots[:index]
        with anyio.move_on_after(1.0):
            await wait_until(lambda: self.supervisor.ready(order[0]), 0.05)
        with anyio.move_on_after(TARGET_WAIT_S):
            await wait_until(lambda: any(self.supervisor.ready(s) for s in order), 0.05)
            return next(s for s in order if self.supervisor.ready(s))
        return None

    async def inject(self, fault: Fault) -> None:
        record = {"kind": fault.kind, "t": self.cfg.since_start(), "hold": fault.hold}
        if fault.target is not None:
            slot = await self._target(fault.target)
            if slot is None or slot.proc is None:
                self.skipped[fault.kind] += 1
                self.log.write(op="skipped", target=fault.target, **record)
                return
            pid = slot.proc.pid
            if fault.kind in ("kill_worker", "pause_worker"):
                # Strike mid-task when we can: a task leased, checkpointed and not yet acked.
                with anyio.move_on_after(MID_TASK_WAIT_S):
                    await wait_until(lambda: self.supervisor.working(slot), 0.005)
                record["mid_task"] = self.supervisor.working(slot)
            record.update(target=slot.name, t=self.cfg.since_start())
            if fault.kind == "kill_worker":
                signal_tree(pid, signal.SIGKILL)
            elif fault.kind == "crash_before_ack":
                os.kill(pid, signal.SIGUSR1)  # the worker loop only: it kills itself after its next effect
            elif fault.kind == "clock_skew":
                record["skew"] = skew = f"{self.cfg.skew_s:+d}s"
                record["skewed"] = await self._skew(slot, skew, SKEW_HOLD_S)
            else:
                await self._pause(lambda sig: signal_tree(pid, sig), fault.hold)
        elif fault.kind == "kill_redis":
            await anyio.to_thread.run_sync(self.redis.kill)
            await anyio.sleep(fault.hold)
            await anyio.to_thread.run_sync(self.redis.start)
        else:
            proc = self.redis.proc
            assert proc is not None
            await self._pause(proc.send_signal, fault.hold)
        self.injected[fault.kind] += 1
        self.log.write(op="fault", end=self.cfg.since_start(), **record)

    async def _skew(self, slot: Slot, skew: str, hold: float) -> bool:
        """Restart the slot's worker with its MCP server under libfaketime (clock off by
        ``skew``) for ``hold`` s, then back on the true clock. Killed on the way in (fast; its
        leases expire as after a crash), stopped gracefully on the way out (its server hands
        its tasks back) without waiting for the restart. Returns whether the skewed server came up."""
        old = slot.proc
        assert old is not None
        up = False
        try:
            slot.skew = skew
            signal_tree(old.pid, signal.SIGKILL)
            with anyio.move_on_after(TARGET_WAIT_S):
                await wait_until(lambda: slot.proc is not old and self.supervisor.ready(slot), 0.05)
                up = True
                await anyio.sleep(hold)
        finally:
            slot.skew = ""
        if slot.proc is not old and slot.alive():
            assert slot.proc is not None
            slot.proc.send_signal(signal.SIGTERM)
        return up

    async def _pause(self, send: Callable[[int], object], hold: float) -> None:
        send(signal.SIGSTOP)
        try:
            await anyio.sleep(hold)
        finally:
            send(signal.SIGCONT)  # also on cancellation: never leave a process stopped

    async def heal(self) -> None:
        """Everything running again: every worker tree and Redis continued, Redis up."""
        for slot in self.supervisor.slots:
            if slot.alive():
                assert slot.proc is not None
                signal_tree(slot.proc.pid, signal.SIGCONT)
        if self.redis.proc is None:
            await anyio.to_thread.run_sync(self.redis.start)
        else:
            self.redis.proc.send_signal(signal.SIGCONT)
