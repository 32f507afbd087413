"""What limits cost: the same library workloads with unkeyed tasks, keyed tasks under a limit they
never reach, and keyed tasks under a limit that holds most of them back (issue 18).

``python -m benchmarks.limits [--n 20000] [--reps 3]``: one private redis-server (no persistence),
the variants alternating within each repetition so load drift hits them alike; medians printed
as a table and, with ``--json PATH``, written out.

- enqueue: ``enqueue_batch`` of 100 per call;
- drain: read 100 + one ``ack_many`` until empty (one consumer);
- held: 4 keys with ``max_working`` 25 each, drained the same way (every read holds back tasks of
  keys at their limit and serves their lines as the acks free slots).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from benchmarks.common import bench_settings, payload
from mcp_queue_server import NewTask, TaskQueue
from mcp_queue_server.testing import RedisProc

QUEUE = "bench"
BATCH = 100
UNLIMITED = 1_000_000
HELD_KEYS = 4
HELD_MAX_WORKING = 25


def tasks(n: int, variant: str) -> list[NewTask]:
    def key(i: int) -> str | None:
        if variant == "unkeyed":
            return None
        return "k" if variant == "keyed" else f"k{i % HELD_KEYS}"

    return [NewTask("noop", payload(i), limit_key=key(i)) for i in range(n)]


async def run_variant(url: str, n: int, variant: str) -> tuple[float, float]:
    """(enqueue tasks/s, drain tasks/s) of one variant on a fresh key prefix."""
    q = await TaskQueue(bench_settings(url, f"lim{uuid.uuid4().hex[:8]}"), consumer="bench").connect()
    try:
        if variant == "keyed":
            await q.set_limit("k", max_working=UNLIMITED, queue=QUEUE)
        elif variant == "held":
            for i in range(HELD_KEYS):
                await q.set_limit(f"k{i}", max_working=HELD_MAX_WORKING, queue=QUEUE)
        all_tasks = tasks(n, variant)
        t0 = time.perf_counter()
        for start in range(0, n, BATCH):
            await q.enqueue_batch(all_tasks[start : start + BATCH], queue=QUEUE)
        enq = n / (time.perf_counter() - t0)
        done = 0
        t0 = time.perf_counter()
        while got := await q.read_messages(BATCH, queue=QUEUE):
            done += len(await q.ack_many([t.task_id for t in got], queue=QUEUE))
        drain = done / (time.perf_counter() - t0)
        assert done == n, (variant, done)
        return enq, drain
    finally:
        await q.disconnect(release=False)


async def main(n: int, reps: int) -> dict[str, dict[str, float]]:
    redis = RedisProc().start()
    variants = ["unkeyed", "keyed", "held"]
    got: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    try:
        for rep in range(reps):
            order = variants[rep % 3 :] + variants[: rep % 3]
            for v in order:
                got[v].append(await run_variant(redis.url, n, v))
                redis.flush()
    finally:
        redis.stop()
    rows = {
        v: {
            "enqueue_batch_per_s": statistics.median(e for e, _ in runs),
            "drain_read100_ack_many_per_s": statistics.median(d for _, d in runs),
        }
        for v, runs in got.items()
    }
    print(f"{'variant':10} {'enqueue (100/call)':>20} {'drain (read 100 + ack_many)':>30}   n={n}, medians of {reps}")
    for v, r in rows.items():
        print(f"{v:10} {r['enqueue_batch_per_s']:>18,.0f}/s {r['drain_read100_ack_many_per_s']:>28,.0f}/s")
    return rows


def cli() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.limits", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000, help="tasks per variant and repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", type=Path, metavar="PATH")
    a = p.parse_args()
    runner: Callable[[], Awaitable[dict[str, dict[str, float]]]] = lambda: main(a.n, a.reps)  # noqa: E731
    rows = anyio.run(runner)
    if a.json is not None:
        a.json.write_text(json.dumps({"n": a.n, "reps": a.reps, "figures": rows}, indent=1))


if __name__ == "__main__":
    cli()
