"""One command, bounded time: start Redis, workers and producers, inject faults, heal,
drain, stop everything and check. Exit status 0 when the checker finds the run valid.

    python -m chaos.run --seed 7 --duration 20 [--workers 3] [--http-workers 2] [--producers 2]
                        [--no-persistence] [--faults kill_redis,...] [--json report.json]
                        [--client-clock] [--skew-s 120] [--client-limits] [--split-sagas]
                        [--max-working 2] [--max-per-minute 12] [--rated-tasks 10] [--limited-work-ms 100]

Workers: ``--workers`` stdio agents (each its own ``mcp-queue-server`` subprocess) and
``--http-workers`` HTTP agents, each an MCP session on one shared
``mcp-queue-server --transport streamable-http`` (named tokens file, a worker principal).

``--client-clock`` is the clock_skew negative control: MCP servers run their scripts on
their own clock (as before issue 12), so the skewed one steals leases (with a negative
``--skew-s``, its own leases are born expired and others take them) and the checker
reports ``stolen_leases``.

Limits: "limited" tasks share a key with ``--max-working``, "rated" ones a key with
``--max-per-minute`` (each producer makes at most ``--rated-tasks`` of them). ``--client-limits``
is their negative control: MCP servers count each key's room before the read script (read, then
check) and the script trusts the count, so concurrent readers overshoot and the checker reports
``limit_working_exceeded``.

``--split-sagas`` is the sagas' negative control (chaos/sagas.py): a saga's step transition
takes two calls, a worker sometimes crashes between them, and the checker reports ``sagas_bad``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from pydantic import SecretStr

from chaos import nemesis, sagas
from chaos import schedules as chaos_schedules
from chaos.checker import check, group_by_kind, read_final_state
from chaos.common import FAULTS_RUNNING, QUEUE, Config, Jsonl, faketime_lib, read_jsonl
from chaos.procs import HttpServer, Supervisor, signal_group, spawn, sweep, wait_until, write_tokens_file
from chaos.producer import SETTLE_S
from mcp_queue_server import QueueUnavailable, Settings, TaskQueue
from mcp_queue_server.testing import RedisProc, free_port

STARTUP_S = 90.0  #: workers' MCP sessions up (a cold start costs ~0.5 s CPU each)
DRAIN_S = 60.0  #: from heal to an empty queue (plus half the fault window for long runs)
STOP_S = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--duration", type=float, default=20.0, help="fault window, seconds")
    p.add_argument("--workers", type=int, default=3, help="stdio workers")
    p.add_argument("--http-workers", type=int, default=2, help="HTTP agents on one shared Streamable HTTP server")
    p.add_argument("--producers", type=int, default=2)
    p.add_argument("--rate", type=float, default=10.0, help="operations per second per producer")
    p.add_argument("--no-persistence", action="store_true", help="Redis without AOF (negative control)")
    p.add_argument("--client-clock", action="store_true", help="servers on their own clock (negative control)")
    p.add_argument("--split-sagas", action="store_true", help="saga transitions in two calls (negative control)")
    p.add_argument("--skew-s", type=int, default=120, help="clock_skew: the skewed server's offset, seconds")
    p.add_argument("--client-limits", action="store_true", help="limits counted outside the script (negative control)")
    p.add_argument("--max-working", type=int, default=2, help="max_working of the limited tasks' key")
    p.add_argument("--max-per-minute", type=int, default=12, help="max_per_minute of the rated tasks' key")
    p.add_argument("--rated-tasks", type=int, default=10, help="rated tasks per producer, at most")
    p.add_argument("--limited-work-ms", type=int, default=100, help="a keyed task works half this to this (ms)")
    p.add_argument("--faults", default=",".join(nemesis.KINDS), help="comma-separated fault kinds")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--workdir", type=Path, help="keep logs here (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory even when valid")
    args = p.parse_args(argv)
    kinds = tuple(k for k in args.faults.split(",") if k)
    if not kinds or set(kinds) - set(nemesis.KINDS):
        p.error(f"--faults takes kinds from {', '.join(nemesis.KINDS)}")
    # clock_skew needs libfaketime (Debian's faketime); without it the fault is left out.
    args.unavailable = ["clock_skew"] if "clock_skew" in kinds and faketime_lib() is None else []
    if args.http_workers == 0:
        args.unavailable += [k for k in nemesis.HTTP_KINDS if k in kinds]  # no HTTP agents
    args.kinds = tuple(k for k in kinds if k not in args.unavailable)
    if not args.kinds:
        p.error("no selected fault kind is available (clock_skew needs libfaketime, the HTTP kinds HTTP agents)")
    return args


def drain_limit(duration: float) -> float:
    return DRAIN_S + duration / 2


async def drain(cfg: Config, q: TaskQueue) -> dict[str, Any]:
    """Wait until nothing is available, in flight, delayed or held back (twice in a row), workers running."""
    start, quiet, polls, requeued, backlog = time.monotonic(), 0, 0, 0, -1
    with anyio.move_on_after(drain_limit(cfg.duration)):
        while quiet < 2:
            polls += 1
            try:
                s = await q.get_queue_stats(QUEUE)
                held = sum(limit.waiting for limit in s.limits)  # tasks held back for a limit wait too
                backlog = s.available + s.delayed + s.in_flight + held if backlog < 0 else backlog
                quiet = quiet + 1 if s.available == s.in_flight == s.delayed == held == 0 else 0
                if polls % 12 == 0:  # reads reclaim expired leases; recover is the backstop
                    requeued += len((await q.recover(queue=QUEUE)).requeued)
            except QueueUnavailable:
                quiet = 0
            await anyio.sleep(0.25)  # polling a queue other processes drain; bounded by DRAIN_S
    return {
        "drained": quiet >= 2,
        "drain_s": round(time.monotonic() - start, 2),
        "backlog_at_drain_start": backlog,
        "recover_requeued": requeued,
    }


async def wait_ready(supervisor: Supervisor) -> None:
    with anyio.fail_after(STARTUP_S):
        await wait_until(lambda: all(supervisor.ready(s) for s in supervisor.slots), 0.1)


async def wait_started(cfg: Config) -> None:
    def started() -> bool:
        paths = [cfg.logs / f"producer-{i}.jsonl" for i in range(cfg.producers)]
        return all(p.exists() and p.stat().st_size > 0 for p in paths)

    with anyio.fail_after(STARTUP_S):
        await wait_until(started, 0.05)


async def wait_producers(procs: list[anyio.abc.Process], within: float) -> bool:
    with anyio.move_on_after(within):
        for proc in procs:
            await proc.wait()
        return True
    return False


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisProc(self.workdir / "redis", aof=not args.no_persistence)
        self.producers: list[anyio.abc.Process] = []
        self.supervisor: Supervisor | None = None
        self.http: HttpServer | None = None
        self.run_id = uuid.uuid4().hex[:16]
        self.http_port = free_port() if args.http_workers else 0

    def config(self, window: float) -> Config:
        a = self.args
        return Config(
            seed=a.seed, duration=a.duration, produce_for=window + 0.5, workers=a.workers,
            producers=a.producers, persistence=not a.no_persistence, workdir=str(self.workdir),
            redis_url=self.redis.url, run_id=self.run_id, t0=time.time(), rate=a.rate,
            skew_s=a.skew_s, client_clock=a.client_clock, http_workers=a.http_workers,
            http_port=self.http_port, tokens_file=str(self.workdir / "tokens.json") if a.http_workers else "",
            max_working=a.max_working, max_per_minute=a.max_per_minute, rated_tasks=a.rated_tasks,
            client_limits=a.client_limits, limited_work_ms=a.limited_work_ms,
            split_sagas=a.split_sagas,
        )  # fmt: skip

    async def main(self) -> dict[str, Any]:
        await anyio.to_thread.run_sync(self.redis.start)
        probe = self.config(self.args.duration)
        faults = nemesis.plan(probe, self.args.kinds, self.args.duration)
        window = max(self.args.duration, max(f.at + f.hold for f in faults) + 0.5)
        cfg = self.config(window)
        cfg.logs.mkdir(parents=True, exist_ok=True)
        path = cfg.save()
        if cfg.split_sagas:
            await sagas.split_on(cfg)
        fault_log = Jsonl(cfg.logs / "faults.jsonl")
        settings = Settings(
            redis_url=SecretStr(cfg.redis_url),
            key_prefix=cfg.key_prefix,
            socket_timeout_s=2.0,
            data_dir=self.workdir / "unused",
        )
        q = await TaskQueue(settings, consumer="chaos-checker").connect()
        await q.set_limit(cfg.working_key, max_working=cfg.max_working, queue=QUEUE)
        await q.set_limit(cfg.rate_key, max_per_minute=cfg.max_per_minute, queue=QUEUE)
        if cfg.http_workers:
            write_tokens_file(cfg)
            self.http = HttpServer(cfg)
            await self.http.start(STARTUP_S)
        try:
            async with anyio.create_task_group() as tg:
                self.supervisor = supervisor = Supervisor(cfg, path)
                await supervisor.run(tg)
                await wait_ready(supervisor)
                startup_s = round(time.time() - cfg.t0, 2)
                await chaos_schedules.create(q, cfg)  # fired by the workers' servers from now on
                # Producers run for the fault window from now (the workers' start-up is not in it).
                end = str(time.time() + cfg.produce_for)
                self.producers = [
                    await spawn(cfg, "chaos.producer", [str(path), str(i), end], f"producer-{i}")
                    for i in range(cfg.producers)
                ]
                # Faults start once producers are producing (a kill before any enqueue proves nothing).
                await wait_started(cfg)
                nem = nemesis.Nemesis(cfg, supervisor, self.redis, self.http, fault_log)
                started = time.monotonic()
                running = self.workdir / FAULTS_RUNNING
                running.touch()
                try:
                    await nem.run(faults)
                finally:
                    running.unlink(missing_ok=True)
                await nem.heal()
                fault_window = round(time.monotonic() - started, 2)
                producers_done = await wait_producers(self.producers, window + SETTLE_S + 15)
                drained = await drain(cfg, q)
                await supervisor.stop(STOP_S)
                if self.http is not None:
                    await self.http.stop(STOP_S)
            state = await read_final_state(q, [])
        finally:
            await q.disconnect(release=False)
        faults_logged = [r for r in read_jsonl(cfg.logs / "faults.jsonl") if r["op"] == "fault"]
        extra = {
            **drained,
            "producers_finished": producers_done,
            "seed": cfg.seed,
            "duration": cfg.duration,
            "startup_s": startup_s,
            "fault_window_s": fault_window,
            "persistence": cfg.persistence,
            "workers": cfg.workers,
            "http_workers": cfg.http_workers,
            "http_server_starts": self.http.starts if self.http else 0,
            "producers": cfg.producers,
            "faults": group_by_kind(faults_logged),
            "faults_total": len(faults_logged),
            "worker_faults_mid_task": sum(1 for r in faults_logged if r.get("mid_task")),
            "faults_skipped": dict(nem.skipped),
            "faults_unavailable": self.args.unavailable,
            "client_clock": cfg.client_clock,
            "client_limits": cfg.client_limits,
            "split_sagas": cfg.split_sagas,
            "skew_s": cfg.skew_s,
            "worker_restarts": supervisor.restarts,
            "workdir": str(self.workdir),
        }
        fault_log.close()
        return check(cfg, state, extra)

    def cleanup(self) -> None:
        """Kill every child (process groups first, then anything left with our run id)."""
        if self.supervisor is not None:
            self.supervisor.kill_all()
        if self.http is not None:
            self.http.kill()
        for proc in self.producers:
            if proc.returncode is None:
                signal_group(proc.pid, signal.SIGKILL)
        sweep(self.run_id)
        if self.redis.proc is not None:
            self.redis.proc.send_signal(signal.SIGCONT)
        self.redis.stop()


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    run = Run(args)
    # A hard deadline for the whole run, whatever hangs.
    deadline = 2 * args.duration + STARTUP_S + SETTLE_S + drain_limit(args.duration) + 60
    try:
        with anyio.fail_after(deadline):
            return await run.main()
    except Exception as exc:  # the top-level handler: a run that breaks is reported invalid
        traceback.print_exc()
        return {"valid": False, "error": f"{type(exc).__name__}: {exc!r}"[:2000], "workdir": str(run.workdir)}
    finally:
        run.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = anyio.run(amain, args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if report["valid"] and args.workdir is None and not args.keep:
        shutil.rmtree(report["workdir"], ignore_errors=True)
    return 0 if report["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
