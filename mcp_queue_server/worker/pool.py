"""A supervised pool of worker processes (the design doc's Phase 2.2): restart, health, autoscaling.

Each worker is a separate ``mcp-queue-server worker MODULE:FUNCTION`` process (a crash or a
handler that blocks its event loop takes down one process, not the pool). The pool

* restarts a worker that exits unexpectedly, with a backoff when it keeps dying young;
* health-checks each worker by its heartbeat file (written every ``heartbeat_interval_s``
  by the worker's event loop): one silent for ``health_timeout_s`` is killed and restarted;
* optionally scales between ``min_workers`` and ``max_workers`` by queue depth and the age
  of the oldest waiting task (:class:`ScalePolicy`, :class:`Autoscaler`);
* on :meth:`WorkerPool.stop` (SIGTERM/SIGINT in :meth:`WorkerPool.serve`) sends each worker
  one SIGTERM (finish within the grace period, then hand back) and SIGKILLs stragglers.

Workers run in their own sessions, so a Ctrl-C in the terminal reaches only the pool, which
forwards exactly one SIGTERM; a worker whose pool died (its parent pid changed) stops by itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from mcp_queue_server.core.keys import DEFAULT_QUEUE
from mcp_queue_server.core.models import QueueStats
from mcp_queue_server.errors import InvalidInput, QueueError
from mcp_queue_server.settings import Settings
from mcp_queue_server.store.open import open_queue
from mcp_queue_server.worker.runtime import Worker

logger = logging.getLogger(__name__)

_MIN_BACKOFF_S, _MAX_BACKOFF_S = 0.5, 30.0
_STABLE_AFTER_S = 30.0  # a worker that lived this long restarts without backoff


@dataclass(frozen=True)
class ScalePolicy:
    """When to add and remove worker processes."""

    min_workers: int = 1
    max_workers: int = 1
    tasks_per_worker: int = 10  #: waiting tasks that justify one more worker
    max_wait_ms: int | None = 30_000  #: a task waiting longer than this adds a worker (None: ignore age)
    scale_down_after_s: float = 60.0  #: fewer workers must suffice this long before one is removed
    interval_s: float = 5.0  #: how often the queue is looked at

    def __post_init__(self) -> None:
        if not 1 <= self.min_workers <= self.max_workers:
            raise InvalidInput("worker counts must satisfy 1 <= min_workers <= max_workers")
        if self.tasks_per_worker < 1:
            raise InvalidInput("tasks_per_worker must be at least 1")


class Autoscaler:
    """Decides the worker count from queue statistics: up at once, down one at a time.

    Wanted = enough workers for the backlog (``available / tasks_per_worker``, at least one
    per ``concurrency`` tasks in flight so busy workers are not retired), plus one more while
    the oldest waiting task is older than ``max_wait_ms``; clamped to the policy's bounds.
    Fewer workers are applied only after they sufficed for ``scale_down_after_s``.
    """

    def __init__(self, policy: ScalePolicy, concurrency: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.concurrency = concurrency
        self._clock = clock
        self._below_since: float | None = None

    def wanted(self, current: int, stats: QueueStats) -> int:
        p = self.policy
        want = max(math.ceil(stats.available / p.tasks_per_worker), math.ceil(stats.in_flight / self.concurrency))
        age = stats.oldest_waiting_age_ms
        if p.max_wait_ms is not None and age is not None and age > p.max_wait_ms:
            want = max(want, current + 1)
        return min(max(want, p.min_workers), p.max_workers)

    def decide(self, current: int, stats: QueueStats) -> int:
        want = self.wanted(current, stats)
        if want >= current:
            self._below_since = None
            return want
        now = self._clock()
        if self._below_since is None:
            self._below_since = now
        if now - self._below_since >= self.policy.scale_down_after_s:
            self._below_since = now  # the next step down waits a full period again
            return current - 1
        return current


@dataclass
class WorkerProcess:
    """One slot of the pool and the process currently running in it."""

    slot: int
    heartbeat: Path
    process: Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    retiring: bool = False
    last_beat: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    @property
    def ready(self) -> bool:
        """The current process has sent a heartbeat."""
        return self.pid is not None and self.last_beat.get("pid") == self.pid


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as ``MCP_QUEUE_*`` variables for a child process (consumer left out: each
    worker makes its own). Secrets go through the environment, never the command line."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name == "consumer" or value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"MCP_QUEUE_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return env


class WorkerPool:
    """Supervises worker processes running ``handler`` (``module:function`` or ``module:HANDLERS``)."""

    def __init__(
        self,
        handler: str,
        settings: Settings,
        *,
        size: int | ScalePolicy = 1,
        queue_name: str = DEFAULT_QUEUE,
        concurrency: int = 1,
        grace_period_s: float = 30.0,
        heartbeat_interval_s: float = 2.0,
        health_timeout_s: float = 30.0,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.policy = size if isinstance(size, ScalePolicy) else ScalePolicy(size, size)
        self.autoscaling = self.policy.min_workers != self.policy.max_workers
        self.queue_name = queue_name
        self.concurrency = concurrency
        self.grace_period_s = grace_period_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.health_timeout_s = health_timeout_s
        self.extra_args = list(extra_args)
        base = dict(os.environ if env is None else env)
        self._env = {k: v for k, v in base.items() if not k.startswith("MCP_QUEUE_")} | settings_env(settings)
        self.workers: list[WorkerProcess] = []
        self.target = self.policy.min_workers
        self._dir = Path(tempfile.mkdtemp(prefix="mcpq-pool-"))
        self._slots = 0
        self._stopping = False
        self.stopped_by: signal.Signals | None = None  #: the first signal :meth:`serve` received
        self._stop_requested = anyio.Event()
        self._changed = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    # -- observing -----------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, predicate: Callable[[WorkerPool], bool]) -> None:
        """Wait until ``predicate(pool)`` holds (checked after every change; bound it yourself)."""
        while not predicate(self):
            await self._changed.wait()

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if not w.retiring]

    # -- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every worker gracefully (one SIGTERM each) and end :meth:`run`."""
        self._stopping = True
        self._stop_requested.set()

    async def serve(self) -> None:
        """:meth:`run` until SIGTERM or SIGINT."""
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        self.stopped_by = self.stopped_by or signal.Signals(signum)
                        logger.info("pool: %s: stopping %d worker(s)", signal.Signals(signum).name, len(self.live()))
                        self.stop()

            tg.start_soon(on_signal)
            await self.run()
            tg.cancel_scope.cancel()

    async def run(self) -> None:
        """Start the workers and supervise them until :meth:`stop`."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._health_loop)
                if self.autoscaling:
                    tg.start_soon(self._scale_loop)
                self._resize(self.target)
                await self._stop_requested.wait()
                with anyio.CancelScope(shield=True):
                    await self._stop_all()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for w in self.workers:
                    if w.process is not None and w.process.returncode is None:
                        w.process.kill()
                        await w.process.wait()
            for path in self._dir.glob("*"):
                path.unlink(missing_ok=True)
            self._dir.rmdir()

    def _resize(self, target: int) -> None:
        live = self.live()
        self.target = target
        for _ in range(target - len(live)):
            assert self._tg is not None
            self._slots += 1
            w = WorkerProcess(self._slots, self._dir / f"worker-{self._slots}.json")
            self.workers.append(w)
            self._tg.start_soon(self._supervise, w)
        for w in sorted(live, key=lambda w: -w.slot)[: max(len(live) - target, 0)]:
            logger.info("pool: scaling down: stopping worker %d (pid %s)", w.slot, w.pid)
            w.retiring = True
            if w.process is not None and w.process.returncode is None:
                w.process.terminate()
        self._notify()

    def _command(self, w: WorkerProcess) -> list[str]:
        return [
            sys.executable, "-m", "mcp_queue_server", "worker", self.handler,
            "--queue", self.queue_name,
            "--concurrency", str(self.concurrency),
            "--grace-period", str(self.grace_period_s),
            "--heartbeat-file", str(w.heartbeat),
            "--heartbeat-interval", str(self.heartbeat_interval_s),
            "--parent-pid", str(os.getpid()),
            *self.extra_args,
        ]  # fmt: skip

    async def _supervise(self, w: WorkerProcess) -> None:
        backoff = _MIN_BACKOFF_S
        while not (w.retiring or self._stopping):
            w.heartbeat.unlink(missing_ok=True)
            w.process = await anyio.open_process(
                self._command(w), env=self._env, stdin=None, stdout=None, stderr=None, start_new_session=True
            )
            w.started_at = anyio.current_time()
            logger.info("pool: worker %d started (pid %d)", w.slot, w.process.pid)
            self._notify()
            code = await w.process.wait()
            self._notify()
            if w.retiring or self._stopping:
                break
            # A worker that keeps dying young is restarted ever more slowly (a crash loop must
            # not spin); one that ran for a while is restarted at once.
            young = anyio.current_time() - w.started_at < _STABLE_AFTER_S
            delay, backoff = (backoff, min(backoff * 2, _MAX_BACKOFF_S)) if young else (0.0, _MIN_BACKOFF_S)
            logger.warning(
                "pool: worker %d (pid %d) exited with %s; restarting in %.1f s", w.slot, w.process.pid, code, delay
            )
            w.restarts += 1
            await anyio.sleep(delay)
        if w in self.workers and w.retiring:
            self.workers.remove(w)
            self._notify()

    async def _health_loop(self) -> None:
        while True:
            await anyio.sleep(min(self.heartbeat_interval_s, self.health_timeout_s / 3))
            now = anyio.current_time()
            for w in self.workers:
                if w.process is None or w.process.returncode is not None:
                    continue
                beat = _read_beat(w.heartbeat)
                if beat is not None and beat != w.last_beat:
                    w.last_beat = beat
                    self._notify()
                beat_age = time.time() - float(w.last_beat.get("time", 0)) if w.ready else now - w.started_at
                if beat_age > self.health_timeout_s and not w.retiring:
                    logger.warning(
                        "pool: worker %d (pid %d) silent for %.1f s: killing it", w.slot, w.process.pid, beat_age
                    )
                    w.process.kill()

    async def _scale_loop(self) -> None:
        scaler = Autoscaler(self.policy, self.concurrency)
        async with open_queue(self.settings) as queue:
            while True:
                try:
                    stats = await queue.get_queue_stats(self.queue_name)
                except QueueError as exc:
                    logger.warning("pool: cannot read queue statistics: %s", exc)
                else:
                    target = scaler.decide(len(self.live()), stats)
                    if target != len(self.live()):
                        logger.info(
                            "pool: %d waiting (oldest %s ms), %d in flight: %d -> %d worker(s)",
                            stats.available,
                            stats.oldest_waiting_age_ms,
                            stats.in_flight,
                            len(self.live()),
                            target,
                        )
                        self._resize(target)
                await anyio.sleep(self.policy.interval_s)

    async def _stop_all(self) -> None:
        running = [w for w in self.workers if w.process is not None and w.process.returncode is None]
        for w in running:
            assert w.process is not None
            w.process.terminate()
        with anyio.move_on_after(self.grace_period_s + 10):
            for w in running:
                assert w.process is not None
                await w.process.wait()
        for w in running:
            assert w.process is not None
            if w.process.returncode is None:
                logger.warning("pool: worker %d (pid %d) did not stop in time: killing it", w.slot, w.process.pid)
                w.process.kill()


def _read_beat(path: Path) -> dict[str, Any] | None:
    try:
        beat = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not written yet, or caught mid-replace
    return beat if isinstance(beat, dict) else None


async def write_heartbeats(worker: Worker, path: Path, interval_s: float, parent_pid: int | None = None) -> None:
    """Write ``worker``'s heartbeat to ``path`` every ``interval_s`` (atomically, by rename);
    stop the worker when the pool that started it (``parent_pid``) is gone."""
    tmp = path.with_suffix(".tmp")
    while True:
        if parent_pid is not None and os.getppid() != parent_pid:
            logger.warning("%s: the pool (pid %d) is gone: stopping", worker.name, parent_pid)
            worker.stop()
            return
        beat = {
            "pid": os.getpid(),
            "consumer": worker.name,
            "time": time.time(),
            "running": len(worker.running),
            "processed": worker.processed,
            "failed": worker.failed,
        }
        tmp.write_text(json.dumps(beat))
        tmp.replace(path)
        await anyio.sleep(interval_s)
