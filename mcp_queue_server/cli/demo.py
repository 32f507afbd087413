"""The design doc's demo (``example_usage.py``), runnable with nothing installed: ``mcp-queue-server demo``.

A producer enqueues a high-priority task, a batch and a fanout of three variants; three
workers process them in parallel, checkpointing every step; one worker is killed mid-task
and its task comes back (lease expiry -> attempt 2, resumed from its checkpoint); the
fanout's variants are aggregated by a tournament; a recovery pass and statistics close it.

It runs on a fresh embedded Redis in a temporary directory (or on ``--redis-url``), under a
unique key prefix, and prints each step to stdout.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.to_thread
from pydantic import SecretStr

from mcp_queue_server.cli.common import EXIT_OK
from mcp_queue_server.core.models import NewTask, Task
from mcp_queue_server.settings import Settings
from mcp_queue_server.store.embedded import EmbeddedRedis
from mcp_queue_server.store.open import open_queue
from mcp_queue_server.worker.runtime import TaskContext, Worker, WorkerEvent

LEASE_MS = 1_000  # short, so the killed worker's task comes back within a second
STEP_S = 0.15  # one step of simulated work
STEPS = 3
VICTIM = "strategy_batch_1"  # the task whose worker is killed at step 2 of its first attempt
VARIANTS = {"conservative": 0.72, "moderate": 0.87, "aggressive": 0.64}  # fake sandbox scores
WAIT_S = 60.0


class Demo:
    """The demo's workers, handlers and output."""

    def __init__(self, settings: Settings, out: TextIO) -> None:
        self.settings = settings
        self.out = out
        self.workers: dict[str, Worker] = {}
        self.acked = 0
        self.expected = 0  # tasks to ack: set by produce()
        self.all_done = anyio.Event()
        self.victim_at_step_2 = anyio.Event()
        self.victim_worker = ""

    def say(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    def label(self, worker_name: str) -> str:
        return f"[Worker {worker_name.rsplit('-', 1)[-1]}]"

    # -- handlers ------------------------------------------------------------------------

    async def strategy(self, task: Task, ctx: TaskContext) -> dict[str, Any]:
        """Three steps of work, checkpointed after each; resumes after the last saved step."""
        who = self.label(ctx.worker_name)
        done = int((task.checkpoint or {}).get("step", 0))
        self.say(f"  {who} 🔨 Processing: {task.task_id} (attempt {task.attempt})")
        if done:
            self.say(f"  {who} ↩️  {task.task_id}: resuming from checkpoint step {done}/{STEPS}")
        for step in range(done + 1, STEPS + 1):
            await anyio.sleep(STEP_S)
            await ctx.checkpoint({"step": step})
            self.say(f"  {who} 💾 {task.task_id}: checkpoint step {step}/{STEPS}")
            if task.task_id == VICTIM and task.attempt == 1 and step == 2:
                self.victim_worker = ctx.worker_name
                self.victim_at_step_2.set()
                await anyio.sleep_forever()  # the demo kills this worker now
        self.say(f"  {who} ✅ Done: {task.task_id}")
        return {"strategy": task.task_id, "steps": STEPS, "attempt": task.attempt}

    async def variant(self, task: Task, ctx: TaskContext) -> dict[str, Any]:
        """One codegen variant of the fanout, tested in a (simulated) sandbox."""
        who = self.label(ctx.worker_name)
        name = str(task.payload["variant"])
        self.say(f"  {who} 🔨 Processing: {task.task_id} ({name} variant)")
        await anyio.sleep(STEP_S)
        await ctx.checkpoint({"generated": True})
        await anyio.sleep(STEP_S)
        self.say(f"  {who} 🧪 {task.task_id}: sandbox score {VARIANTS[name]}")
        return {"variant": name, "score": VARIANTS[name]}

    async def tournament(self, task: Task, ctx: TaskContext) -> dict[str, Any]:
        """The fanout's continuation: it receives every variant's result and picks the best."""
        who = self.label(ctx.worker_name)
        results: dict[str, Any] = task.payload["fanout"]["results"]
        self.say(f"  {who} 🔨 Processing: {task.task_id} ({len(results)} variant results aggregated)")
        best_id, best = max(results.items(), key=lambda item: float(item[1]["score"]))
        self.say(f"  {who} 🏆 Tournament winner: {best['variant']} ({best_id}, score {best['score']})")
        return {"winner": best_id, **best}

    def on_event(self, event: WorkerEvent) -> None:
        if event.kind == "acked":
            self.acked += 1
            if self.acked == self.expected:
                self.all_done.set()
        elif event.kind == "failed":
            self.say(f"  {self.label(event.worker)} ❌ {event.task.task_id} failed: {event.detail}")

    # -- the story -----------------------------------------------------------------------

    async def produce(self) -> None:
        self.say("📍 STEP 1: Producer generates tasks")
        async with open_queue(self.settings, consumer="demo-producer") as queue:
            urgent = await queue.enqueue("strategy", {"market": "BTC"}, priority=15, task_id="strategy_urgent_001")
            self.say(f"  ✅ High priority enqueued: {urgent.task_id} (priority 15 -> high stream)")
            batch = await queue.enqueue_batch(
                [
                    NewTask("strategy", {"market": m}, 5, f"strategy_batch_{i}")
                    for i, m in enumerate(["ETH", "SOL", "ADA"])
                ]
            )
            self.say(f"  ✅ Normal priority batch: {len(batch)} tasks ({', '.join(r.task_id for r in batch)})")
            fan = await queue.fanout(
                "strategy_multi_variant",
                [
                    NewTask("variant", {"variant": name}, task_id=f"strategy_multi_variant_sub_{i}")
                    for i, name in enumerate(VARIANTS)
                ],
                {"concept": "mean reversion"},
                on_complete=NewTask(
                    "tournament", {"select": "best score"}, task_id="strategy_multi_variant_tournament"
                ),
            )
            self.say(
                f"  ✅ Fanout: {len(fan.subtask_ids)} variants ({', '.join(VARIANTS)}) -> tournament when all finish"
            )
        self.expected = 1 + len(batch) + len(fan.subtask_ids) + 1

    async def process(self) -> None:
        self.say()
        self.say("📍 STEP 2: Multiple consumers process tasks")
        handlers = {"strategy": self.strategy, "variant": self.variant, "tournament": self.tournament}
        with anyio.fail_after(WAIT_S):
            async with anyio.create_task_group() as tg:
                for n in (1, 2, 3):
                    worker = Worker(
                        self.settings,
                        handlers,
                        name=f"demo-worker-{n}",
                        lease_ms=LEASE_MS,
                        recover_interval_s=None,  # STEP 3 is the recovery worker
                        on_event=self.on_event,
                    )
                    self.workers[worker.name] = worker
                    tg.start_soon(worker.run)
                await self.victim_at_step_2.wait()
                self.workers[self.victim_worker].kill()
                self.say(
                    f"  💥 {self.label(self.victim_worker)[1:-1]} killed mid-task: {VICTIM} held at step 2/{STEPS}, "
                    "no ack, no hand-back"
                )
                self.say(f"  ⏳ {VICTIM} comes back when its lease expires ({LEASE_MS / 1000:.1f} s)")
                await self.all_done.wait()
                for worker in self.workers.values():
                    worker.stop(0)

    async def recover_and_report(self) -> None:
        self.say()
        self.say("📍 STEP 3: Recovery worker checks stuck tasks")
        async with open_queue(self.settings, consumer="demo-recovery") as queue:
            report = await queue.recover()
            stuck = len(report.requeued) + len(report.dead_lettered)
            self.say(f"  ✅ {'No stuck tasks found' if not stuck else f'{stuck} stuck task(s) recovered'}")
            dlq = await queue.inspect_dlq()
            self.say(f"  ✅ {'DLQ is empty' if not dlq.tasks else f'{len(dlq.tasks)} task(s) in the DLQ'}")
            victim = await queue.get_task(VICTIM)
            parent = await queue.get_task("strategy_multi_variant")
            stats = await queue.get_queue_stats()
        self.say()
        self.say("📊 STATISTICS")
        t = stats.totals
        self.say(
            f"  enqueued {t.get('enqueued', 0)} · completed {t.get('completed', 0)} · retried {t.get('retried', 0)}"
            f" · dead-lettered {t.get('dead_lettered', 0)} · waiting {stats.available} · in flight {stats.in_flight}"
        )
        self.say(f"  {VICTIM}: {victim.status.value} on attempt {victim.attempt} (resumed from its checkpoint)")
        done = parent.fanout.completed if parent.fanout else 0
        self.say(f"  strategy_multi_variant: fanout {parent.status.value}, {done}/{len(VARIANTS)} variants aggregated")


async def run_demo(settings: Settings, out: TextIO | None = None) -> None:
    """Run the demo against ``settings``' Redis, or a temporary embedded one when it has no URL.

    Raises:
        QueueUnavailable: the Redis could not be reached or the embedded one started.
    """
    out = out or sys.stdout
    data_dir: Path | None = None
    embedded: EmbeddedRedis | None = None
    update: dict[str, Any] = {"key_prefix": f"demo-{uuid.uuid4().hex[:8]}", "retry_backoff_ms": 500}
    print("🚀 REDIS STREAMS PHASE 2 DEMO", file=out, flush=True)
    try:
        if settings.redis_url is None:
            data_dir = Path(tempfile.mkdtemp(prefix="mcpq-demo-"))  # short: a socket path must fit ~107 bytes
            embedded = EmbeddedRedis(data_dir)
            update["redis_url"] = SecretStr(await anyio.to_thread.run_sync(embedded.start_or_join))
            where = f"embedded Redis in {data_dir}"
        else:
            where = "the Redis at MCP_QUEUE_REDIS_URL"
        print(f"   queue store: {where}, key prefix {update['key_prefix']}\n", file=out, flush=True)
        demo = Demo(settings.model_copy(update=update), out)
        await demo.produce()
        await demo.process()
        await demo.recover_and_report()
        print("\n✅ DEMO COMPLETE", file=out, flush=True)
    finally:
        with anyio.CancelScope(shield=True):
            if embedded is not None:
                await anyio.to_thread.run_sync(embedded.leave)
            if data_dir is not None:
                shutil.rmtree(data_dir, ignore_errors=True)


async def run(settings: Settings) -> int:
    """``mcp-queue-server demo``."""
    await run_demo(settings)
    return EXIT_OK
