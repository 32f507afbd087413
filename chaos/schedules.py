"""Schedules in the chaos run: recurring tasks firing while the nemesis strikes.

At the start the harness sets a few interval schedules (1 to 2 s, both catch_up modes) on the
run's queue, from a second after the producers start to the end of the fault window. Nothing
else fires them: the MCP servers of the workers (stdio and HTTP) do, each by its own ticker and
on every read, all at once, through Redis kills and pauses. Workers log the ``schedule`` part of
each delivered payload (``op: scheduled``).

The checker then verifies, for every slot of every schedule:

``slots_unfired``        a slot clear of every store outage (by SLOT_MARGIN_S either side of its
                         interval) made no task: a process was running and nobody fired it;
``fired_while_down``     a slot whose next slot also passed while the store was down (so it was
                         missed: nobody could fire it in time) made a task anyway;
``missed_count_wrong``   a task's ``missed`` is not the number of slots without a task just
                         before it (catch_up once: exactly; skip: at most that many);
``slot_tasks_malformed`` a task id of a schedule that is not one of its slots;
``schedules_unfinished`` a schedule not ended after its last slot, or whose fired / missed counts
                         do not add up to its slots and tasks.

There is one task id per slot (``<schedule_id>-<slot ms>``), so a second firing can only be a
duplicate enqueue; the counts above show that none slipped through as a task of its own.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chaos.common import QUEUE, Config, read_jsonl, read_logs
from mcp_queue_server import NewSchedule, QueueError, TaskQueue
from mcp_queue_server.core.models import Schedule

#: (schedule id, every_ms, catch_up)
SCHEDULES = (("sk-1000", 1000, "skip"), ("sk-1500", 1500, "skip"), ("on-1000", 1000, "once"), ("on-2000", 2000, "once"))
START_DELAY_MS = 1000
#: Fault times are logged around the act (before the kill or the pause, after the restart or the
#: resume): a slot counts as clear of an outage only this far from it, and as inside one only
#: this far within it.
SLOT_MARGIN_S = 0.5
INSIDE_MARGIN_S = 0.15
OUTAGES = ("kill_redis", "pause_redis")
FILE = "schedules.json"
FINDINGS = ("slots_unfired", "fired_while_down", "missed_count_wrong", "slot_tasks_malformed", "schedules_unfinished")


async def create(q: TaskQueue, cfg: Config) -> list[dict[str, Any]]:
    """Set the run's schedules: from a second from now to the end of the production window."""
    now = await q.server_now(QUEUE)
    start, end = now + START_DELAY_MS, now + int(cfg.produce_for * 1000)
    made = []
    for sid, every, catch_up in SCHEDULES:
        new = NewSchedule(sid, "scheduled", {"kind": "scheduled"}, every_ms=every, start_at=start, end_at=end)
        await q.set_schedule(dataclasses.replace(new, catch_up=catch_up), queue=QUEUE)
        made.append({"schedule_id": sid, "every_ms": every, "catch_up": catch_up, "start_at": start, "end_at": end})
    (cfg.logs / FILE).write_text(json.dumps(made))
    return made


async def read_final(q: TaskQueue) -> dict[str, Schedule]:
    """The schedules as stored after the run (for :func:`check`)."""
    out = {}
    for sid, _, _ in SCHEDULES:
        try:
            out[sid] = await q.get_schedule(sid, queue=QUEUE)
        except QueueError:
            continue
    return out


def outages(cfg: Config) -> list[tuple[float, float]]:
    """When the store was down (kill or pause), as logged by the nemesis: ms since the epoch."""
    path = cfg.logs / "faults.jsonl"
    rows = read_jsonl(path) if path.exists() else []
    return [
        ((cfg.t0 + r["t"]) * 1000, (cfg.t0 + r["end"]) * 1000)
        for r in rows
        if r.get("op") == "fault" and r["kind"] in OUTAGES
    ]


@dataclass
class ScheduleCheck:
    ids: set[str] = field(default_factory=set)  #: every task id a schedule made (expected, not unexpected)
    findings: dict[str, int] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)


def _missed_logged(cfg: Config) -> dict[str, int]:
    """Task id -> the ``missed`` its payload said (from the workers' delivery logs)."""
    return {r["id"]: int(r["missed"]) for r in read_logs(cfg.logs, "worker-") if r["op"] == "scheduled"}


def check(cfg: Config, stored: Iterable[str], final: dict[str, Schedule]) -> ScheduleCheck:
    path = cfg.logs / FILE
    out = ScheduleCheck()
    if not path.exists():
        return out
    made = json.loads(path.read_text())
    down = outages(cfg)
    logged = _missed_logged(cfg)
    stored = set(stored)
    bad: dict[str, list[str]] = {k: [] for k in FINDINGS}
    per: dict[str, Any] = {}
    for d in made:
        sid, every, start, end = d["schedule_id"], d["every_ms"], d["start_at"], d["end_at"]
        slots = list(range(start, end + 1, every))
        mine = {i for i in stored if i.startswith(sid + "-")}
        out.ids |= mine
        fired = set()
        grid = set(slots)
        for task_id in mine:
            at = task_id[len(sid) + 1 :]
            if not at.isdigit() or int(at) not in grid:
                bad["slot_tasks_malformed"].append(task_id)
            else:
                fired.add(int(at))
        gap, unfired_clear, inside_down = 0, 0, 0
        for slot in slots:
            clear = all(slot + every + SLOT_MARGIN_S * 1000 < a or slot - SLOT_MARGIN_S * 1000 > b for a, b in down)
            inside = any(
                a + INSIDE_MARGIN_S * 1000 <= slot and slot + every <= b - INSIDE_MARGIN_S * 1000 for a, b in down
            )
            inside_down += inside
            task_id = f"{sid}-{slot}"
            if slot not in fired:
                gap += 1
                if clear:
                    unfired_clear += 1
                    bad["slots_unfired"].append(task_id)
                continue
            if inside:
                bad["fired_while_down"].append(task_id)
            said = logged.get(task_id)
            if said is not None and (said > gap or (d["catch_up"] == "once" and said != gap)):
                bad["missed_count_wrong"].append(f"{task_id}: missed {said}, {gap} slots before it made no task")
            gap = 0
        s = final.get(sid)
        if s is None or s.next_run_at is not None or s.fired != len(fired) or s.fired + s.missed != len(slots):
            bad["schedules_unfinished"].append(
                sid
                if s is None
                else f"{sid}: next {s.next_run_at}, fired {s.fired}, missed {s.missed}, "
                f"{len(slots)} slots, {len(fired)} tasks"
            )
        per[sid] = {
            "every_ms": every,
            "catch_up": d["catch_up"],
            "slots": len(slots),
            "tasks": len(fired),
            "slots_without_task": len(slots) - len(fired),
            "slots_inside_outages": inside_down,
            "missed_counted": None if s is None else s.missed,
        }
    out.findings = {k: len(v) for k, v in bad.items()}
    out.samples = {k: sorted(v)[:10] for k, v in bad.items() if v}
    out.report = {
        "schedules": per,
        "slots": sum(p["slots"] for p in per.values()),
        "tasks": sum(p["tasks"] for p in per.values()),
        "store_outages": len(down),
    }
    return out
