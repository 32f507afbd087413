"""A hypothesis state machine for schedules: the real queue against an exact model.

The model predicts, for every firing (by one process, or by several at once), which slots fire
a task, which are missed, and where each schedule stands (next and last run, last task id,
fired and missed counts), across replaced and removed schedules, restarted processes and time
jumps that leave slots unfired (the store down, or nothing running), for both catch_up modes.

Time works as in tests/test_state_machine.py: the scripts run on Redis's clock plus the test
clock's offset, on a grid of whole minutes (UNIT_MS). The offset first moves the store's clock
to a whole even minute, so cron slots ("* * * * *", "*/2 * * * *") fall on the grid, and
interval schedules start on it (start_at). Real time runs on underneath by less than a unit per
example, so a slot the model reaches exactly is due and on time, and one a unit or more behind
is more than the 60 s grace late.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from mcp_queue_server import NewSchedule, TaskStatus
from mcp_queue_server.limits import SCHEDULE_GRACE_MS
from tests.queue_machine import QueueMachine, run_machine

UNIT_MS = 60_000
IDS = ["s0", "s1", "s2"]
CONSUMERS = ["p0", "p1", "p2"]
#: kind -> (cron, every in units); cron slots are every unit or every even unit.
KINDS = {"every1": (None, 1), "every2": (None, 2), "cron1": ("* * * * *", None), "cron2": ("*/2 * * * *", None)}


@dataclass
class ModelSchedule:
    kind: str
    catch_up: str
    start: int | None  #: units (interval schedules start there)
    next: int | None
    last_run: int | None = None
    last_task: str | None = None
    fired: int = 0
    missed: int = 0

    def is_slot(self, u: int) -> bool:
        cron, every = KINDS[self.kind]
        if every is not None:
            assert self.start is not None
            return u >= self.start and (u - self.start) % every == 0
        return cron == "* * * * *" or u % 2 == 0

    def after(self, u: int) -> int:
        u += 1
        while not self.is_slot(u):
            u += 1
        return u


@dataclass
class Model:
    schedules: dict[str, ModelSchedule] = field(default_factory=dict)
    tasks: set[str] = field(default_factory=set)


class SchedulesModel(QueueMachine):
    @initialize()
    def open_queues(self) -> None:
        self.start_queues(CONSUMERS, "ss")
        real = self.portal.call(self.queues["p0"].server_now)
        self.base = (real // (2 * UNIT_MS) + 1) * 2 * UNIT_MS  # the next even minute is the model's 0
        self.clock.advance(self.base - real)
        self.now = 0
        self.model = Model()

    def ms(self, units: int) -> int:
        return self.base + units * UNIT_MS

    def task_id(self, sid: str, slot: int) -> str:
        return f"{sid}-{self.ms(slot)}"

    # -- rules -------------------------------------------------------------------------

    @rule(
        sid=st.sampled_from(IDS),
        kind=st.sampled_from(sorted(KINDS)),
        catch_up=st.sampled_from(["skip", "once"]),
        start_in=st.integers(1, 2),
        consumer=st.sampled_from(CONSUMERS),
    )
    def set_schedule(self, sid: str, kind: str, catch_up: str, start_in: int, consumer: str) -> None:
        cron, every = KINDS[kind]
        start = self.now + start_in if every is not None else None
        new = NewSchedule(
            sid,
            "t",
            {},
            cron,
            None if every is None else every * UNIT_MS,
            start_at=None if start is None else self.ms(start),
            catch_up=catch_up,
        )
        got = self.call(consumer, "set_schedule", new)
        old = self.model.schedules.get(sid)
        if old is not None and (old.kind, old.catch_up, old.start) == (kind, catch_up, start):
            assert got.unchanged
            assert got.next_run_at == (None if old.next is None else self.ms(old.next))
            return
        fresh = ModelSchedule(kind, catch_up, start, None)
        fresh.next = start if start is not None else fresh.after(self.now)
        if old is not None:  # a replace keeps the history
            fresh.last_run, fresh.last_task, fresh.fired, fresh.missed = (
                old.last_run,
                old.last_task,
                old.fired,
                old.missed,
            )
        assert (got.unchanged, got.replaced, got.next_run_at) == (False, old is not None, self.ms(fresh.next))
        self.model.schedules[sid] = fresh

    @rule(sid=st.sampled_from(IDS), consumer=st.sampled_from(CONSUMERS))
    def remove_schedule(self, sid: str, consumer: str) -> None:
        assert self.call(consumer, "remove_schedule", sid) == (sid in self.model.schedules)
        self.model.schedules.pop(sid, None)

    @rule(units=st.integers(1, 4))
    def time_passes_and_nobody_fires(self, units: int) -> None:
        """The store was down, or nothing ran: slots pass unfired."""
        self.clock.advance(units * UNIT_MS)
        self.now += units

    @rule(consumer=st.sampled_from(CONSUMERS))
    def one_process_fires(self, consumer: str) -> None:
        tick = self.call(consumer, "fire_due_schedules")
        self._check(tick.firings)

    @rule(firers=st.lists(st.sampled_from(CONSUMERS), min_size=2, max_size=6))
    def several_processes_fire_at_once(self, firers: list[str]) -> None:
        ticks: list[Any] = []

        async def all_at_once() -> None:
            async def fire(c: str) -> None:
                ticks.append(await self.queues[c].fire_due_schedules())

            async with anyio.create_task_group() as tg:
                for c in firers:
                    tg.start_soon(fire, c)

        self.portal.call(all_at_once)
        self._check([f for t in ticks for f in t.firings])

    @rule(consumer=st.sampled_from(CONSUMERS))
    def a_process_restarts(self, consumer: str) -> None:
        self.portal.call(lambda: self.queues[consumer].disconnect(release=False))
        self.queues[consumer] = self.open_queue(consumer)

    def _check(self, firings: list[Any]) -> None:
        """Apply the model's firing of every due schedule; the real firings must be exactly those."""
        expected = {}
        for sid, s in self.model.schedules.items():
            if s.next is None or s.next > self.now:
                continue
            latest = s.next
            while s.after(latest) <= self.now:
                latest = s.after(latest)
            missed = 0
            slot = s.next
            while slot < latest:
                missed += 1
                slot = s.after(slot)
            on_time = latest == self.now  # a unit behind is past the grace
            task = self.task_id(sid, latest) if on_time or s.catch_up == "once" else None
            skipped = missed if task else missed + 1
            if task is not None:
                self.model.tasks.add(task)
                s.fired += 1
                s.last_run, s.last_task = latest, task
            s.missed += skipped
            s.next = s.after(latest)
            expected[sid] = (self.ms(latest), task, skipped)
        got = {f.schedule_id: (f.slot, f.task_id, f.missed) for f in firings}
        assert got == expected  # exactly one firer won each due schedule, with the model's outcome

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def every_schedule_stands_where_the_model_says(self) -> None:
        if not hasattr(self, "portal"):
            return
        page = self.call("p0", "list_schedules", 100)
        assert [s.schedule_id for s in page.schedules] == sorted(self.model.schedules)
        for s in page.schedules:
            m = self.model.schedules[s.schedule_id]
            assert s.next_run_at == (None if m.next is None else self.ms(m.next))
            assert s.last_run_at == (None if m.last_run is None else self.ms(m.last_run))
            assert (s.last_task_id, s.fired, s.missed, s.catch_up) == (m.last_task, m.fired, m.missed, m.catch_up)

    @invariant()
    def each_fired_slot_is_one_queued_task_and_nothing_else_was_enqueued(self) -> None:
        if not hasattr(self, "portal"):
            return
        stats = self.call("p0", "get_queue_stats")
        assert stats.totals.get("enqueued", 0) == stats.available == len(self.model.tasks)
        for task_id in self.model.tasks:
            assert self.call("p1", "get_task", task_id).status == TaskStatus.QUEUED


def test_schedules_behave_like_their_model(redis_url: str) -> None:
    assert SCHEDULE_GRACE_MS < UNIT_MS + 1  # a unit late is past the grace (real time adds a little)
    run_machine(SchedulesModel, redis_url, max_examples=100, steps=25)
