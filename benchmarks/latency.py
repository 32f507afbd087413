"""End-to-end latency: a producer on a fixed schedule, a blocking reader process, same run.

Three readers against the same producer schedule: the raw floor (``XADD`` ->
``XREADGROUP BLOCK`` + ``XACK``), the library reading with ``read_messages(100, block_ms)`` and
acking each batch with ``ack_many``, and (at 1,000/s) the library acking each batch and reading
the next in one call, ``ack_and_read(ids, 100, block_ms)`` (the library form of the MCP tool's
``ack(read_next=...)``; issue 17's figure). Latency = delivery time - send time, both
``time.time_ns`` on one machine.

The bound beside issue 17's figure: a task's path runs two Redis commands of ours where the floor
runs two bare ones (the enqueue script for ``XADD``, the read script behind the wake for
``XREADGROUP``); Redis runs them in line, so no client can deliver sooner than the floor plus
what those scripts cost Redis beyond the bare commands. Measured in the same run, one call at a
time (``INFO commandstats`` usec and ``INFO cpu``).
"""

from __future__ import annotations

import json
import statistics
import time

import anyio

from benchmarks import floor, library
from benchmarks.common import Report, Target, log, make_figure, payload, percentile
from benchmarks.procs import WorkerProc
from benchmarks.redis_cost import Cost, Meter
from benchmarks.sections import STREAM, Bench, Plan
from mcp_queue_server.testing import RedisProc

RATES = (100, 1000)
#: impl -> what its figure says it is (``raw`` is the floor).
READERS = {"lib": "", "next": ", ack(read_next)"}
BOUND_CALLS = 1000


async def _latency_run(b: Bench, impl: str, rate: int, seconds: float) -> tuple[list[float], float]:
    """Offer ``rate``/s for ``seconds`` to a blocking reader process; latencies (ms), achieved rate."""
    n = max(int(rate * seconds), 50)
    b.fresh()
    if impl == "raw":
        await b.r.xgroup_create(STREAM, floor.GROUP, id="0", mkstream=True)
    reader = WorkerProc(
        "latency-reader", impl=impl, url=b.server.url, prefix=b.settings.key_prefix, stream=STREAM, n=n, block_ms=1000
    )
    try:
        await reader.expect()
        offered = await _offer(b, impl, rate, n)
        got = await reader.expect(60 + seconds * 2)
    finally:
        reader.close()
    return [ns / 1e6 for ns in got["latencies_ns"]], offered


async def _offer(b: Bench, impl: str, rate: int, n: int) -> float:
    """Send ``n`` tasks on a fixed schedule (open loop: a late send does not shift the next);
    returns the rate actually offered."""
    pad = payload()["text"]
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await anyio.sleep(delay)
        body = {"t": time.time_ns(), "text": pad}
        if impl == "raw":
            await b.r.xadd(STREAM, {"type": "noop", "payload": json.dumps(body, separators=(",", ":"))})
        else:
            await b.q.enqueue("noop", body, queue=library.QUEUE)
    return n / (time.perf_counter() - start)


async def _path_cost(b: Bench) -> dict[str, float]:
    """Redis's cost of one task's path, ours beside the floor's, one call at a time: the
    enqueue script and a read of one task (the script a wake runs) against XADD and
    XREADGROUP COUNT 1 (commandstats usec and INFO cpu, us per task)."""
    pad = payload()["text"]
    fields = {"type": "noop", "payload": json.dumps({"t": 0, "text": pad}, separators=(",", ":"))}
    costs: dict[str, Cost] = {}
    b.fresh()
    await b.r.xgroup_create(STREAM, floor.GROUP, id="0", mkstream=True)
    async with Meter(b.r, BOUND_CALLS) as costs["xadd"]:
        for _ in range(BOUND_CALLS):
            await b.r.xadd(STREAM, fields)
    async with Meter(b.r, BOUND_CALLS) as costs["xreadgroup"]:
        for _ in range(BOUND_CALLS):
            await b.r.xreadgroup(floor.GROUP, "c", {STREAM: ">"}, count=1)
    async with Meter(b.r, BOUND_CALLS) as costs["enqueue"]:
        for _ in range(BOUND_CALLS):
            await b.q.enqueue("noop", {"t": 0, "text": pad}, queue=library.QUEUE)
    async with Meter(b.r, BOUND_CALLS) as costs["read"]:
        for _ in range(BOUND_CALLS):
            await b.q.read_messages(1, queue=library.QUEUE)
    b.fresh()
    out = {f"{name}_us": round(cost.per_task(), 1) for name, cost in costs.items()}
    out |= {f"{name}_cpu_us": round(cost.cpu_per_task(), 1) for name, cost in costs.items()}
    return out


async def latency(report: Report, server: RedisProc, plan: Plan) -> None:
    log(f"end-to-end latency: {plan.latency_s} s at each offered rate, blocking reader process")
    async with Bench(server) as b:
        await b.q.enqueue("noop", {"t": 0}, queue=library.QUEUE)  # scripts loaded
        path: list[dict[str, float]] = []
        for rate in RATES:
            impls = ["raw", "lib", "next"] if rate == 1000 else ["raw", "lib"]
            lat: dict[str, list[list[float]]] = {impl: [] for impl in impls}
            offered: list[float] = []
            for rep in range(plan.reps):
                for impl in impls[rep % len(impls) :] + impls[: rep % len(impls)]:  # each goes first in turn
                    got, achieved = await _latency_run(b, impl, rate, plan.latency_s)
                    lat[impl].append(got)
                    if impl == "lib":
                        offered.append(achieved)
                if rate == 1000:
                    path.append(await _path_cost(b))
            for impl in impls[1:]:
                for q, name in ((0.5, "p50"), (0.99, "p99")):
                    ours = [percentile(s, q) for s in lat[impl]]
                    raw = [percentile(s, q) for s in lat["raw"]]
                    target = None
                    extra: dict[str, object] = {}
                    if rate == 1000 and impl == "lib":
                        bound = 1.0 if q == 0.5 else 5.0
                        target = Target(value=bound, text=f"{name} <= {bound:g} ms")
                    if rate == 1000 and impl == "next" and q == 0.5:
                        target = Target(ratio=1.2, text="<= 1.2 x floor (issue 17)")
                        extra = _bound(statistics.median(raw), path)
                    report.add(
                        make_figure(
                            f"library: end-to-end latency {name} at {rate}/s offered{READERS[impl]}",
                            "ms",
                            ours,
                            f"XADD -> XREADGROUP BLOCK {name}",
                            raw,
                            better="lower",
                            target=target,
                            samples_per_rep=len(lat[impl][0]),
                            offered_per_s=round(statistics.median(offered), 1),
                            **extra,
                        )
                    )
        b.fresh()


def _bound(floor_ms: float, path: list[dict[str, float]]) -> dict[str, object]:
    """The least latency our path allows: the floor plus what our two scripts cost Redis
    beyond the two bare commands (commandstats: time inside the commands)."""
    cost = {k: round(statistics.median(p[k] for p in path), 1) for k in path[0]}
    extra_us = cost["enqueue_us"] - cost["xadd_us"] + cost["read_us"] - cost["xreadgroup_us"]
    bound_ms = floor_ms + extra_us / 1000
    log(f"    bound: the scripts on a task's path cost Redis {extra_us:.0f} us more than XADD + XREADGROUP: "
        f"no reader gets under {bound_ms:.3f} ms ({bound_ms / floor_ms:.2f} x the floor)")  # fmt: skip
    return {
        "path_redis_us": cost,
        "scripts_extra_us": round(extra_us, 1),
        "bound_ms": round(bound_ms, 3),
        "bound_ratio": round(bound_ms / floor_ms, 3),
    }
