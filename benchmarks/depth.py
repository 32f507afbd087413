"""Flat cost as queues grow (issue 17): the same work on a deep queue beside an empty one.

* Rates at depth: enqueue (one at a time, batches of 100) and processing (read 100 +
  ``ack_many``) on a queue holding ``waiting`` queued tasks, each beside the same work on an
  empty queue of the same server, alternating; target >= 0.8 x the empty queue. Each carries
  Redis's CPU per task (``INFO cpu``) and, per script, the commands it calls (commandstats), so
  a cost that grows with the depth shows where it is.
* Paging at size: ``inspect_dlq`` (newest and oldest first) and ``list_tasks`` (``queued``,
  ``failed``) walked page by page (100 per page, the tools' largest) over ``entries`` tasks,
  beside the same walk over 1,000; each page's Redis CPU (``INFO cpu`` around the call, less
  what the INFO calls themselves cost; CPU time, which a busy machine's preemption does not
  inflate as it does commandstats' ``usec``). Target: the slowest page <= 10 ms, and the median
  page flat in the size (large ÷ small <= 1.5).
* ``queue_stats`` with ``all_queues``: a walk of ``queue_stats_page`` (100 queues per page, one
  round trip of queue_stats.lua per page) over ``queues`` known queues, beside the same walk
  over a tenth of them; each page's Redis CPU as above. Target: the slowest page <= 10 ms, and
  the median page flat in the number of queues (large ÷ small <= 1.5).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from benchmarks import library
from benchmarks.common import Report, Target, log, make_figure, payload, percentile
from benchmarks.redis_cost import Cost, Meter
from benchmarks.sections import QUICK, Bench, Plan
from mcp_queue_server import NewTask, TaskQueue
from mcp_queue_server.limits import STATS_PAGE
from mcp_queue_server.testing import RedisProc

PAGE = 100  #: the tools' largest page (MAX_TOOL_PAGE)
PAGE_BUDGET_US = 10_000  #: issue 17: each page <= 10 ms of Redis CPU
FLAT = 1.5  #: "flat in the size": the median page at the large size <= this x at the small one
DEPTH_RATIO = 0.8  #: issue 17: rates at depth >= 0.8 x the empty queue


@dataclass(frozen=True)
class Sizes:
    waiting: int  #: tasks queued on the deep queue
    enqueue_one: int  #: per rep, on each queue
    enqueue_batch: int
    entries: int  #: paging: the large index (the small one is entries // 100)
    queues: int  #: queue_stats all_queues: the large registry (the small one is a tenth)


FULL_SIZES = Sizes(waiting=1_000_000, enqueue_one=3_000, enqueue_batch=20_000, entries=100_000, queues=10_000)
QUICK_SIZES = Sizes(waiting=20_000, enqueue_one=300, enqueue_batch=2_000, entries=5_000, queues=1_000)


async def depth(report: Report, server: RedisProc, plan: Plan) -> None:
    sizes = QUICK_SIZES if plan == QUICK else FULL_SIZES
    await rates(report, server, plan, sizes)
    await paging(report, server, sizes)
    await all_queues(report, server, plan, sizes)


# -- rates at depth ----------------------------------------------------------------------------


async def drain_n(q: TaskQueue, n: int, queue: str) -> int:
    """Read 100 + ``ack_many`` until ``n`` tasks are done (the queue may hold more)."""
    done = 0
    while done < n:
        tasks = await q.read_messages(min(100, n - done), queue=queue)
        if not tasks:
            break
        await q.ack_many([t.task_id for t in tasks], queue=queue)
        done += len(tasks)
    return done


Work = Callable[[], Awaitable[object]]


async def _timed(b: Bench, n: int, work: Work, into: list[tuple[float, Cost]]) -> None:
    async with Meter(b.r, n) as cost:
        t0 = time.perf_counter()
        await work()
        elapsed = time.perf_counter() - t0
    into.append((n / elapsed, cost))


async def rates(report: Report, server: RedisProc, plan: Plan, sizes: Sizes) -> None:
    d, n1, nb = sizes.waiting, sizes.enqueue_one, sizes.enqueue_batch
    log(f"depth: rates with {d:,} tasks waiting beside an empty queue ({n1} one at a time, {nb} batched, drained)")
    async with Bench(server) as b:
        b.fresh()
        q = b.q
        await library.enqueue_one(q, 100, queue="empty")
        await drain_n(q, 100, "empty")
        t0 = time.perf_counter()
        info0 = await b.r.info("memory")
        for start in range(0, d, 100_000):
            await library.enqueue_batches(q, min(100_000, d - start), queue="deep")
        fill_s = time.perf_counter() - t0
        info1 = await b.r.info("memory")
        log(f"    filled {d:,} in {fill_s:.1f} s ({d / fill_s:,.0f}/s)")
        runs: dict[str, dict[str, list[tuple[float, Cost]]]] = {
            name: {"one": [], "batch": [], "process": []} for name in ("empty", "deep")
        }

        async def rep(name: str) -> None:
            into = runs[name]
            await _timed(b, n1, lambda: library.enqueue_one(q, n1, queue=name), into["one"])
            await _timed(b, nb, lambda: library.enqueue_batches(q, nb, queue=name), into["batch"])
            # drains the oldest n1 + nb: the deep queue is back to its depth, the empty one empty
            await _timed(b, n1 + nb, lambda: drain_n(q, n1 + nb, name), into["process"])

        for i in range(plan.reps):
            for name in ("empty", "deep") if i % 2 == 0 else ("deep", "empty"):
                await rep(name)
        b.fresh()
    labels = {
        "one": "enqueue one at a time",
        "batch": "batch enqueue, 100 per call",
        "process": "process no-op, read 100 + ack_many",
    }
    for key, label in labels.items():
        deep, empty = runs["deep"][key], runs["empty"][key]
        cpu = statistics.median(c.cpu_per_task() for _, c in deep)
        report.add(
            make_figure(
                f"depth: {label}, {d:,} waiting",
                "tasks/s",
                [r for r, _ in deep],
                "the same on an empty queue, same server",
                [r for r, _ in empty],
                target=Target(ratio=DEPTH_RATIO, text=f">= {DEPTH_RATIO} x the empty queue (issue 17)"),
                waiting=d,
                redis_cpu_us_per_task=round(cpu, 1),
                redis_bound_tasks_per_s=round(1e6 / cpu),
                redis_cpu_us_per_task_empty=round(statistics.median(c.cpu_per_task() for _, c in empty), 1),
                profile_us_per_task=deep[-1][1].breakdown(),
                profile_us_per_task_empty=empty[-1][1].breakdown(),
                fill_tasks_per_s=round(d / fill_s),
                used_memory_bytes_per_waiting_task=round((info1["used_memory"] - info0["used_memory"]) / d),
            )
        )


# -- paging at size ----------------------------------------------------------------------------


async def _dead(q: TaskQueue, n: int, queue: str) -> None:
    """``n`` dead-lettered tasks: enqueued with one attempt, leased, failed without retry."""
    for start in range(0, n, PAGE):
        batch = [NewTask("noop", payload(i), max_attempts=1) for i in range(start, min(start + PAGE, n))]
        await q.enqueue_batch(batch, queue=queue)
        tasks = await q.read_messages(len(batch), queue=queue)

        async def fail(task_id: str) -> None:
            await q.fail(task_id, "bench", retry=False, queue=queue)

        async with anyio.create_task_group() as tg:
            for t in tasks:
                tg.start_soon(fail, t.task_id)


Page = Callable[[str | None], Awaitable[str | None]]


async def _walk(b: Bench, page: Page) -> list[Cost]:
    """Every page from the first to the last: each page's counters."""
    costs: list[Cost] = []
    cursor: str | None = None
    while True:
        async with Meter(b.r, 1) as cost:
            cursor = await page(cursor)
        costs.append(cost)
        if cursor is None:
            return costs


def _pagers(q: TaskQueue, queue: str) -> dict[str, Page]:
    async def dlq_newest(cursor: str | None) -> str | None:
        return (await q.inspect_dlq(PAGE, cursor, queue=queue)).next_cursor

    async def dlq_oldest(cursor: str | None) -> str | None:
        return (await q.inspect_dlq(PAGE, cursor, newest_first=False, queue=queue)).next_cursor

    async def failed(cursor: str | None) -> str | None:
        return (await q.list_tasks("failed", None, PAGE, cursor, queue=queue)).next_cursor

    async def queued(cursor: str | None) -> str | None:
        return (await q.list_tasks("queued", None, PAGE, cursor, queue=queue)).next_cursor

    return {
        "inspect_dlq, newest first": dlq_newest,
        "inspect_dlq, oldest first": dlq_oldest,
        "list_tasks failed": failed,
        "list_tasks queued": queued,
    }


async def meter_overhead(b: Bench) -> float:
    """Redis CPU (us) of an empty :class:`Meter` block: its own INFO calls, subtracted below."""
    costs: list[float] = []
    for _ in range(20):
        async with Meter(b.r, 1) as cost:
            pass
        costs.append(cost.cpu_us)
    return statistics.median(costs)


def _cpu(costs: list[Cost], overhead: float) -> list[float]:
    return [max(c.cpu_us - overhead, 0.0) for c in costs]


async def paging(report: Report, server: RedisProc, sizes: Sizes) -> None:
    large, small = sizes.entries, min(1_000, sizes.entries // 2)
    log(f"depth: paging {PAGE} per page over {large:,} dead and {large:,} queued tasks, beside {small:,}")
    walks: dict[int, dict[str, list[Cost]]] = {}
    async with Bench(server) as b:
        b.fresh()
        q = b.q
        for n in (small, large):
            t0 = time.perf_counter()
            await _dead(q, n, f"p{n}")
            await library.enqueue_batches(q, n, queue=f"p{n}")
            log(f"    {n:,} dead + {n:,} queued in {time.perf_counter() - t0:.1f} s")
        overhead = await meter_overhead(b)
        for n in (small, large):
            walks[n] = {name: await _walk(b, page) for name, page in _pagers(q, f"p{n}").items()}
        b.fresh()
    for name in walks[large]:
        big, little = walks[large][name], walks[small][name]
        cpu = _cpu(big, overhead)
        inside = [c.top_level_us() for c in big]
        worst = max(cpu)
        figure = make_figure(
            f"depth: {name}, Redis CPU per page of {PAGE} at {large:,} entries",
            "us/page",
            cpu,
            f"the same walk at {small:,} entries",
            _cpu(little, overhead),
            better="lower",
            pages=len(big),
            slowest_page_us=round(worst, 1),
            p99_page_us=round(percentile(cpu, 0.99), 1),
            first_page_us=round(cpu[0], 1),
            last_page_us=round(cpu[-1], 1),
            commandstats_us_per_page=round(statistics.median(inside), 1),
            commandstats_slowest_page_us=round(max(inside), 1),
            meter_overhead_us=round(overhead, 1),
            profile_us_per_page=_sum(big).breakdown(),
        )
        figure.target = f"slowest page <= {PAGE_BUDGET_US / 1000:g} ms, median flat (<= {FLAT} x at {small:,})"
        figure.met = worst <= PAGE_BUDGET_US and (figure.ratio or 0) <= FLAT
        report.add(figure)


def _sum(costs: list[Cost]) -> Cost:
    total = Cost(len(costs))
    for c in costs:
        total.add(c)
    return total


# -- queue_stats over many queues --------------------------------------------------------------


async def _stats_walk(b: Bench, q: TaskQueue) -> tuple[list[Cost], list[float], int]:
    """Every page of ``queue_stats_page`` (what ``queue_stats`` with ``all_queues`` runs): each
    page's counters and wall time (ms), and how many queues the walk saw."""
    costs: list[Cost] = []
    walls: list[float] = []
    seen = 0
    cursor: str | None = None
    while True:
        async with Meter(b.r, 1) as cost:
            t0 = time.perf_counter()
            page = await q.queue_stats_page(cursor)
            walls.append((time.perf_counter() - t0) * 1000)
        costs.append(cost)
        seen += len(page.queues)
        cursor = page.next_cursor
        if cursor is None:
            return costs, walls, seen


async def all_queues(report: Report, server: RedisProc, plan: Plan, sizes: Sizes) -> None:
    large, small = sizes.queues, sizes.queues // 10
    log(f"depth: queue_stats all_queues, {STATS_PAGE} queues per page, over {large:,} queues beside {small:,}")
    walks: dict[int, tuple[list[Cost], list[float]]] = {small: ([], []), large: ([], [])}
    one: list[Cost] = []
    server.flush()
    # Two registries on one server (each Bench has its own key prefix), walked in turn so drift hits both.
    async with Bench(server) as b_small, Bench(server) as b_large:
        benches = {small: b_small, large: b_large}
        overhead = await meter_overhead(b_small)
        for n, b in benches.items():
            t0 = time.perf_counter()
            for i in range(n):
                await b.q.enqueue("noop", payload(i), queue=f"q{i:05d}")
            log(f"    {n:,} queues in {time.perf_counter() - t0:.1f} s")
        for rep in range(plan.reps):
            for n in (small, large) if rep % 2 == 0 else (large, small):
                for _ in range(large // n):  # as many pages of each size
                    costs, walls, seen = await _stats_walk(benches[n], benches[n].q)
                    assert seen == n, (seen, n)
                    walks[n][0].extend(costs)
                    walks[n][1].extend(walls)
        for _ in range(5):
            async with Meter(b_large.r, 1) as single:
                await b_large.q.get_queue_stats("q00000")
            one.append(single)
    server.flush()
    big, big_walls = walks[large]
    cpu, little = _cpu(big, overhead), _cpu(walks[small][0], overhead)
    worst = max(cpu)
    figure = make_figure(
        f"depth: queue_stats all_queues, Redis CPU per page of {STATS_PAGE} queues at {large:,} queues",
        "us/page",
        cpu,
        f"the same walk at {small:,} queues",
        little,
        better="lower",
        pages=len(big) // plan.reps,
        slowest_page_us=round(worst, 1),
        p99_page_us=round(percentile(cpu, 0.99), 1),
        cpu_us_per_queue=round(statistics.median(cpu) / STATS_PAGE, 1),
        get_queue_stats_cpu_us=round(statistics.median(_cpu(one, overhead)), 1),
        walk_cpu_ms=round(sum(cpu) / plan.reps / 1000, 1),
        wall_ms_per_page=round(statistics.median(big_walls), 1),
        commandstats_us_per_page=round(statistics.median(c.top_level_us() for c in big), 1),
        meter_overhead_us=round(overhead, 1),
        commands_per_page=_commands(_sum(big), len(big)),
    )
    figure.target = f"<= {PAGE_BUDGET_US / 1000:g} ms per page (issue 17), flat (<= {FLAT} x at {small:,})"
    figure.met = worst <= PAGE_BUDGET_US and (figure.ratio or 0) <= FLAT
    report.add(figure)


def _commands(cost: Cost, pages: int) -> dict[str, Any]:
    """Calls and usec of each command per page (``cost`` summed over ``pages``), biggest first."""
    rows = sorted(cost.commands.items(), key=lambda kv: -kv[1][1])
    return {name: {"calls": round(calls / pages, 1), "usec": round(usec / pages)} for name, (calls, usec) in rows}
