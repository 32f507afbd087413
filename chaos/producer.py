"""A producer process: enqueues tasks with known ids through the library and logs every attempt.

Each attempt is logged as ``ok`` (with ``duplicate``) or ``unknown`` (QueueUnavailable:
the write may or may not have landed). Unknown attempts are retried later with the same
ids and payloads, which is safe because enqueue and fanout are idempotent by task id.

A small share of the "normal" tasks confirmed enqueued are cancelled: half at once (most
still queued), half a moment later (many working by then, or already finished: a refusal).
Each cancel is logged (op ``cancel``) with its outcome and ``done``, this process's wall clock
(ms, Redis's host) when the reply came back: no delivery may start after it.

Usage (started by ``chaos.run``): ``python -m chaos.producer CONFIG INDEX END_EPOCH_S``.
"""

from __future__ import annotations

import bisect
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr

from chaos import sagas
from chaos.common import QUEUE, Config, Jsonl, wall_ms
from mcp_queue_server import InvalidState, NewTask, QueueError, QueueUnavailable, Settings, TaskQueue

#: Kinds of operations and their weights. "batch" enqueues four tasks in one call. "limited"
#: tasks share the max_working key (and come in batches too), "rated" ones the max_per_minute key.
KINDS = {
    "normal": 40,
    "bulk": 10,
    "flaky": 10,
    "poison": 5,
    "batch": 20,
    "fanout": 10,
    "limited": 8,
    "rated": 5,
    "saga": 6,
}
CHILDREN = 3
#: Share of confirmed "normal" tasks cancelled, and how long after its enqueue a late cancel comes.
CANCEL_SHARE = 0.08
LATE_CANCEL_S = (0.05, 0.5)
#: After the production window, how long unknown outcomes are retried at most.
SETTLE_S = 30.0


@dataclass
class Op:
    """One logical operation; retried with identical arguments until its outcome is known."""

    kind: str  # "enqueue", "fanout" or "saga"
    tasks: list[NewTask]
    parent: str | None = None
    continuation: NewTask | None = None
    tries: int = field(default=0)
    saga: sagas.SagaPlan | None = None


def make_task(cfg: Config, task_id: str, kind: str, rng: random.Random) -> NewTask:
    poison = kind == "poison"
    key = {"limited": cfg.working_key, "rated": cfg.rate_key}.get(kind)
    payload: dict[str, Any] = {"kind": kind, "poison": poison, "work_ms": rng.randint(10, 60)}
    if key is not None:
        payload |= {"limit_key": key, "work_ms": rng.randint(cfg.limited_work_ms // 2, cfg.limited_work_ms)}
    return NewTask(
        task_type=f"chaos.{kind}",
        payload=payload,
        priority=rng.choice((0, 0, 0, 15)),
        task_id=task_id,
        max_attempts=cfg.poison_max_attempts if poison else cfg.healthy_max_attempts,
        limit_key=key,
    )


def next_op(cfg: Config, index: int, n: int, rng: random.Random, rated: list[int]) -> Op:
    """The n-th operation; ``rated`` counts the rated tasks made so far (at most cfg.rated_tasks)."""
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    if kind == "rated":
        if rated[0] >= cfg.rated_tasks:
            kind = "normal"
        rated[0] += 1
    base = f"p{index}-{n:05d}"
    if kind == "batch":
        tasks = [make_task(cfg, f"{base}-b{j}", rng.choice(("normal", "bulk", "limited")), rng) for j in range(4)]
        return Op("enqueue", tasks)
    if kind == "saga":
        return Op("saga", [], saga=sagas.plan(index, n, rng))
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
    saga = op.saga
    saga_log = {} if saga is None else {"id": saga.saga_id, "ids": saga.task_ids(), "units": saga.units,
                                        "poison": saga.poison}  # fmt: skip
    try:
        if saga is not None:
            log.write(op="saga", outcome="ok", duplicate=await sagas.start(q, saga), **saga_log, **common)
        elif op.kind == "fanout":
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
    if saga is not None:
        log.write(op="saga", **saga_log, **outcome, **common)
    elif op.kind == "fanout":
        assert op.continuation is not None
        log.write(op="fanout", id=op.parent, children=[t.task_id for t in op.tasks],
                  continuation=op.continuation.task_id, **outcome, **common)  # fmt: skip
    else:
        for task in op.tasks:
            log.write(op="enqueue", id=task.task_id, kind=task.payload["kind"], **outcome, **common)
    return outcome["outcome"] == "error"  # an error is final: retrying cannot change it


async def cancel(q: TaskQueue, task_id: str, log: Jsonl, cfg: Config) -> None:
    """Cancel a task once and log the outcome (a cancel with an unknown outcome is not retried)."""
    common: dict[str, Any] = {"op": "cancel", "id": task_id, "t": cfg.since_start()}
    try:
        res = await q.cancel(task_id, "chaos", queue=QUEUE)
    except InvalidState as exc:  # it finished first
        log.write(outcome="refused", error=str(exc)[:120], done=wall_ms(), **common)
    except QueueUnavailable as exc:
        log.write(outcome="unknown", error=str(exc)[:120], **common)
    except QueueError as exc:
        log.write(outcome="error", error=f"{type(exc).__name__}: {str(exc)[:200]}", **common)
    else:
        log.write(outcome="ok", status=res.status, changed=res.changed, done=wall_ms(), **common)


def pick_cancels(op: Op, rng: random.Random, late: list[tuple[float, str]]) -> list[str]:
    """Of a confirmed operation's tasks, those to cancel now; those to cancel later go to ``late``."""
    now: list[str] = []
    if op.saga is not None and rng.random() < sagas.CANCEL_SHARE:
        bisect.insort(late, (time.monotonic() + rng.uniform(*LATE_CANCEL_S), op.saga.saga_id))
    if op.kind != "enqueue" or len(op.tasks) != 1 or op.tasks[0].payload["kind"] != "normal":
        return now
    task_id = op.tasks[0].task_id or ""
    if rng.random() < CANCEL_SHARE:
        if rng.random() < 0.5:
            now.append(task_id)
        else:
            bisect.insort(late, (time.monotonic() + rng.uniform(*LATE_CANCEL_S), task_id))
    return now


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
    late: list[tuple[float, str]] = []  #: (when, id) of the cancels to come
    q = await TaskQueue(settings, consumer=f"producer-{index}").connect()
    log.write(op="start", t=cfg.since_start())
    try:
        n, next_at, rated = 0, time.time(), [0]
        while time.time() < end or cfg.faults_running():
            op = next_op(cfg, index, n, rng, rated)
            n += 1
            known = await attempt(q, op, log, cfg)
            if not known:
                unknown.append(op)
            for task_id in pick_cancels(op, rng, late) if known else []:
                await cancel(q, task_id, log, cfg)
            while late and late[0][0] <= time.monotonic():
                await cancel(q, late.pop(0)[1], log, cfg)
            if known and unknown:
                # Redis answers again: settle one earlier unknown outcome, same ids.
                retry = unknown.pop(0)
                if not await attempt(q, retry, log, cfg):
                    unknown.append(retry)
            next_at += 1 / cfg.rate
            await anyio.sleep(max(0.0, next_at - time.time()))
        for _, task_id in late:
            await cancel(q, task_id, log, cfg)
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
