"""The checker: reconcile what producers and workers logged with what the queue holds.

Like Jepsen's total-queue checker, after a full drain:
  lost        an enqueue logged ok whose task is neither completed nor dead-lettered
              (its record missing, or still not finished)
  unexpected  a stored, delivered or acked task id that no producer ever tried to create
  duplicated  more than one successful "acked" for one id (exactly-once completion)
  recovered   ids whose enqueue had an unknown outcome and that did come out
plus the queue's own promises: poison tasks dead-lettered after exactly max_attempts,
no healthy task dead-lettered, every fanout parent completed exactly once with its
continuation enqueued once and completed, nothing pending, running totals consistent.
Side effects executed more than once are reported, not failed: delivery is at-least-once.

Cancellation: producers cancel a few tasks. A cancelled task is final (neither lost nor
pending). No delivery may start after a cancel's reply came back (cancelled at once, or
cancel_requested: the task then ends cancelled when its holder stops or its lease expires,
it is never delivered again): ``delivered_after_cancel``. A task a cancel reported
cancelled must stay so, and a task that ended cancelled was acked by no one
(``completed_after_cancel``); an ack already in flight may complete a cancel_requested one.

Stolen leases: a delivery of attempt n+1 while the holder of attempt n still held a valid
lease by Redis's clock (and had not given it up with a fail). Times come from the worker
loops' own clocks, which are not faked and share Redis's host, so a server running on a
skewed clock cannot hide a steal behind the times it reports: the lease of attempt n lasts
at least until (read sent + lease) and (checkpoint sent + lease), and attempt n+1 was
delivered by the time its read returned.

Limits: see :mod:`chaos.limit_checks` (held per key at every start, starts per rolling minute,
unkeyed tasks flowing while keyed ones wait).

Holders: stdio workers hold as their process's consumer name (the log's worker name); each
HTTP agent incarnation holds one MCP session on the shared server, ``http/<principal>/<sid>``,
and logs it. Every session must be a holder of its own: one holder logged by two agent
incarnations is a finding (``holders_shared``), as is a holder not of that shape.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chaos import sagas
from chaos import schedules as chaos_schedules
from chaos.common import HTTP_PRINCIPAL, QUEUE, Config, read_logs
from chaos.limit_checks import check_limits
from mcp_queue_server import QueueError, TaskQueue, TaskStatus
from mcp_queue_server.core.models import DeadTask, QueueStats, Schedule, TaskInfo

TERMINAL = {TaskStatus.COMPLETED, TaskStatus.FAILED}
FINAL = TERMINAL | {TaskStatus.CANCELLED, TaskStatus.COMPENSATED}  #: nothing more happens to these
SAMPLE = 10  #: ids listed per finding in the report
#: An HTTP agent's holder: the shared server's consumer name, the principal, 12 hex digits of the session.
SESSION_HOLDER = re.compile(rf"http/{HTTP_PRINCIPAL}/[0-9a-f]{{12}}")


@dataclass
class FinalState:
    tasks: dict[str, TaskInfo]
    stored: set[str]  #: every task id with a record in Redis
    dead: list[DeadTask]
    stats: QueueStats
    schedules: dict[str, Schedule] = field(default_factory=dict)


async def read_final_state(q: TaskQueue, ids: Iterable[str]) -> FinalState:
    """Every task record (found by SCAN over the queue's task keys), the DLQ and the stats."""
    prefix = q.keys(QUEUE).task("")
    stored = set()
    async for key in q.redis.scan_iter(match=prefix + "*", count=1000):
        stored.add(key.decode()[len(prefix) :])
    tasks: dict[str, TaskInfo] = {}
    for task_id in sorted(stored | set(ids)):
        try:
            tasks[task_id] = await q.get_task(task_id, queue=QUEUE)
        except QueueError:
            continue  # not found (lost, or never created)
    dead: list[DeadTask] = []
    cursor: str | None = None
    while True:
        page = await q.inspect_dlq(1000, cursor, newest_first=False, queue=QUEUE)
        dead += page.tasks
        cursor = page.next_cursor
        if cursor is None:
            break
    return FinalState(tasks, stored, dead, await q.get_queue_stats(QUEUE), await chaos_schedules.read_final(q))


@dataclass
class ProducerView:
    """What producers tried and what they were told."""

    attempted: set[str] = field(default_factory=set)
    #: ids an attempt logged ok created: a fanout's parent and children (its continuation is
    #: created by the queue when the parent completes; check_fanout checks that one)
    confirmed: set[str] = field(default_factory=set)
    kinds: dict[str, str] = field(default_factory=dict)
    fanouts: dict[str, dict[str, Any]] = field(default_factory=dict)  #: parent -> children, continuation, ok
    unknown_attempts: int = 0
    unknown_ids: set[str] = field(default_factory=set)
    unknown_landed: int = 0  #: unknown outcomes a later retry found had landed (duplicate=true)
    errors: list[str] = field(default_factory=list)
    #: id -> (status, done: the producer's wall clock in ms when the reply came) of each cancel answered ok
    cancels: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    cancel_outcomes: Counter[str] = field(default_factory=Counter)
    sagas: dict[str, dict[str, Any]] = field(default_factory=dict)  #: saga id -> units, poison, ok

    def add_saga(self, rec: dict[str, Any]) -> None:
        """A start_saga attempt: every id the saga may create is expected (chaos/sagas.py checks them)."""
        self.attempted.update(rec["ids"])
        saga = self.sagas.setdefault(rec["id"], {"units": rec["units"], "poison": rec["poison"], "ok": False})
        saga["ok"] = saga["ok"] or rec["outcome"] == "ok"
        if rec["outcome"] == "unknown":
            self.unknown_attempts += 1
        elif rec["outcome"] == "error":
            self.errors.append(f"{rec['id']}: {rec.get('error')}")

    def add_cancel(self, rec: dict[str, Any]) -> None:
        outcome = rec["outcome"]
        self.cancel_outcomes[f"{outcome}:{rec['status']}" if outcome == "ok" else outcome] += 1
        if outcome == "ok":
            self.cancels.setdefault(rec["id"], []).append((rec["status"], rec["done"]))
        elif outcome == "error":
            self.errors.append(f"cancel {rec['id']}: {rec.get('error')}")

    def add(self, rec: dict[str, Any], seen_unknown: set[str]) -> None:
        ids = [rec["id"]]
        if rec["op"] == "fanout":
            ids += rec["children"]
            self.attempted.add(rec["continuation"])
            self.kinds[rec["id"]] = "parent"
            self.kinds[rec["continuation"]] = "continuation"
            self.kinds.update((c, "child") for c in rec["children"])
            fan = self.fanouts.setdefault(rec["id"], {"children": rec["children"], "continuation": rec["continuation"]})
            fan["ok"] = fan.get("ok", False) or rec["outcome"] == "ok"
        else:
            self.kinds[rec["id"]] = rec["kind"]
        self.attempted.update(ids)
        if rec["outcome"] == "ok":
            self.confirmed.update(ids)
            if rec["id"] in seen_unknown and rec["duplicate"]:
                self.unknown_landed += 1
            seen_unknown.discard(rec["id"])
        elif rec["outcome"] == "unknown":
            self.unknown_attempts += 1
            self.unknown_ids.add(rec["id"])
            seen_unknown.add(rec["id"])
        else:
            self.errors.append(f"{rec['id']}: {rec.get('error')}")


def producer_view(cfg: Config) -> ProducerView:
    view = ProducerView()
    pending_unknown: set[str] = set()
    for rec in read_logs(cfg.logs, "producer-"):
        if rec["op"] in ("enqueue", "fanout"):
            view.add(rec, pending_unknown)
        elif rec["op"] == "cancel":
            view.add_cancel(rec)
        elif rec["op"] == "saga":
            view.add_saga(rec)
    return view


@dataclass
class WorkerView:
    """What workers did and were told."""

    acked: Counter[str] = field(default_factory=Counter)  #: id -> successful completions
    effects: Counter[str] = field(default_factory=Counter)  #: id -> side effects executed
    finished_parent: Counter[str] = field(default_factory=Counter)
    touched: set[str] = field(default_factory=set)
    ack_outcomes: Counter[str] = field(default_factory=Counter)
    fail_outcomes: Counter[str] = field(default_factory=Counter)
    self_crashes: int = 0
    ack_errors: list[str] = field(default_factory=list)
    deliveries: Counter[tuple[str, int]] = field(default_factory=Counter)  #: (id, attempt) -> times
    #: (id, attempt) -> checkpoints saved while holding the lease. Two means two holders of one
    #: lease. (Deliveries alone can repeat an attempt: a graceful release gives the attempt back.)
    worked: Counter[tuple[str, int]] = field(default_factory=Counter)
    delivered: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)  #: id -> (attempt, had checkpoint)
    checkpointed: dict[str, int] = field(default_factory=dict)  #: id -> first attempt that saved one
    #: id -> deliveries {attempt, worker, sent, got} (ms, the worker loop's clock around the read)
    timed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    renewed: dict[tuple[str, int, str], int] = field(default_factory=dict)  #: (id, attempt, worker) -> last ck sent
    failed: set[tuple[str, int]] = field(default_factory=set)  #: (id, attempt) given up by its holder
    holders: dict[str, str] = field(default_factory=dict)  #: HTTP agent incarnation -> its session's holder
    #: deliveries {id, attempt, worker, now (Redis ms), t} in log order, for the limits checks
    starts: list[dict[str, Any]] = field(default_factory=list)
    #: (id, attempt, worker) -> Redis times (ms) at which the worker proved it still held the task
    proofs: dict[tuple[str, int, str], list[int]] = field(default_factory=dict)
    http_started: int = 0  #: HTTP agent incarnations whose session came up
    http_deliveries: int = 0
    http_acked: int = 0


def _note_times(view: WorkerView, rec: dict[str, Any]) -> None:
    """A delivery's or a lease renewal's times, for :func:`stolen_leases`."""
    if "sent" in rec:
        view.timed.setdefault(rec["id"], []).append(rec)
    if rec.get("ck_sent"):
        key = (rec["id"], rec["attempt"], rec["worker"])
        view.renewed[key] = max(rec["ck_sent"], view.renewed.get(key, 0))


def _note_proof(view: WorkerView, rec: dict[str, Any], lease_ms: int) -> None:
    """A checkpoint answered with a renewed lease: the worker held the task at (lease - lease_ms), Redis's clock."""
    if rec["op"] in ("work", "held") and rec.get("lease"):
        view.proofs.setdefault((rec["id"], rec["attempt"], rec["worker"]), []).append(rec["lease"] - lease_ms)


def _note_session(view: WorkerView, rec: dict[str, Any]) -> None:
    """An HTTP agent's session: up (op start), and the holder it leases as (op holder)."""
    if rec["op"] == "start":
        view.http_started += 1
    else:
        view.holders[rec["worker"]] = str(rec.get("holder"))


def worker_view(cfg: Config) -> WorkerView:
    view = WorkerView()
    for rec in read_logs(cfg.logs, "worker-"):
        op = rec["op"]
        if "id" in rec:
            view.touched.add(rec["id"])
        http = rec.get("worker", "").startswith("h")
        _note_proof(view, rec, cfg.lease_ms)
        if op == "deliver":
            view.starts.append(rec)
            view.http_deliveries += http
            view.deliveries[rec["id"], rec["attempt"]] += 1
            view.delivered.setdefault(rec["id"], []).append((rec["attempt"], rec.get("checkpoint", False)))
            _note_times(view, rec)
        elif op == "work":  # logged after a checkpoint saved while holding the lease
            view.worked[rec["id"], rec["attempt"]] += 1
            view.checkpointed[rec["id"]] = min(rec["attempt"], view.checkpointed.get(rec["id"], rec["attempt"]))
            _note_times(view, rec)
        elif op == "effect":
            view.effects[rec["id"]] += 1
        elif op == "ack":
            view.ack_outcomes[rec["outcome"]] += 1
            if rec["outcome"] == "acked":
                view.acked[rec["id"]] += 1
                view.http_acked += http
            elif rec["outcome"] == "error":
                view.ack_errors.append(f"{rec['id']}: {rec.get('error')}")
            if rec.get("finished_parent"):
                view.finished_parent[rec["parent"]] += 1
        elif op == "fail":
            view.failed.add((rec["id"], rec["attempt"]))
            view.fail_outcomes[f"{rec['outcome']}:{rec.get('status')}"] += 1
        elif op == "self_crash":
            view.self_crashes += 1
        elif op in ("start", "holder") and http:
            _note_session(view, rec)
    return view


def _sample(ids: Iterable[str]) -> list[str]:
    return sorted(ids)[:SAMPLE]


def check_fanout(parent: str, fan: dict[str, Any], state: FinalState, workers: WorkerView) -> str | None:
    """Why a fanout is not right, or None."""
    info = state.tasks.get(parent)
    if info is None or info.status != TaskStatus.COMPLETED or info.fanout is None:
        return f"{parent}: parent is {info.status if info else 'missing'}"
    if info.fanout.completed != len(fan["children"]) or set(info.fanout.results) != set(fan["children"]):
        return f"{parent}: {info.fanout.completed} of {len(fan['children'])} children recorded"
    if workers.finished_parent[parent] > 1:
        return f"{parent}: finished {workers.finished_parent[parent]} times"
    cont = state.tasks.get(fan["continuation"])
    if cont is None or cont.status != TaskStatus.COMPLETED:
        return f"{parent}: continuation is {cont.status if cont else 'missing'}"
    if not isinstance(cont.result, dict) or cont.result.get("children") != len(fan["children"]):
        return f"{parent}: continuation saw {cont.result!r}"
    return None


def check_totals(state: FinalState, producers: ProducerView) -> dict[str, Any]:
    """The running totals match the records: nothing enqueued or completed twice."""
    records = [t for t in state.tasks.values() if t.saga is None]  # a saga's own record is no task
    parents = sum(1 for t in records if t.task_id in producers.fanouts or t.task_type == "saga.parallel")
    want = {
        "enqueued": len(records) - parents,
        "completed": sum(1 for t in records if t.status == TaskStatus.COMPLETED),
        "dead_lettered": sum(1 for t in records if t.status == TaskStatus.FAILED),
        "cancelled": sum(1 for t in records if t.status == TaskStatus.CANCELLED),
    }
    got = {k: state.stats.totals.get(k, 0) for k in want}
    return {"consistent": got == want, "stored": got, "records": want}


def stolen_leases(workers: WorkerView, lease_ms: int) -> set[str]:
    """Ids delivered again (attempt n+1) before the lease of attempt n could have expired."""
    stolen = set()
    for task_id, deliveries in workers.timed.items():
        for later in deliveries:
            n = later["attempt"] - 1
            if (task_id, n) in workers.failed:
                continue  # the holder gave it up: a retry may come before its lease would have ended
            earlier = [d for d in deliveries if d["attempt"] == n and d["sent"] <= later["sent"]]
            if not earlier:
                continue  # that delivery's reply was lost (a timeout): nothing to compare
            held = max(earlier, key=lambda d: d["sent"])  # the last holder of attempt n
            renewed = workers.renewed.get((task_id, n, held["worker"]), 0)
            valid_until = max(held["sent"], renewed) + lease_ms
            if later["got"] < valid_until:
                stolen.add(task_id)
    return stolen


def check_leases(workers: WorkerView, tasks: dict[str, TaskInfo]) -> dict[str, set[str]]:
    """Per-delivery promises: one holder per attempt, the last checkpoint handed over, the
    attempt budget respected."""
    double = {i for (i, _), n in workers.worked.items() if n > 1}
    no_checkpoint = {
        i
        for i, seen in workers.delivered.items()
        if i in workers.checkpointed and any(a > workers.checkpointed[i] and not ck for a, ck in seen)
    }
    over = {
        i
        for (i, attempt) in workers.deliveries
        if i in tasks and tasks[i].max_attempts is not None and attempt > (tasks[i].max_attempts or 0)
    }
    return {"double_leased": double, "checkpoint_not_handed_over": no_checkpoint, "over_max_attempts": over}


def check_cancels(producers: ProducerView, workers: WorkerView, tasks: dict[str, TaskInfo]) -> dict[str, set[str]]:
    """A cancelled task is never delivered again, and never completed later but by an ack in flight."""
    after = set()
    for task_id, replies in producers.cancels.items():
        first = min(done for _, done in replies)
        if any(d["sent"] > first for d in workers.timed.get(task_id, [])):
            after.add(task_id)
    completed = {
        i
        for i, replies in producers.cancels.items()
        if any(status == "cancelled" for status, _ in replies)
        and (i not in tasks or tasks[i].status != TaskStatus.CANCELLED)
    }
    completed |= {i for i, t in tasks.items() if t.status == TaskStatus.CANCELLED and workers.acked[i]}
    return {"delivered_after_cancel": after, "completed_after_cancel": completed}


def check(cfg: Config, state: FinalState, extra: dict[str, Any]) -> dict[str, Any]:
    """The report; ``valid`` is true only if every check passes."""
    producers, workers = producer_view(cfg), worker_view(cfg)
    tasks = state.tasks
    lost = {i for i in producers.confirmed if i not in tasks or tasks[i].status not in FINAL}
    missing = {i for i in producers.confirmed if i not in tasks}
    seen = state.stored | {d.task_id for d in state.dead} | workers.touched
    scheduled = chaos_schedules.check(cfg, state.stored, state.schedules)
    unexpected = seen - producers.attempted - scheduled.ids
    duplicated = {i for i, n in workers.acked.items() if n > 1}
    recovered = {i for i in producers.unknown_ids if i in tasks and tasks[i].status in FINAL}
    poison = {i for i, k in producers.kinds.items() if k == "poison" and i in tasks}
    poison_ok = {
        i
        for i in poison
        if tasks[i].status == TaskStatus.FAILED and tasks[i].attempt == tasks[i].max_attempts == cfg.poison_max_attempts
    }
    saga_poison = {sagas.unit_task(i, f["poison"]) for i, f in producers.sagas.items() if f["poison"]}
    healthy_dead = {i for i, t in tasks.items() if t.status == TaskStatus.FAILED and i not in poison | saga_poison}
    saga_report = sagas.check_sagas(cfg, producers.sagas, tasks, workers.acked)
    dead_ids = {d.task_id for d in state.dead}
    completed_and_dead = {i for i in dead_ids if i in tasks and tasks[i].status == TaskStatus.COMPLETED}
    pending = {i for i, t in tasks.items() if t.status not in FINAL}
    s = state.stats
    queue_pending = s.available + s.in_flight + s.delayed + sum(limit.waiting for limit in s.limits)
    fan_bad = [why for p, f in producers.fanouts.items() if p in tasks and (why := check_fanout(p, f, state, workers))]
    fan_lost = [p for p, f in producers.fanouts.items() if f["ok"] and p not in tasks]
    totals = check_totals(state, producers)
    repeated = {i: n for i, n in workers.effects.items() if n > 1}
    leases = check_leases(workers, tasks)
    leases["stolen_leases"] = stolen_leases(workers, cfg.lease_ms)
    leases.update(check_cancels(producers, workers, tasks))
    limit_findings, limits = check_limits(cfg, producers.kinds, workers.starts, workers.proofs)
    leases.update(limit_findings)
    by_holder = Counter(workers.holders.values())
    holders = {
        "holders_shared": {h for h, n in by_holder.items() if n > 1},
        "holders_malformed": {h for h in by_holder if not SESSION_HOLDER.fullmatch(h)},
    }
    findings = {
        "lost": len(lost),
        "unexpected": len(unexpected),
        "duplicated": len(duplicated),
        "pending": len(pending) + queue_pending,
        "healthy_dead_lettered": len(healthy_dead),
        "poison_not_at_max_attempts": len(poison - poison_ok),
        "completed_and_dead_lettered": len(completed_and_dead),
        "fanouts_bad": len(fan_bad) + len(fan_lost),
        "sagas_bad": len(saga_report["bad"]),
        "producer_errors": len(producers.errors),
        "totals_inconsistent": int(not totals["consistent"]),
        "not_drained": int(not extra.get("drained", False)),
        "producers_unfinished": int(not extra.get("producers_finished", False)),
        **{k: len(v) for k, v in leases.items()},
        **{k: len(v) for k, v in holders.items()},
        **scheduled.findings,
    }
    return {
        "valid": not any(findings.values()),
        "findings": findings,
        "tasks": {
            "attempted": len(producers.attempted),
            "enqueued_ok": len(producers.confirmed),
            "stored": len(state.stored),
            "completed": sum(1 for t in tasks.values() if t.status == TaskStatus.COMPLETED),
            "dead_lettered": len(dead_ids),
            "cancelled": sum(1 for t in tasks.values() if t.status == TaskStatus.CANCELLED),
            "fanout_children": sum(1 for k in producers.kinds.values() if k == "child"),
        },
        "lost": len(lost),
        "missing": len(missing),
        "unexpected": len(unexpected),
        "duplicated": len(duplicated),
        "recovered": len(recovered),
        "unknown_enqueue_attempts": producers.unknown_attempts,
        "unknown_enqueues_that_landed": producers.unknown_landed,
        "deliveries": sum(workers.deliveries.values()),
        "side_effects_repeated": len(repeated),
        "side_effects_max_per_task": max(workers.effects.values(), default=0),
        "acks": dict(sorted(workers.ack_outcomes.items())),
        "fails": dict(sorted(workers.fail_outcomes.items())),
        "cancels": dict(sorted(producers.cancel_outcomes.items())),
        "self_crashes": workers.self_crashes,
        "http_agents": {
            "sessions": workers.http_started,
            "holders_seen": len(by_holder),
            "deliveries": workers.http_deliveries,
            "acked": workers.http_acked,
        },
        "poison": {"total": len(poison), "dead_lettered_at_max_attempts": len(poison_ok)},
        "schedules": scheduled.report,
        "healthy_dead_lettered": len(healthy_dead),
        "fanouts": {"total": len(producers.fanouts), "ok": len(producers.fanouts) - len(fan_bad) - len(fan_lost)},
        "sagas": {k: v for k, v in saga_report.items() if k != "bad"},
        "totals": totals,
        "limits": limits,
        "pending": {"records": len(pending), "available": s.available, "in_flight": s.in_flight, "delayed": s.delayed},
        **extra,
        "samples": {
            "lost": _sample(lost),
            "unexpected": _sample(unexpected),
            "duplicated": _sample(duplicated),
            "healthy_dead_lettered": _sample(healthy_dead),
            "fanouts_bad": sorted(fan_bad)[:SAMPLE] + _sample(fan_lost),
            "sagas_bad": saga_report["bad"][:SAMPLE],
            "producer_errors": producers.errors[:SAMPLE],
            "ack_errors": workers.ack_errors[:SAMPLE],
            "pending": _sample(pending),
            **{k: _sample(v) for k, v in leases.items()},
            **{k: _sample(v) for k, v in holders.items()},
            **scheduled.samples,
        },
    }


def group_by_kind(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: defaultdict[str, int] = defaultdict(int)
    for rec in records:
        counts[rec["kind"]] += 1
    return dict(sorted(counts.items()))
