"""Sagas in the chaos run: producers start sagas (some with a poison step, a few cancelled),
workers run their steps like any task, and the checker verifies every saga.

Per saga confirmed started: it ended ``completed`` with every step (and branch) completed
exactly once and its on_complete task done, or ``compensated`` / ``cancelled`` with every
completed step and branch compensated exactly once, in reverse order (each compensation
delivered only after the previous one was acked), each carrying the original step's result,
and no step started after the one that failed. A saga still working or compensating, or
failed, is a finding (``sagas_bad``).

Negative control ``--split-sagas``: the key ``<base>saga-split`` makes a completed step's
transition stop after its bookkeeping (lua/_saga.lua); the worker that acked the step makes the
second call itself (:func:`advance`), and sometimes crashes between the two calls, as a
coordinator outside Redis would. Those sagas never move on: the checker must report them.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from chaos.common import QUEUE, Config, read_logs
from mcp_queue_server import SagaAction, SagaStep, TaskQueue, TaskStatus
from mcp_queue_server.core.keys import QueueKeys
from mcp_queue_server.core.models import TaskInfo

POISON_SHARE = 0.4  #: sagas with one poison step (or branch)
PARALLEL_SHARE = 0.5  #: sagas whose second step is two parallel branches
CANCEL_SHARE = 0.1  #: sagas the producer cancels a moment after starting them
SPLIT_CRASH_SHARE = 0.3  #: negative control: a worker crashes between the two calls this often
ENDED = {TaskStatus.COMPLETED, TaskStatus.COMPENSATED, TaskStatus.CANCELLED}


@dataclass
class SagaPlan:
    saga_id: str
    steps: list[SagaStep]
    units: list[str]  #: "i" or "i.j", in step order
    poison: str | None  #: the unit that always fails

    def task_ids(self) -> list[str]:
        """Every id the saga may create: steps, branches, parallel parents, compensations, on_complete."""
        ids = {self.saga_id, f"{self.saga_id}.done"}
        for u in self.units:
            step = u.partition(".")[0]
            ids |= {f"{self.saga_id}.s{step}", unit_task(self.saga_id, u), f"{self.saga_id}.c{u}"}
        return sorted(ids)


def unit_task(saga_id: str, unit: str) -> str:
    step, _, branch = unit.partition(".")
    return f"{saga_id}.s{step}.b{branch}" if branch else f"{saga_id}.s{step}"


def plan(index: int, n: int, rng: random.Random) -> SagaPlan:
    saga_id = f"p{index}-{n:05d}-saga"
    units = ["1", "2.1", "2.2", "3"] if rng.random() < PARALLEL_SHARE else ["1", "2", "3"]
    poison = rng.choice(units) if rng.random() < POISON_SHARE else None

    def step(u: str) -> SagaStep:
        payload = {"kind": "saga", "poison": u == poison, "work_ms": rng.randint(10, 40)}
        return SagaStep(f"chaos.saga.{u}", payload, SagaAction("chaos.saga.undo", {"kind": "saga_undo"}))

    steps = [step("1")]
    steps.append(SagaStep(parallel=[step("2.1"), step("2.2")]) if "2.1" in units else step("2"))
    steps.append(step("3"))
    return SagaPlan(saga_id, steps, units, poison)


async def start(q: TaskQueue, p: SagaPlan) -> bool:
    """Start the saga; returns ``duplicate``."""
    got = await q.start_saga(p.saga_id, p.steps, {"by": "chaos"}, on_complete=SagaAction("chaos.saga.done", {}))
    return got.duplicate


# -- negative control ----------------------------------------------------------------------


def _advance_script() -> str:
    lua = resources.files("mcp_queue_server.core") / "lua"
    body = """
local saga, id = ARGV[5], ARGV[6]
local sk = base .. 'sg:' .. saga
local f = redis.call('HMGET', sk, 'wait', 'cur')
if f[1] ~= id or redis.call('HGET', sk, 'st' .. f[2]) ~= 'completed' then return 0 end
saga_advance(sk, saga)
publish_finished()
return 1
"""
    return (lua / "_lib.lua").read_text() + "\n" + (lua / "_saga.lua").read_text() + body


async def split_on(cfg: Config) -> None:
    redis = Redis.from_url(cfg.redis_url)
    try:
        await redis.set(QueueKeys.for_queue(cfg.key_prefix, QUEUE).saga_split, 1)
    finally:
        await redis.aclose()


async def advance(cfg: Config, saga_id: str, step: int) -> None:
    """The second call of a split transition: move the saga past step ``step`` if it waits there."""
    k = QueueKeys.for_queue(cfg.key_prefix, QUEUE)
    redis = Redis.from_url(cfg.redis_url, socket_timeout=cfg.socket_timeout_s)
    try:
        await redis.eval(_advance_script(), 6, *k.script_keys, k.base, "workers", "chaos", "", saga_id,
                         f"{saga_id}.s{step}")  # fmt: skip
    finally:
        await redis.aclose()


# -- checking ------------------------------------------------------------------------------


def check_sagas(
    cfg: Config, plans: dict[str, dict[str, Any]], tasks: dict[str, TaskInfo], acked: Any
) -> dict[str, Any]:
    """Every saga confirmed started, checked; ``plans``: saga id -> the producer's log record.

    Order: compensation k+1 must not be delivered before compensation k's first side effect
    (its ack is sent after that, and k+1 is enqueued only by that ack): times from the worker
    logs (one host, one clock). Results: every delivery of a compensation logs the result it
    carries (op "undo"), which must be the result stored by the step's one ack."""
    first_delivery: dict[str, float] = {}
    first_effect: dict[str, float] = {}
    payloads: dict[str, list[Any]] = defaultdict(list)
    for rec in read_logs(cfg.logs, "worker-"):
        task_id = rec.get("id", "")
        if "-saga." not in task_id:
            continue
        if rec["op"] == "deliver":
            first_delivery[task_id] = min(rec["t"], first_delivery.get(task_id, rec["t"]))
        elif rec["op"] == "effect":
            first_effect[task_id] = min(rec["t"], first_effect.get(task_id, rec["t"]))
        elif rec["op"] == "undo":
            payloads[task_id].append(rec["result"])
    bad: list[str] = []
    counts: dict[str, int] = defaultdict(int)
    for saga_id, rec in sorted(plans.items()):
        if not rec["ok"]:
            continue
        why = _check_one(saga_id, rec, tasks, acked, payloads, first_delivery, first_effect, counts)
        if why:
            bad.append(why)
    return {"bad": bad, **counts}


def _check_one(
    saga_id: str,
    rec: dict[str, Any],
    tasks: dict[str, TaskInfo],
    acked: Any,
    payloads: dict[str, list[Any]],
    first_delivery: dict[str, float],
    first_effect: dict[str, float],
    counts: dict[str, int],
) -> str | None:
    info = tasks.get(saga_id)
    counts["total"] += 1
    if info is None or info.saga is None:
        return f"{saga_id}: missing"
    counts[str(info.status)] += 1
    counts["poisoned"] += rec["poison"] is not None
    if info.status not in ENDED:
        return f"{saga_id}: {info.status} waiting on {info.saga.waiting_on} ({info.error})"
    units: list[str] = rec["units"]
    done = [u for u in units if (t := tasks.get(unit_task(saga_id, u))) and t.status == TaskStatus.COMPLETED]
    twice = [u for u in units if acked[unit_task(saga_id, u)] > 1]
    if twice:
        return f"{saga_id}: steps {twice} completed more than once"
    if info.status == TaskStatus.COMPLETED:
        if done != units or rec["poison"] is not None:
            return f"{saga_id}: completed with {done} of {units} (poison {rec['poison']})"
        if not _completed_once(f"{saga_id}.done", tasks, acked):
            return f"{saga_id}: on_complete acked {acked[f'{saga_id}.done']} times"
        return None
    return _check_compensated(saga_id, units, done, tasks, acked, payloads, first_delivery, first_effect, counts)


def _completed_once(task_id: str, tasks: dict[str, TaskInfo], acked: Any) -> bool:
    """Completed in Redis, and no second ack was told "acked". An ack whose reply a fault cut
    off landed unseen: the worker's re-send was told already_completed, so it logged no
    "acked" (a count of 0 then is right, not a lost completion)."""
    t = tasks.get(task_id)
    return t is not None and t.status == TaskStatus.COMPLETED and acked[task_id] <= 1


def _check_compensated(
    saga_id: str,
    units: list[str],
    done: list[str],
    tasks: dict[str, TaskInfo],
    acked: Any,
    payloads: dict[str, list[Any]],
    first_delivery: dict[str, float],
    first_effect: dict[str, float],
    counts: dict[str, int],
) -> str | None:
    """Compensated or cancelled: every completed unit undone exactly once, in reverse order."""
    order = sorted(done, key=lambda u: tuple(-int(x) for x in u.split(".")))
    comps = [f"{saga_id}.c{u}" for u in order]
    counts["compensations"] += len(comps)
    for c in comps:
        if not _completed_once(c, tasks, acked):
            return f"{saga_id}: compensation {c} acked {acked[c]} times"
    extra = [u for u in units if u not in done and f"{saga_id}.c{u}" in tasks]
    if extra:
        return f"{saga_id}: compensated units {extra} that never completed"
    for before, after in itertools.pairwise(comps):
        if first_delivery.get(after, 0) < first_effect.get(before, float("inf")):
            return f"{saga_id}: {after} delivered before {before} ran"
    for u, c in zip(order, comps, strict=True):
        step = tasks.get(unit_task(saga_id, u))
        carried = payloads.get(c)
        if not carried or step is None or any(r != step.result for r in carried):
            return f"{saga_id}: {c} did not carry the result of {unit_task(saga_id, u)}"
    failed_at = min((int(u.split(".")[0]) for u in units if u not in done), default=len(units) + 1)
    later = [u for u in units if int(u.split(".")[0]) > failed_at and unit_task(saga_id, u) in tasks]
    if later:
        return f"{saga_id}: steps {later} ran after step {failed_at} failed"
    return None
