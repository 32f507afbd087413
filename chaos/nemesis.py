"""The nemesis: a seeded fault schedule and its injection into real processes.

The schedule (kinds, times, targets, hold times) comes from ``random.Random(seed)``
alone, so a seed names the same faults every time; what the processes happen to be
doing when a fault lands is up to the OS. One fault at a time, each logged with its
kind and time. Every selected kind appears at least once (the first round is a shuffled
list of all of them), then random kinds fill the rest of the window.

Targets: kill_worker, pause_worker and clock_skew (which restarts a worker's own MCP server
under libfaketime) aim at stdio workers; kill_http_agent (SIGKILL mid-task: no DELETE, its
tasks come back by lease expiry) and pause_http_agent (SIGSTOP past the lease) at HTTP
agents; crash_before_ack at either; restart_http SIGKILLs the HTTP agents' shared server
and starts it again (its sessions are gone: the agents exit and the supervisor starts new
ones, on new sessions).
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
from chaos.procs import HttpServer, Slot, Supervisor, signal_tree, wait_until
from mcp_queue_server.testing import RedisProc

KINDS = (
    "kill_worker",
    "pause_worker",
    "kill_redis",
    "pause_redis",
    "crash_before_ack",
    "clock_skew",
    "kill_http_agent",
    "pause_http_agent",
    "restart_http",
)
#: The kinds that need HTTP agents.
HTTP_KINDS = ("kill_http_agent", "pause_http_agent", "restart_http")
KILL, PAUSE = ("kill_worker", "kill_http_agent"), ("pause_worker", "pause_http_agent")
#: How long a slot may take to come (back) up before a fault aimed at it is skipped.
TARGET_WAIT_S = 20.0
#: How long a kill or pause waits for its target to be in the middle of a task.
MID_TASK_WAIT_S = 2.0
#: clock_skew: how long the skewed MCP server runs once up, and a budget for its start.
SKEW_HOLD_S, SKEW_START_S = 1.5, 2.5
#: restart_http: down time, and a budget for the shared HTTP server's start and its agents'
#: new sessions (an agent notices the loss after the SDK's reconnection attempts, ~2 s).
HTTP_DOWN_S, HTTP_START_S = 0.5, 5.0


@dataclass(frozen=True)
class Fault:
    at: float  #: seconds after the fault window opens
    kind: str
    target: int | None  #: worker slot, for worker faults
    hold: float  #: how long a pause or an outage lasts (s)


def hold_time(kind: str, cfg: Config) -> float:
    if kind in PAUSE:
        return cfg.lease_ms / 1000 + 1.5  # past the lease, and time for another worker to take over
    if kind == "pause_redis":
        return cfg.socket_timeout_s * 3  # past the client timeout: calls end with unknown outcomes
    if kind == "kill_redis":
        return 0.5  # down time before the restart on the same AOF
    if kind == "clock_skew":
        return SKEW_START_S + SKEW_HOLD_S  # a restart, then the skewed server reading for a lease's length
    if kind == "restart_http":
        return HTTP_DOWN_S + HTTP_START_S
    return 0.0


def _target(rng: random.Random, kind: str, cfg: Config) -> int | None:
    """A slot index (slots: stdio workers, then HTTP agents), or None for a Redis or server fault."""
    if kind in ("kill_worker", "pause_worker", "clock_skew"):
        return rng.randrange(cfg.workers)
    if kind in ("kill_http_agent", "pause_http_agent"):
        return cfg.workers + rng.randrange(cfg.http_workers)
    if kind == "crash_before_ack":
        return rng.randrange(cfg.workers + cfg.http_workers)
    return None


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
        faults.append(Fault(round(t, 3), kind, _target(rng, kind, cfg), hold))
        t += hold + rng.uniform(0.4, 1.2)


class Nemesis:
    def __init__(
        self, cfg: Config, supervisor: Supervisor, redis: RedisProc, http: HttpServer | None, log: Jsonl
    ) -> None:
        self.cfg, self.supervisor, self.redis, self.http, self.log = cfg, supervisor, redis, http, log
        self.injected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    async def run(self, faults: list[Fault]) -> None:
        start = time.monotonic()
        for fault in faults:
            await anyio.sleep(max(0.0, start + fault.at - time.monotonic()))
            await self.inject(fault)

    async def _target(self, index: int, kind: str) -> Slot | None:
        """The planned slot once its MCP session is up; if it is still restarting after a
        moment, the next ready slot of the same transport, so the schedule keeps its timing
        (bounded wait)."""
        slots = self.supervisor.slots
        if kind != "crash_before_ack":
            slots = [s for s in slots if s.http == slots[index].http]
            index = slots.index(self.supervisor.slots[index])
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
            slot = await self._target(fault.target, fault.kind)
            if slot is None or slot.proc is None:
                self.skipped[fault.kind] += 1
                self.log.write(op="skipped", target=fault.target, **record)
                return
            pid, name = slot.proc.pid, slot.name  # the incarnation struck (the slot may restart meanwhile)
            if fault.kind in KILL + PAUSE:
                # Strike mid-task when we can: a task leased, checkpointed and not yet acked.
                with anyio.move_on_after(MID_TASK_WAIT_S):
                    await wait_until(lambda: self.supervisor.working(slot), 0.005)
                record["mid_task"] = self.supervisor.working(slot)
            record.update(target=name, http=slot.http, t=self.cfg.since_start())
            if fault.kind in KILL:
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
        elif fault.kind == "restart_http":
            record.update(await self._restart_http())
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

    async def _restart_http(self) -> dict[str, object]:
        """SIGKILL the shared HTTP server, start it again on its port, then wait (bounded) until
        every HTTP agent is on a new session (a new incarnation, up): the next fault strikes those."""
        assert self.http is not None
        agents = [s for s in self.supervisor.slots if s.http]
        gens = {s.index: s.gen for s in agents}
        sessions = sum(1 for s in agents if self.supervisor.ready(s))
        self.http.kill()
        await anyio.sleep(HTTP_DOWN_S)
        await self.http.start(TARGET_WAIT_S)
        back = time.monotonic()
        with anyio.move_on_after(TARGET_WAIT_S):
            await wait_until(lambda: all(s.gen > gens[s.index] and self.supervisor.ready(s) for s in agents), 0.05)
        reconnected = sum(1 for s in agents if s.gen > gens[s.index] and self.supervisor.ready(s))
        return {"sessions_lost": sessions, "reconnected": reconnected, "reconnect_s": round(time.monotonic() - back, 2)}

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
        if self.http is not None and (self.http.proc is None or self.http.proc.returncode is not None):
            await self.http.start(TARGET_WAIT_S)
        else:
            self.redis.proc.send_signal(signal.SIGCONT)
