"""A producer process: enqueues tasks with known ids through the library and logs every attempt.

Each attempt is logged as ``ok`` (with ``duplicate``) or ``unknown`` (QueueUnavailable:
the write may or may not have landed). Unknown attempts are retried later with the same
ids and payloads, which is safe because enqueue and fanout are idempotent by task id.

Usage (started by ``chaos.run``): ``python -m chaos.producer CONFIG INDEX END_EPOCH_S``.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr

from chaos.common import QUEUE, Config, Jsonl
from mcp_queue_server import NewTask, QueueError, QueueUnavailable, Settings, TaskQueue

#: Kinds of operations and their weights. "batch" enqueues four tasks in one call.
KINDS = {"normal": 45, "bulk": 10, "flaky": 10, "poison": 5, "batch": 20, "fanout": 10}
CHILDREN = 3
#: After the production window, how long unknown outcomes are retried at most.
SETTLE_S = 30.0


@dataclass
class Op:
    """One logical operation; retried with identical arguments until its outcome is known."""

    kind: str  # "enqueue" or "fanout"
    tasks: list[NewTask]
    parent: str | None = None
    continuation: NewTask | None = None
    tries: int = field(default=0)


def make_task(cfg: Config, task_id: str, kind: str, rng: random.Random) -> NewTask:
    poison = kind == "poison"
    return NewTask(
        task_type=f"chaos.{kind}",
        payload={"kind": kind, "poison": poison, "work_ms": rng.randint(10, 60)},
        priority=rng.choice((0, 0, 0, 15)),
        task_id=task_id,
        max_attempts=cfg.poison_max_attempts if poison else cfg.healthy_max_attempts,
    )


def next_op(cfg: Config, index: int, n: int, rng: random.Random) -> Op:
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    base = f"p{index}-{n:05d}"
    if kind == "batch":
        tasks = [make_task(cfg, f"{base}-b{j}", rng.choice(("normal", "bulk")), rng) for j in range(4)]
        return Op("enqueue", tasks)
    if kind == "fanout":
        # Deterministic child and continuation ids: a retried fanout must name the same ones.
        children = [make_task(cfg, f"{base}-c{j}", "normal", rng) for j in range(CHILDREN)]
        cont = NewTask("chaos.continuation", {"kind": "continuation"}, 0, f"{base}-done")
        return Op("fanout", children, parent=f"{base}-f", continuation=cont)
    return Op("enqueue", [make_task(cfg, base, kind, rng)])


async def attempt(q: TaskQueue, op: Op, log: Jsonl, cfg: Config) -> bool:
    """Run one operation once; log the outcome of each id. True when the outcome is known."""
    op.tries += 1
    common: dict[str, Any] = {"t": cfg.since_start(), "try": op.tries}
    try:
        if op.kind == "fanout":
            assert op.parent is not None
            assert op.continuation is not None
            res = await q.fanout(op.parent, op.tasks, {"by": "chaos"}, on_complete=op.continuation, queue=QUEUE)
            log.write(
                op="fanout",
                id=op.parent,
                children=[t.task_id for t in op.tasks],
                continuation=op.continuation.task_id,
                outcome="ok",
                duplicate=res.duplicate,
                **common,
            )
        else:
            results = await q.enqueue_batch(op.tasks, queue=QUEUE)
            for task, r in zip(op.tasks, results, strict=True):
                log.write(op="enqueue", id=task.task_id, kind=task.payload["kind"], outcome="ok",
                          duplicate=r.duplicate, **common)  # fmt: skip
    except QueueUnavailable as exc:
        outcome = {"outcome": "unknown", "error": str(exc)[:120]}
    except QueueError as exc:
        # Not retryable: a queue bug or a misuse; the checker reports it.
        outcome = {"outcome": "error", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    else:
        return True
    if op.kind == "fanout":
        assert op.continuation is not None
        log.write(op="fanout", id=op.parent, children=[t.task_id for t in op.tasks],
                  continuation=op.continuation.task_id, **outcome, **common)  # fmt: skip
    else:
        for task in op.tasks:
            log.write(op="enqueue", id=task.task_id, kind=task.payload["kind"], **outcome, **common)
    return outcome["outcome"] == "error"  # an error is final: retrying cannot change it


async def produce(cfg: Config, index: int, end: float) -> None:
    """Produce until ``end`` (epoch seconds) and while faults run, then settle unknown outcomes (bounded)."""
    rng = random.Random(f"{cfg.seed}/producer/{index}")
    log = Jsonl(cfg.logs / f"producer-{index}.jsonl")
    settings = Settings(
        redis_url=SecretStr(cfg.redis_url),
        key_prefix=cfg.key_prefix,
        socket_timeout_s=cfg.socket_timeout_s,
        max_attempts=cfg.healthy_max_attempts,  # fanout children and continuations get this budget
        data_dir=Path(cfg.workdir) / "unused",
    )
    unknown: list[Op] = []
    q = await TaskQueue(settings, consumer=f"producer-{index}").connect()
    log.write(op="start", t=cfg.since_start())
    try:
        n, next_at = 0, time.time()
        while time.time() < end or cfg.faults_running():
            op = next_op(cfg, index, n, rng)
            n += 1
            if not await attempt(q, op, log, cfg):
                unknown.append(op)
            elif unknown:
                # Redis answers again: settle one earlier unknown outcome, same ids.
                retry = unknown.pop(0)
                if not await attempt(q, retry, log, cfg):
                    unknown.append(retry)
            next_at += 1 / cfg.rate
            await anyio.sleep(max(0.0, next_at - time.time()))
        settle_end = time.monotonic() + SETTLE_S
        while unknown and time.monotonic() < settle_end:
            if await attempt(q, unknown[0], log, cfg):
                unknown.pop(0)
            else:
                await anyio.sleep(0.1)  # Redis is still unreachable; the deadline bounds this
        log.write(op="done", t=cfg.since_start(), operations=n, unresolved=len(unknown))
    finally:
        await q.disconnect(release=False)  # a producer holds no tasks


def main() -> None:
    cfg = Config.load(sys.argv[1])
    anyio.run(produce, cfg, int(sys.argv[2]), float(sys.argv[3]))


if __name__ == "__main__":
    main()
