"""MCP-level figures over stdio: single tool calls beside the echo floor, and batched lifecycle."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from benchmarks.common import Report, Target, bench_settings, log, make_figure, payload, percentile
from mcp_queue_server import TaskQueue
from mcp_queue_server.core.models import NewTask
from mcp_queue_server.testing import RedisProc

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "default"


def server_params(url: str, prefix: str, mode: str = "product") -> StdioServerParameters:
    """The echo server of ``mode`` (see :mod:`benchmarks.mcp_echo_server`) over stdio."""
    env = {k: os.environ[k] for k in ("HOME", "PATH", "LANG") if k in os.environ}
    env |= {"MCP_QUEUE_REDIS_URL": url, "MCP_QUEUE_KEY_PREFIX": prefix, "MCP_QUEUE_LOG_LEVEL": "WARNING"}
    args = ["-m", "benchmarks.mcp_echo_server", mode]
    return StdioServerParameters(command=sys.executable, args=args, env=env, cwd=ROOT)


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error or result.structured_content is None:
        raise RuntimeError(f"{tool} failed: {result.content}")
    return result.structured_content


async def timed_calls(n: int, fn: Callable[[int], Awaitable[Any]]) -> list[float]:
    """Latencies (ms) of ``n`` sequential calls of ``fn(i)``."""
    out: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        await fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def single_calls(client: Client, n: int, floors: dict[str, Client]) -> dict[str, list[float]]:
    """One round of ``n`` calls each of echo, enqueue_task, read_tasks (count 1) and ack, and of
    echo on each floor server of ``floors`` (their order swapped every call: no side gains from drift)."""
    ids: list[str] = []
    lat: dict[str, list[float]] = {f"echo_{name}": [] for name in floors}
    for i in range(n):
        for name, floor in floors.items() if i % 2 else reversed(floors.items()):
            t0 = time.perf_counter()
            await call(floor, "echo", {"data": payload(i)})
            lat[f"echo_{name}"].append((time.perf_counter() - t0) * 1000)
    lat["echo"] = await timed_calls(n, lambda i: call(client, "echo", {"data": payload(i)}))
    lat["enqueue_task"] = await timed_calls(
        n, lambda i: call(client, "enqueue_task", {"task_type": "noop", "payload": payload(i)})
    )

    async def read_one(_: int) -> None:
        got = await call(client, "read_tasks", {"count": 1})
        ids.extend(t["task_id"] for t in got["tasks"])

    lat["read_tasks"] = await timed_calls(n, read_one)
    assert len(ids) == n, f"read {len(ids)} of {n}"
    lat["ack"] = await timed_calls(n, lambda i: call(client, "ack", {"task_id": ids[i], "result": {"ok": True}}))
    return lat


async def lifecycle(client: Client, tasks: int, batch: int = 100) -> float:
    """enqueue_batch(100) -> read_tasks(count 100) -> ack(task_ids): tasks/s."""
    t0 = time.perf_counter()
    for start in range(0, tasks, batch):
        specs = [{"task_type": "noop", "payload": payload(i)} for i in range(start, start + batch)]
        await call(client, "enqueue_batch", {"tasks": specs})
        ids: list[str] = []
        while len(ids) < batch:
            got = await call(client, "read_tasks", {"count": batch - len(ids)})
            ids += [t["task_id"] for t in got["tasks"]]
        done = await call(client, "ack", {"task_ids": ids})
        assert all(t["status"] == "acked" for t in done["tasks"]), done
    return tasks / (time.perf_counter() - t0)


async def echo_lifecycle(client: Client, tasks: int, batch: int = 100) -> float:
    """The same three calls per batch with the same data sizes, through ``echo``: tasks/s."""
    t0 = time.perf_counter()
    for start in range(0, tasks, batch):
        specs = [{"task_type": "noop", "payload": payload(i)} for i in range(start, start + batch)]
        await call(client, "echo", {"data": specs})
        leased = [{"task_id": f"{i:032x}", "attempt": 1, "lease_expires_at": 0, **s} for i, s in enumerate(specs)]
        await call(client, "echo", {"data": leased})
        await call(client, "echo", {"data": [f"{i:032x}" for i in range(batch)]})
    return tasks / (time.perf_counter() - t0)


async def library_cpu(q: TaskQueue, tasks: int, reps: int, batch: int = 100) -> float:
    """This process's CPU per task for the lifecycle's queue calls made directly (median of ``reps``):
    the part of the server's work per task that no MCP server of this queue can shed."""
    out: list[float] = []
    for _ in range(reps):
        c0 = time.process_time()
        for start in range(0, tasks, batch):
            await q.enqueue_batch([NewTask("noop", payload(i)) for i in range(start, start + batch)], queue=QUEUE)
            got = await q.read_messages(batch, queue=QUEUE)
            await q.ack_and_read([t.task_id for t in got], 0, queue=QUEUE)
        out.append((time.process_time() - c0) / tasks * 1e6)
    return statistics.median(out)


def server_pid(mode: str = "product") -> int:
    """The stdio server process: our child running ``benchmarks.mcp_echo_server mode``."""
    for child in Path("/proc").glob("[0-9]*"):
        try:
            stat = (child / "stat").read_text()
            cmdline = (child / "cmdline").read_bytes()
        except OSError:
            continue
        ours = int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid()
        if ours and cmdline.endswith(b"mcp_echo_server\0" + mode.encode() + b"\0"):
            return int(child.name)
    raise RuntimeError("MCP server process not found")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU per task of the server process and of this (client) process over one measurement."""

    pid: int
    server_us: list[float] = field(default_factory=list)
    client_us: list[float] = field(default_factory=list)

    async def measure(self, fn: Callable[[], Awaitable[float]], tasks: int) -> float:
        s0, c0 = cpu_seconds(self.pid), time.process_time()
        rate = await fn()
        self.server_us.append((cpu_seconds(self.pid) - s0) / tasks * 1e6)
        self.client_us.append((time.process_time() - c0) / tasks * 1e6)
        return rate

    def extra(self) -> dict[str, float]:
        return {
            "server_cpu_us_per_task": round(statistics.median(self.server_us), 1),
            "client_cpu_us_per_task": round(statistics.median(self.client_us), 1),
        }


async def _skip_validation(name: str, result: Any) -> None:
    return None


#: The floor servers every single-call round also calls ``echo`` on (benchmarks/mcp_echo_server.py).
FLOORS = ("stock", "loop")


async def run(report: Report, server: RedisProc, *, reps: int, calls: int, lifecycle_tasks: int) -> None:
    settings = bench_settings(server.url)
    log(f"MCP over stdio ({calls} calls per tool per rep, lifecycle {lifecycle_tasks} tasks per rep)")
    t0 = time.perf_counter()
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            Client(server_params(server.url, settings.key_prefix), read_timeout_seconds=60)
        )
        startup_s = time.perf_counter() - t0
        floors = {
            mode: await stack.enter_async_context(Client(server_params(server.url, settings.key_prefix, mode)))
            for mode in FLOORS
        }
        await single_calls(client, max(calls // 10, 20), floors)  # warm-up
        await lifecycle(client, 200)
        await echo_lifecycle(client, 200)
        rounds = [await single_calls(client, calls, floors) for _ in range(reps)]
        pid = server_pid()
        m_echo, m_life, m_raw = CpuMeter(pid), CpuMeter(pid), CpuMeter(pid)
        life, echo_life, life_raw = [], [], []
        session = client.session
        validate = session.validate_tool_result
        n = lifecycle_tasks
        for _ in range(reps):
            echo_life.append(await m_echo.measure(partial(echo_lifecycle, client, n), n))
            life.append(await m_life.measure(partial(lifecycle, client, n), n))
            # The SDK client checks every result against the tool's outputSchema (jsonschema):
            # measured once more without that, to separate the client's share from the server's.
            session.validate_tool_result = _skip_validation  # type: ignore[method-assign]
            try:
                life_raw.append(await m_raw.measure(partial(lifecycle, client, n), n))
            finally:
                session.validate_tool_result = validate  # type: ignore[method-assign]
    async with TaskQueue(settings) as q:  # nothing may be left behind
        stats = await q.get_queue_stats(QUEUE)
        queue_us = await library_cpu(q, lifecycle_tasks, reps)
        await q.disconnect(release=False)
    assert stats.available == 0, stats
    assert stats.in_flight == 0, stats

    def pct(tool: str, q: float) -> list[float]:
        return [percentile(r[tool], q) for r in rounds]

    def p50(tool: str) -> float:
        return round(statistics.median(pct(tool, 0.5)), 3)

    report.add(
        make_figure(
            "mcp: enqueue_task call p50 vs the SDK's stock stdio server",
            "ms",
            pct("enqueue_task", 0.5),
            "echo p50, bare MCPServer on the SDK's stdio transport",
            pct("echo_stock", 0.5),
            better="lower",
            target=Target(ratio=1.3, text="<= 1.3 x stock echo (issue 17)"),
            calls_per_rep=calls,
            echo_p50_ms={"stock": p50("echo_stock"), "product_loop": p50("echo_loop"), "product_server": p50("echo")},
        )
    )
    report.add(
        make_figure(
            "mcp: stdio loop, echo p50 on the product's loop vs the SDK's",
            "ms",
            pct("echo_loop", 0.5),
            "echo p50, the same bare server on the SDK's stdio transport",
            pct("echo_stock", 0.5),
            better="lower",
            target=Target(ratio=1.05, text="<= 1.05 x stock loop: nothing measurable (issue 17)"),
            calls_per_rep=calls,
            p99_ms={"product_loop": pct("echo_loop", 0.99), "stock": pct("echo_stock", 0.99)},
        )
    )
    for tool in ("enqueue_task", "read_tasks", "ack"):
        label = {"read_tasks": "read_tasks (count 1)", "ack": "ack (task_id + result)"}.get(tool, tool)
        for quantile, name in ((0.5, "p50"), (0.99, "p99")):
            report.add(
                make_figure(
                    f"mcp: {label} call {name}",
                    "ms",
                    pct(tool, quantile),
                    f"echo tool {name} (same server)",
                    pct("echo", quantile),
                    better="lower",
                    calls_per_rep=calls,
                    server_startup_s=round(startup_s, 3),
                )
            )
    # The client's jsonschema check of our results is outside the server; it bounds the rate
    # even with a server as cheap as echo: 1 / (the echo's time per task + the check's).
    check_us = statistics.median(m_life.client_us) - statistics.median(m_raw.client_us)
    echo_server = statistics.median(m_echo.server_us)
    echo_us = 1e6 / statistics.median(echo_life)
    report.add(
        make_figure(
            "mcp: lifecycle (enqueue_batch 100, read_tasks 100, bulk ack)",
            "tasks/s",
            life,
            "3 echo calls/100 tasks, same data",
            echo_life,
            target=Target(ratio=0.7, text=">= 0.7 x echo (issue 17)"),
            tasks_per_rep=lifecycle_tasks,
            calls_per_s=round(statistics.median(life) / 100 * 3, 1),
            echo_cpu=m_echo.extra(),
            client_check_us_per_task=round(check_us, 1),
            bound_ratio_with_client_check=round(echo_us / (echo_us + check_us), 3),
            **m_life.extra(),
        )
    )
    report.add(
        make_figure(
            "mcp: lifecycle server CPU per task",
            "us/task",
            m_life.server_us,
            "echo lifecycle's server CPU per task (same server, same data)",
            m_echo.server_us,
            better="lower",
            target=Target(ratio=1.2, text="<= 1.2 x echo (issue 17)"),
            tasks_per_rep=lifecycle_tasks,
            queue_call_cpu_us_per_task=round(queue_us, 1),
            bound_ratio_with_queue_call=round((echo_server + queue_us) / echo_server, 3),
        )
    )
    report.add(
        make_figure(
            "mcp: lifecycle, client outputSchema validation off",
            "tasks/s",
            life_raw,
            "3 echo calls/100 tasks, same data",
            echo_life,
            tasks_per_rep=lifecycle_tasks,
            **m_raw.extra(),
        )
    )
