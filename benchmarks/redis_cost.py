"""Redis's own cost per task beside bare floors in the same run (issue 17): CPU and memory.

CPU is read two ways, each as ours ÷ a floor doing the bare Redis work over a bare socket:

* ``INFO commandstats`` ``usec``: time inside commands only. Ours is every top-level command
  the library sent (the scripts' EVALSHA, whose time includes the commands they call, plus any
  command sent outside a script); the floors are the bare XADD (one per call, or 100
  pipelined) and XREADGROUP COUNT 100 + one XACK per batch. The same counters, split by
  script and by the commands each script calls, are the profile (where the CPU goes).
* ``INFO cpu`` (the redis-server process's user + system time): the above plus reading,
  parsing and answering each call. This is what the issue's "now" column measured.

``usec`` is wall time inside each command: on a busy machine a long script is preempted and
its ``usec`` grows while its CPU does not, so read the commandstats figures from a quiet run
(``--wait-quiet``); ``INFO cpu`` is CPU time and holds up under load.

The issue's targets are stated against one unit, the bare sequential XADD's Redis CPU per
call; each figure prints its ratio to that unit and the target beside its own floor.

Memory per waiting task: ``used_memory`` after N tasks queued (not read) minus before, over N,
beside N bare stream entries with the same fields; ``MEMORY USAGE`` splits ours into the
stream entry and the task record.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from benchmarks import bare, library
from benchmarks.common import Figure, Report, log, make_figure, payload
from benchmarks.memory import settled
from benchmarks.sections import Bench, Plan, alternate
from mcp_queue_server import NewTask, TaskQueue
from mcp_queue_server.core.keys import QueueKeys
from mcp_queue_server.testing import RedisProc

STREAM = "raw"
GROUP = "g"
SCRIPT_COMMANDS = frozenset({"evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro"})
LUA_DIR = Path(__file__).resolve().parent.parent / "mcp_queue_server" / "core" / "lua"
#: issue 17's targets: figure key -> (ratio to the bare sequential XADD's Redis CPU per call, at most)
TARGETS = {"one": 1.5, "batch": 0.4, "process": 1.0}


def lua_commands() -> frozenset[str]:
    """The commands the scripts call (so their counters are inside EVALSHA's, not beside it)."""
    names: set[str] = set()
    for path in LUA_DIR.glob("*.lua"):
        names.update(m.lower() for m in re.findall(r"redis\.p?call\(\s*['\"]([A-Za-z]+)", path.read_text()))
    return frozenset(names)


INNER = lua_commands()


@dataclass
class Cost:
    """Redis's counters over one measured block: commandstats deltas and process CPU."""

    tasks: int
    commands: dict[str, tuple[int, float]] = field(default_factory=dict)  #: name -> (calls, usec)
    cpu_us: float = 0.0

    def add(self, other: Cost) -> None:
        for name, (calls, usec) in other.commands.items():
            c, u = self.commands.get(name, (0, 0.0))
            self.commands[name] = (c + calls, u + usec)
        self.cpu_us += other.cpu_us

    def top_level_us(self) -> float:
        """Time of the commands clients sent: scripts (inner calls included) and plain commands.

        With no script in the block (a floor), every command is the client's own.
        """
        if not any(name in SCRIPT_COMMANDS for name in self.commands):
            return sum(u for _, u in self.commands.values())
        return sum(u for name, (_, u) in self.commands.items() if _base(name) not in INNER or name in SCRIPT_COMMANDS)

    def per_task(self) -> float:
        return self.top_level_us() / self.tasks

    def cpu_per_task(self) -> float:
        return self.cpu_us / self.tasks

    def breakdown(self) -> dict[str, float]:
        """usec per task: each command called inside the scripts, and the scripts' own rest."""
        scripts = sum(u for name, (_, u) in self.commands.items() if name in SCRIPT_COMMANDS)
        calls = sum(c for name, (c, _) in self.commands.items() if name in SCRIPT_COMMANDS)
        inner = {n: u for n, (_, u) in self.commands.items() if _base(n) in INNER and n not in SCRIPT_COMMANDS}
        rest = scripts - sum(inner.values())
        out = {
            "script calls per task": round(calls / self.tasks, 3),
            "script, all": round(scripts / self.tasks, 2),
            "script, outside its commands (Lua, arguments, prelude)": round(rest / self.tasks, 2),
        }
        out |= {n: round(u / self.tasks, 2) for n, u in sorted(inner.items(), key=lambda kv: -kv[1]) if u}
        return out


def _base(name: str) -> str:
    return name.split("|", 1)[0]


class Meter:
    """Counts one block: ``async with Meter(r, n) as cost``; ``INFO`` itself is left out."""

    def __init__(self, r: Redis, tasks: int) -> None:
        self.r, self.cost = r, Cost(tasks)

    async def _read(self) -> tuple[dict[str, tuple[int, float]], float]:
        stats: dict[str, Any] = await self.r.info("commandstats")
        cpu: dict[str, Any] = await self.r.info("cpu")
        commands = {
            k.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
            for k, v in stats.items()
            if k.removeprefix("cmdstat_") != "info"
        }
        return commands, (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6

    async def __aenter__(self) -> Cost:
        self._before = await self._read()
        return self.cost

    async def __aexit__(self, *exc: object) -> None:
        after, cpu = await self._read()
        before, cpu0 = self._before
        for name, (calls, usec) in after.items():
            c0, u0 = before.get(name, (0, 0.0))
            if calls - c0:
                self.cost.commands[name] = (calls - c0, usec - u0)
        self.cost.cpu_us = cpu - cpu0


Run = Callable[[], Awaitable[Cost]]


async def measure(plan: Plan, ours: Run, floor: Run) -> tuple[list[Cost], list[Cost]]:
    """``plan.reps`` of each, alternating (the suite's rule: drift hits both)."""
    a: list[Cost] = []
    b: list[Cost] = []

    async def run_ours() -> float:
        a.append(await ours())
        return 0.0

    async def run_floor() -> float:
        b.append(await floor())
        return 0.0

    await alternate(plan.reps, run_ours, run_floor)
    return a, b


def _median(costs: list[Cost], fn: Callable[[Cost], float]) -> float:
    return statistics.median(fn(c) for c in costs)


async def cpu(report: Report, server: RedisProc, plan: Plan) -> None:
    n_one, n_batch, n_proc = plan.enqueue_one, plan.enqueue_batch, plan.process_batched
    log(f"redis cost per task: {n_one} enqueued one at a time, {n_batch} in batches of 100, {n_proc} processed")
    async with Bench(server) as b:
        client = await bare.BareClient.connect("127.0.0.1", server.port)
        try:
            await library.enqueue_one(b.q, 200)  # warm-up: scripts loaded, connections open
            await library.drain_batched(b.q)
            await bare.xadd_sequential(client, STREAM, 200)

            def block(n: int, work: Callable[[], Awaitable[object]], setup: Callable[[], Awaitable[object]]) -> Run:
                async def run() -> Cost:
                    b.fresh()
                    await setup()
                    async with Meter(b.r, n) as cost:
                        await work()
                    return cost

                return run

            async def nothing() -> None:
                pass

            one = await measure(
                plan,
                block(n_one, lambda: library.enqueue_one(b.q, n_one), nothing),
                block(n_one, lambda: bare.xadd_sequential(client, STREAM, n_one), nothing),
            )
            batch = await measure(
                plan,
                block(n_batch, lambda: library.enqueue_batches(b.q, n_batch), nothing),
                block(n_batch, lambda: bare.xadd_pipelined(client, STREAM, n_batch), nothing),
            )
            proc = await measure(
                plan,
                block(n_proc, lambda: library.drain_batched(b.q), lambda: library.prefill(b.q, n_proc)),
                block(
                    n_proc,
                    lambda: bare.consume(client, STREAM, GROUP, "c1"),
                    lambda: bare.prefill_group(client, STREAM, GROUP, n_proc),
                ),
            )
            profile = await _profile(b, plan)
        finally:
            await client.aclose()
        b.fresh()

    unit = {
        "commandstats": _median(one[1], Cost.per_task),
        "INFO cpu": _median(one[1], Cost.cpu_per_task),
    }
    rows = (
        ("one", "enqueue one at a time", one, "bare XADD, one per call"),
        ("batch", "batch enqueue, 100 per call", batch, "bare XADD, 100 pipelined per round trip"),
        ("process", "process no-op, read 100 + ack_many", proc, "bare XREADGROUP COUNT 100 + one XACK per batch"),
    )
    for key, label, (ours, floor), floor_name in rows:
        for source, fn in (("commandstats", Cost.per_task), ("INFO cpu", Cost.cpu_per_task)):
            report.add(_figure(key, label, source, ours, floor, floor_name, fn, unit[source], profile.get(key)))


def _figure(
    key: str,
    label: str,
    source: str,
    ours: list[Cost],
    floor: list[Cost],
    floor_name: str,
    fn: Callable[[Cost], float],
    unit_us: float,
    profile: dict[str, Any] | None,
) -> Figure:
    median = _median(ours, fn)
    to_unit = median / unit_us
    figure = make_figure(
        f"redis cost: {label}, Redis CPU per task ({source})",
        "us/task",
        [fn(c) for c in ours],
        floor_name,
        [fn(c) for c in floor],
        better="lower",
        tasks_per_rep=ours[0].tasks,
        unit_us_bare_xadd_per_call=round(unit_us, 2),
        ratio_to_unit=round(to_unit, 3),
    )
    if profile and source == "commandstats":
        figure.extra["profile_us_per_task"] = profile
    # The target is a ratio to the unit (bare XADD per call), whatever the figure's own floor.
    figure.target = f"issue 17: <= {TARGETS[key]} x bare XADD per call (now {to_unit:.2f})"
    figure.met = to_unit <= TARGETS[key]
    return figure


async def _profile(b: Bench, plan: Plan) -> dict[str, dict[str, Any]]:
    """One more run of ours, counted per script: where Redis's time goes (commandstats, us/task)."""
    out: dict[str, dict[str, Any]] = {}
    b.fresh()
    async with Meter(b.r, plan.enqueue_one) as one:
        await library.enqueue_one(b.q, plan.enqueue_one)
    out["one"] = {"enqueue.lua": one.breakdown()}
    b.fresh()
    async with Meter(b.r, plan.enqueue_batch) as batch:
        await library.enqueue_batches(b.q, plan.enqueue_batch)
    out["batch"] = {"enqueue.lua": batch.breakdown()}
    b.fresh()
    await library.prefill(b.q, plan.process_batched)
    read, ack = Cost(plan.process_batched), Cost(plan.process_batched)
    while True:
        async with Meter(b.r, 0) as got:
            tasks = await b.q.read_messages(100, queue=library.QUEUE)
        read.add(got)
        if not tasks:
            break
        async with Meter(b.r, 0) as done:
            await b.q.ack_many([t.task_id for t in tasks], queue=library.QUEUE)
        ack.add(done)
    out["process"] = {"read.lua": read.breakdown(), "ack.lua": ack.breakdown()}
    for key, scripts in out.items():
        for script, parts in scripts.items():
            top = ", ".join(f"{k} {v}" for k, v in list(parts.items())[:9])
            log(f"    profile {key}, {script} (us/task): {top}")
    return out


# -- memory per waiting task ---------------------------------------------------------------------


async def memory(report: Report, server: RedisProc, plan: Plan) -> None:
    n = plan.memory_tasks
    log(f"redis cost: memory per waiting task, {n} queued ~200-byte payloads vs {n} bare stream entries")
    async with Bench(server) as b:
        client = await bare.BareClient.connect("127.0.0.1", server.port)
        try:
            ours, split = await _waiting_memory(b, n)
            b.fresh()
            base = await settled(b.r)
            await bare.xadd_pipelined(client, STREAM, n)
            after = await settled(b.r)
            stream_bytes = await b.r.memory_usage(STREAM, samples=0) or 0
        finally:
            await client.aclose()
        b.fresh()
    floor = (after["used_memory"] - base["used_memory"]) / n
    report.add(
        make_figure(
            "redis cost: memory per waiting task (used_memory delta)",
            "bytes/task",
            [ours],
            "bare stream entry, same fields (used_memory delta)",
            [floor],
            better="lower",
            tasks=n,
            floor_stream_memory_usage_per_entry=round(stream_bytes / n, 1),
            **split,
            note="issue 17's target (<= 1.0 x BullMQ's per waiting job) is the peers section's figure "
            "'vs bullmq: memory per waiting task' (python -m benchmarks.run --peers)",
        )
    )


async def _waiting_memory(b: Bench, n: int) -> tuple[float, dict[str, Any]]:
    """used_memory per queued task, and MEMORY USAGE split into stream entry and task record."""
    b.fresh()
    q: TaskQueue = b.q
    await library.enqueue_one(q, 1)  # the queue's own keys (groups, stats) exist before the count
    await library.drain_batched(q)
    base = await settled(b.r)
    ids: list[str] = []
    for start in range(0, n, 100):
        batch = [NewTask("noop", payload(i)) for i in range(start, min(start + 100, n))]
        ids += [r.task_id for r in await q.enqueue_batch(batch, queue=library.QUEUE)]
    after = await settled(b.r)
    keys = QueueKeys.for_queue(q.settings.key_prefix, library.QUEUE)
    stream = sum([await b.r.memory_usage(s, samples=0) or 0 for s in keys.streams])
    sample = ids[:: max(1, len(ids) // 200)]
    records = [await b.r.memory_usage(keys.task(i)) or 0 for i in sample]
    encoding = await b.r.object("encoding", keys.task(ids[0]))
    per_task = (after["used_memory"] - base["used_memory"]) / n
    split: dict[str, Any] = {
        "stream_memory_usage_per_task": round(stream / n, 1),
        "record_memory_usage_per_task": round(statistics.mean(records), 1),
        # The keyspace's own table (a bucket per key) and anything the two above leave out.
        "rest_per_task": round(per_task - stream / n - statistics.mean(records), 1),
        # A listpack while every value is <= hash-max-listpack-value (64 bytes): payloads of
        # 65..1024 bytes are stored in 64-byte pieces (_lib.lua payload_fields) to stay one.
        "record_encoding": encoding.decode() if isinstance(encoding, bytes) else str(encoding),
    }
    return per_task, split
