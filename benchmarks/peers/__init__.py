"""Peer libraries on the same workloads, in the same run: BullMQ, saq, streaq, taskiq-redis.

Each peer lives in its own venv under ``benchmarks/.peers/<name>`` (created on first use
with pip from PyPI, pinned) and is driven by ``drivers/<name>_driver.py`` in a child
process, so no peer dependency touches the project's venv. Our library runs the same
workloads against the same redis-server between the peers' repetitions.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import venv
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
from redis.asyncio import Redis

from benchmarks import library
from benchmarks.common import Report, Target, bench_settings, log, make_figure
from benchmarks.memory import settled
from mcp_queue_server import TaskQueue
from mcp_queue_server.store.binaries import find_redis_server
from mcp_queue_server.testing import RedisProc

HERE = Path(__file__).resolve().parent
WORKER_CONCURRENCIES = (50, 100)
VENVS = HERE.parent / ".peers"
WORKLOADS = ("enqueue_one", "enqueue_batch", "process", "drain")
LABELS = {
    "enqueue_one": "enqueue one at a time",
    "enqueue_batch": "batch enqueue, 100 per call",
    # Like with like: our Worker runtime against their worker runtimes (a handler per job) ...
    "process": "process no-op, worker runtime, 1 process",
    # ... and our library drain against their lowest-level consume API, where they have one.
    "drain": "process no-op, lowest-level consume API, 1 process",
}
#: What runs on our side of each workload.
OURS = {
    "enqueue_one": "TaskQueue.enqueue",
    "enqueue_batch": "TaskQueue.enqueue_batch (100)",
    "process": f"Worker, no-op handler, best of concurrency {'/'.join(map(str, WORKER_CONCURRENCIES))}",
    "drain": "read_messages(100) + ack_many",
}


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    needs_redis7: bool = False

    @property
    def venv(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def driver(self) -> Path:
        return HERE / "drivers" / f"{self.name}_driver.py"


# Versions pinned to those in shared/research/peers.md; hiredis where the peer uses redis-py.
PEERS = {
    "bullmq": Peer("bullmq", ("bullmq==3.4.4", "hiredis")),
    "saq": Peer("saq", ("saq[hiredis]==0.26.4", "typing_extensions")),  # saq 0.26.4 imports it undeclared
    "streaq": Peer("streaq", ("streaq==7.2.0",), needs_redis7=True),  # Redis FUNCTION (7.0+)
    "taskiq": Peer("taskiq", ("taskiq-redis==1.2.4", "taskiq==0.13.0", "hiredis")),
}


def install(peer: Peer) -> None:
    """Create the peer's venv and pip-install its pinned requirements (once)."""
    marker = peer.venv / ".installed"
    wanted = "\n".join(peer.requirements)
    if marker.exists() and marker.read_text() == wanted:
        return
    log(f"installing {peer.name} into {peer.venv}")
    venv.EnvBuilder(with_pip=True, clear=True).create(peer.venv)
    subprocess.run(
        [str(peer.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *peer.requirements],
        check=True,
    )
    marker.write_text(wanted)


def drive(peer: Peer, workload: str, url: str, n: int) -> tuple[float | None, str]:
    """Run one workload in the peer's venv; tasks/s (None when the peer has no such API, with
    the driver's reason)."""
    out = subprocess.run(
        [str(peer.python), str(peer.driver), workload, "--url", url, "--n", str(n)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rate = result.get("rate")
    return (None if rate is None else float(rate)), str(result.get("unsupported", ""))


async def ours(workload: str, url: str, n: int) -> float:
    """The same workload on our library (fresh connection, as a driver process has)."""
    async with TaskQueue(bench_settings(url), consumer="main") as q:
        await library.enqueue_one(q, 50)  # warm-up, as the drivers do
        if workload == "enqueue_one":
            rate = await library.enqueue_one(q, n)
        elif workload == "enqueue_batch":
            rate = await library.enqueue_batches(q, n)
        elif workload == "drain":
            await library.drain_batched(q)
            await library.prefill(q, n)
            rate = await library.drain_rate(q, batch=100)
        else:
            from benchmarks.runtime import worker_rate

            rate = 0.0
            for concurrency in WORKER_CONCURRENCIES:  # the best setting, as each peer's driver uses its best
                await library.prefill(q, 200)
                await worker_rate(q, 200, concurrency)  # warm-up
                await library.prefill(q, n)
                rate = max(rate, await worker_rate(q, n, concurrency))
        await q.disconnect(release=False)
    return rate


AHEAD = Target(ratio=1.0, text="ahead of the peer")
#: Issue 17: what users run (our Worker) against each peer's worker runtime, same run.
TARGETS = {"process": Target(ratio=3.0, text=">= 3 x the peer's worker (issue 17)")}
SIZES = {"enqueue_one": 5_000, "enqueue_batch": 20_000, "process": 10_000, "drain": 10_000}
#: issue 17: Redis memory per waiting task, 200,000 queued ~200-byte payloads, against BullMQ's per job.
MEMORY_TASKS = 200_000
MEMORY_PEERS = ("bullmq",)


def fill(peer: Peer, url: str, n: int) -> None:
    """``n`` waiting jobs added by the peer's driver (batches of 100, untimed); it exits before
    the memory is read, so its connection's buffers are gone."""
    subprocess.run(
        [str(peer.python), str(peer.driver), "fill", "--url", url, "--n", str(n)],
        check=True,
        capture_output=True,
        timeout=900,
    )


async def waiting_memory(server: RedisProc, add: Callable[[int], Awaitable[object]], n: int) -> float:
    """``used_memory`` per waiting task: settled after ``n`` added, less settled after one added
    the same way (the queue's own keys made, its scripts loaded), over ``n``. Measured here, by
    the same code, for us and for the peer."""
    server.flush()
    async with Redis.from_url(server.url) as r:
        await add(1)
        before = await settled(r)
        await add(n)
        after = await settled(r)
    server.flush()
    return (after["used_memory"] - before["used_memory"]) / n


async def ours_fill(url: str, n: int) -> None:
    """``n`` queued tasks, batches of 100, on the default key prefix (as a user's would be)."""
    async with TaskQueue(bench_settings(url, prefix="mcpq"), consumer="main") as q:
        await library.prefill(q, n)
        await q.disconnect(release=False)


async def memory(report: Report, server: RedisProc, peers: list[Peer], *, reps: int, n: int) -> None:
    """Redis memory per waiting task, ours and each peer's (alternating), on the same server."""
    peers = [p for p in peers if p.name in MEMORY_PEERS]
    if not peers:
        return
    log(f"peers: memory per waiting task, {n:,} queued ~200-byte payloads")
    mine: list[float] = []
    theirs: dict[str, list[float]] = {p.name: [] for p in peers}
    for _ in range(reps):
        mine.append(await waiting_memory(server, lambda k: ours_fill(server.url, k), n))
        for peer in peers:

            async def add(k: int, peer: Peer = peer) -> None:
                await anyio.to_thread.run_sync(fill, peer, server.url, k)

            theirs[peer.name].append(await waiting_memory(server, add, n))
    for peer in peers:
        report.add(
            make_figure(
                f"vs {peer.name}: memory per waiting task ({n:,} queued ~200-byte payloads)",
                "bytes/task",
                mine,
                f"{peer.name} per waiting job (same run)",
                theirs[peer.name],
                better="lower",
                target=Target(ratio=1.0, text=f"issue 17: <= 1.0 x {peer.name}'s"),
                tasks=n,
                measure="used_memory delta (settled) over N, after one task made the queue's keys",
                ours="TaskQueue.enqueue_batch (100), key prefix mcpq",
                peer_api="Queue.addBulk (100)",
            )
        )


async def compare(
    report: Report,
    binary: str | None,
    *,
    reps: int,
    names: list[str] | None = None,
    scale: float = 1.0,
    memory_tasks: int | None = None,
    workloads: list[str] | None = None,
) -> None:
    """Install the peers (once), then measure every peer and our library in alternation."""
    peers = [PEERS[name] for name in names or PEERS]
    for peer in peers:
        await anyio.to_thread.run_sync(install, peer)
    with RedisProc(binary=find_redis_server(binary)) as server:
        major = int(server.version().split(".")[0])
        log(f"peers on redis-server {server.version()}: {', '.join(p.name for p in peers)}")
        for workload in [w for w in WORKLOADS if w in (workloads or WORKLOADS)]:
            n = max(int(SIZES[workload] * scale), 200)
            mine: list[float] = []
            theirs: dict[str, list[float | None]] = {p.name: [] for p in peers}
            unsupported: dict[str, str] = {}
            for _ in range(reps):
                server.flush()
                mine.append(await ours(workload, server.url, n))
                for peer in peers:
                    if peer.needs_redis7 and major < 7:
                        theirs[peer.name].append(None)
                        continue
                    server.flush()
                    rate, why = await anyio.to_thread.run_sync(drive, peer, workload, server.url, n)
                    theirs[peer.name].append(rate)
                    if why:
                        unsupported[peer.name] = why
            server.flush()
            for peer in peers:
                rates = [r for r in theirs[peer.name] if r is not None]
                if not rates:
                    why = f": {unsupported[peer.name]}" if peer.name in unsupported else ""
                    log(f"  {peer.name}: no {LABELS[workload]} (not supported{why})")
                    report.meta.setdefault("peers_unsupported", {})[f"{peer.name}: {workload}"] = (
                        unsupported.get(peer.name) or "not supported"
                    )
                    continue
                report.add(
                    make_figure(
                        f"vs {peer.name}: {LABELS[workload]}",
                        "tasks/s",
                        mine,
                        f"{peer.name} (same run)",
                        rates,
                        target=TARGETS.get(workload, AHEAD),
                        tasks_per_rep=n,
                        peer_median=round(statistics.median(rates), 1),
                        ours=OURS[workload],
                    )
                )
        if "memory" in (workloads or ["memory"]):
            n = memory_tasks if memory_tasks is not None else max(int(MEMORY_TASKS * scale), 1_000)
            await memory(report, server, peers, reps=reps, n=n)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    p.add_argument("--only", nargs="+", choices=sorted(PEERS), help="peers to run (default: all)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the task counts")
    p.add_argument("--workloads", nargs="+", choices=[*WORKLOADS, "memory"], help="workloads to run (default: all)")
    p.add_argument("--install-only", action="store_true")
    p.add_argument("--redis-server", metavar="PATH")
    p.add_argument("--json", type=Path, metavar="PATH")
    args = p.parse_args(argv)
    if args.install_only:
        for name in args.only or PEERS:
            install(PEERS[name])
        return
    report = Report()
    try:
        anyio.run(
            lambda: compare(
                report, args.redis_server, reps=args.reps, names=args.only, scale=args.scale, workloads=args.workloads
            )
        )
    finally:
        log("\n" + report.table())
        if args.json:
            report.write_json(args.json)
    sys.exit(0)
