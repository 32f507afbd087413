"""A hypothesis state machine: the real queue against an exact model of it.

The model predicts which tasks each read delivers (expired leases first, in lease
order, then the preferred stream, then the other, each FIFO), every ack/fail
outcome, checkpoints carried to the next delivery, fanouts (a parent finished
exactly once, even by duplicate concurrent acks, and its continuation enqueued
once), recovery, replay and graceful release, and cancellation (a queued or delayed
task or a waiting parent is cancelled at once and never delivered again; a working
one is flagged: its holder's ack still completes it, its fail, release or lease
expiry ends it cancelled); statistics are compared after every step.

Time: the scripts run on Redis's clock plus the test clock's offset, and real time runs on
underneath. The model keeps a grid of whole units (every advance, lease and its own clock
are multiples of UNIT_MS), so while one example takes less than a unit of real time a
lease expires in the model exactly when it does in Redis: expiry is exact. Among leases
that fall due together the order is Redis's (deadline in real ms, then id), taken from the
deadlines the replies report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)

from mcp_queue_server import InvalidState, NewTask, NotLeaseHolder, TaskNotFound, TaskStatus
from tests.queue_machine import QueueMachine, run_machine

IDS = [f"t{i}" for i in range(8)]
PARENTS = ["P0", "P1"]
CHILDREN = [f"{p}.c{i}" for p in PARENTS for i in range(3)]
CONTINUATIONS = [f"{p}.then" for p in PARENTS]
ANY_ID = IDS + CHILDREN + CONTINUATIONS
CONSUMERS = ["c0", "c1", "c2"]
MAX_ATTEMPTS = 2
UNIT_MS = 60_000  #: one step of the model's clock: far longer than one example runs
LEASE_MS = 2 * UNIT_MS


@dataclass
class ModelTask:
    state: TaskStatus
    stream: str
    seq: int = 0
    attempt: int = 0
    holder: str | None = None
    lease_until: int = 0  #: on the model's grid
    lease_score: int = 0  #: the deadline Redis reported (real ms): orders leases due together
    checkpoint: dict[str, int] | None = None
    parent: str | None = None
    cancel_requested: bool = False


@dataclass
class ModelFanout:
    children: list[str]
    pending: set[str]
    state: TaskStatus = TaskStatus.WAITING_CHILDREN
    completed: int = 0
    failed: int = 0
    finished_reports: int = 0  #: acks/fails that said they finished the parent (must end at 1)


class QueueModel(QueueMachine):
    @initialize()
    def open_queues(self) -> None:
        self.start_queues(CONSUMERS, "sm", max_attempts=MAX_ATTEMPTS, retry_backoff_ms=0, lease_ms=LEASE_MS)
        self.now = 0  #: the model's clock (grid units of UNIT_MS)
        self.tasks: dict[str, ModelTask] = {}
        self.fanouts: dict[str, ModelFanout] = {}
        self.seq = 0
        self.totals = {"enqueued": 0, "completed": 0, "retried": 0, "dead_lettered": 0, "replayed": 0, "cancelled": 0}
        self.delayed = 0  #: ids of the delayed tasks cancel_a_delayed_task enqueued

    def push(self, task: ModelTask) -> None:
        self.seq += 1
        task.state, task.seq, task.holder = TaskStatus.QUEUED, self.seq, None

    def expired(self) -> list[str]:
        live = [(t.lease_score, i, t.lease_until) for i, t in self.tasks.items() if t.state == TaskStatus.WORKING]
        return [i for _, i, until in sorted(live) if until <= self.now]

    def dead_letter(self, task: ModelTask) -> bool:
        """Dead-letter a task; True when that finished its fanout parent."""
        task.state, task.holder = TaskStatus.FAILED, None
        self.totals["dead_lettered"] += 1
        return self.child_finished(task, ok=False)

    def ended_by_expiry(self, task: ModelTask, ended: bool) -> None:
        """A read or recover that ended an expired task and so finished its parent: the
        parent's one finishing report, though those replies carry none."""
        if ended:
            self.fanouts[task.parent or ""].finished_reports += 1

    def end_cancelled(self, task: ModelTask) -> bool:
        """End a task cancelled (never delivered again); True when that finished its fanout parent."""
        task.state, task.holder, task.checkpoint, task.cancel_requested = TaskStatus.CANCELLED, None, None, False
        self.totals["cancelled"] += 1
        return self.child_finished(task, ok=False)

    def complete(self, task: ModelTask) -> bool:
        """Complete a task; True when that finished its fanout parent."""
        task.state, task.holder, task.checkpoint = TaskStatus.COMPLETED, None, None
        task.cancel_requested = False
        self.totals["completed"] += 1
        return self.child_finished(task, ok=True)

    def child_finished(self, task: ModelTask, *, ok: bool) -> bool:
        fan = self.fanouts.get(task.parent or "")
        child = next((i for i, t in self.tasks.items() if t is task), "")
        if fan is None or child not in fan.pending:
            return False
        fan.pending.discard(child)
        if ok:
            fan.completed += 1
        else:
            fan.failed += 1
        if fan.state != TaskStatus.WAITING_CHILDREN:
            return False
        if not ok:  # the default policy: a dead-lettered child fails the parent
            fan.state = TaskStatus.FAILED
            return True
        if fan.pending:
            return False
        fan.state = TaskStatus.COMPLETED
        self.totals["completed"] += 1
        parent = task.parent or ""
        cont = self.tasks[f"{parent}.then"] = ModelTask(TaskStatus.QUEUED, "low")
        self.push(cont)
        self.totals["enqueued"] += 1
        return True

    # -- rules -----------------------------------------------------------------------

    @rule(task_id=st.sampled_from(IDS), priority=st.sampled_from([0, 5, 10, 20]))
    def enqueue(self, task_id: str, priority: int) -> None:
        result = self.call("c0", "enqueue", "t", {"id": task_id}, priority=priority, task_id=task_id)
        if task_id in self.tasks:
            assert result.duplicate
            assert result.status == self.tasks[task_id].state
            return
        assert not result.duplicate
        task = self.tasks[task_id] = ModelTask(TaskStatus.QUEUED, "high" if priority >= 10 else "low")
        self.push(task)
        self.totals["enqueued"] += 1

    @rule(consumer=st.sampled_from(CONSUMERS), count=st.integers(1, 4), prefer_high=st.booleans())
    def read(self, consumer: str, count: int, prefer_high: bool) -> None:
        got = self.call(consumer, "read_messages", count=count, prefer_high_priority=prefer_high)
        expected: list[str] = []
        for task_id in self.expired()[:count]:
            task = self.tasks[task_id]
            if task.cancel_requested:
                self.ended_by_expiry(task, self.end_cancelled(task))
            elif task.attempt >= MAX_ATTEMPTS:
                self.ended_by_expiry(task, self.dead_letter(task))
            else:
                expected.append(task_id)
        order = ["high", "low"] if prefer_high else ["low", "high"]
        for stream in order:
            queued = sorted(
                (t.seq, i) for i, t in self.tasks.items() if t.state == TaskStatus.QUEUED and t.stream == stream
            )
            expected += [i for _, i in queued][: count - len(expected)]
        assert [t.task_id for t in got] == expected
        for t in got:
            task = self.tasks[t.task_id]
            task.attempt += 1
            task.state, task.holder, task.lease_until = TaskStatus.WORKING, consumer, self.now + LEASE_MS
            task.lease_score = t.lease_expires_at
            assert (t.attempt, t.checkpoint, t.parent_task_id) == (task.attempt, task.checkpoint, task.parent)

    @rule(consumer=st.sampled_from(CONSUMERS), task_id=st.sampled_from(ANY_ID))
    def ack(self, consumer: str, task_id: str) -> None:
        task = self.tasks.get(task_id)
        expect = _refusal(task, consumer)
        if expect is None:
            result = self.call(consumer, "acknowledge", task_id)
            assert task is not None
            assert result.status == "acked"
            self.check_fanout_report(task, result.fanout, self.complete(task))
        elif task is not None and task.state == TaskStatus.COMPLETED:
            assert self.call(consumer, "acknowledge", task_id).status == "already_completed"
        else:
            with pytest.raises(expect):
                self.call(consumer, "acknowledge", task_id)

    def check_fanout_report(self, task: ModelTask, report: Any, finished: bool) -> None:
        if task.parent is None:
            assert report is None
            return
        fan = self.fanouts[task.parent]
        assert report is not None
        assert (report.parent_task_id, report.completed, report.failed) == (task.parent, fan.completed, fan.failed)
        assert report.finished_parent == finished
        fan.finished_reports += int(finished)

    @rule(consumer=st.sampled_from(CONSUMERS), task_id=st.sampled_from(ANY_ID), retry=st.booleans())
    def fail(self, consumer: str, task_id: str, retry: bool) -> None:
        task = self.tasks.get(task_id)
        expect = _refusal(task, consumer)
        if expect is not None:
            with pytest.raises(InvalidState if task and task.state == TaskStatus.COMPLETED else expect):
                self.call(consumer, "fail", task_id, "boom", retry=retry)
            return
        assert task is not None
        result = self.call(consumer, "fail", task_id, "boom", retry=retry)
        if task.cancel_requested:  # neither retried nor dead-lettered
            assert result.status == TaskStatus.CANCELLED
            finished = self.end_cancelled(task)
            self.check_fanout_report(task, result.fanout, finished)
        elif retry and task.attempt < MAX_ATTEMPTS:
            assert result.status == TaskStatus.QUEUED
            self.push(task)
            self.totals["retried"] += 1
        else:
            assert result.status == TaskStatus.FAILED
            self.dead_letter(task)
            if task.parent is not None:
                fan = self.fanouts[task.parent]
                finished = fan.state == TaskStatus.FAILED and fan.finished_reports == 0
                self.check_fanout_report(task, result.fanout, finished)

    @rule(consumer=st.sampled_from(CONSUMERS), task_id=st.sampled_from(ANY_ID), step=st.integers(0, 3))
    def checkpoint(self, consumer: str, task_id: str, step: int) -> None:
        task = self.tasks.get(task_id)
        data = {"step": step}
        seeding = task is not None and task.state == TaskStatus.QUEUED and task.attempt == 0
        expect = None if seeding else _refusal(task, consumer)
        if expect is not None:
            with pytest.raises(expect):
                self.call(consumer, "checkpoint", task_id, data)
            return
        assert task is not None
        if step % 2:
            renewed = self.call(consumer, "checkpoint", task_id, data)
        else:  # the lease form also says whether the task's cancellation was requested
            lease = self.call(consumer, "checkpoint_lease", task_id, data)
            renewed = None if lease is None else lease.lease_expires_at
            assert lease is None or lease.cancel_requested == task.cancel_requested
        task.checkpoint = data
        if task.state == TaskStatus.WORKING:
            assert renewed is not None
            assert renewed >= task.lease_score
            task.lease_until, task.lease_score = self.now + LEASE_MS, renewed
        else:
            assert renewed is None

    @rule(parent=st.sampled_from(PARENTS), n=st.integers(1, 3))
    def fanout(self, parent: str, n: int) -> None:
        children = [NewTask("c", {"n": i}, task_id=f"{parent}.c{i}") for i in range(n)]
        then = NewTask("merge", {}, task_id=f"{parent}.then")
        result = self.call("c0", "fanout", parent, children, on_complete=then)
        fan = self.fanouts.get(parent)
        if fan is not None:
            assert (result.duplicate, result.subtask_ids) == (True, fan.children)
            return
        ids = [c.task_id for c in children if c.task_id]
        assert (result.duplicate, result.subtask_ids) == (False, ids)
        self.fanouts[parent] = ModelFanout(children=ids, pending=set(ids))
        for child in ids:
            task = self.tasks[child] = ModelTask(TaskStatus.QUEUED, "low", parent=parent)
            self.push(task)
            self.totals["enqueued"] += 1

    @precondition(lambda self: any(t.state == TaskStatus.WORKING for t in self.tasks.values()))
    @rule(data=st.data(), ack=st.booleans(), retry=st.booleans())
    def holder_finishes_a_task(self, data: st.DataObject, ack: bool, retry: bool) -> None:
        """Most random ids are not held by the caller: this rule drives held tasks (fanout
        children among them) to completion or failure."""
        held = sorted(i for i, t in self.tasks.items() if t.state == TaskStatus.WORKING)
        task_id = data.draw(st.sampled_from(held))
        holder = self.tasks[task_id].holder or ""
        if ack:
            self.ack(holder, task_id)
        else:
            self.fail(holder, task_id, retry)

    @precondition(lambda self: any(t.state == TaskStatus.WORKING for t in self.tasks.values()))
    @rule(data=st.data())
    def concurrent_duplicate_acks(self, data: st.DataObject) -> None:
        held = sorted(i for i, t in self.tasks.items() if t.state == TaskStatus.WORKING)
        task_id = data.draw(st.sampled_from(held))
        task = self.tasks[task_id]
        queue = self.queues[task.holder or ""]
        outcomes: list[Any] = []

        async def twice() -> None:
            async def ack() -> None:
                outcomes.append(await queue.acknowledge(task_id))

            async with anyio.create_task_group() as tg:
                tg.start_soon(ack)
                tg.start_soon(ack)

        self.portal.call(twice)
        assert sorted(o.status for o in outcomes) == ["acked", "already_completed"]
        [first] = [o for o in outcomes if o.status == "acked"]
        self.check_fanout_report(task, first.fanout, self.complete(task))

    @rule(ms=st.sampled_from([UNIT_MS, 2 * UNIT_MS, 3 * UNIT_MS, 10 * UNIT_MS]))  # half a lease .. five
    def advance_clock(self, ms: int) -> None:
        self.clock.advance(ms)
        self.now += ms

    @rule()
    def recover(self) -> None:
        report = self.call("c2", "recover")
        requeued, dead = [], []
        for task_id in self.expired():
            task = self.tasks[task_id]
            if task.cancel_requested:
                self.ended_by_expiry(task, self.end_cancelled(task))
            elif task.attempt >= MAX_ATTEMPTS:
                self.ended_by_expiry(task, self.dead_letter(task))
                dead.append(task_id)
            else:
                self.push(task)
                requeued.append(task_id)
        assert (report.requeued, report.dead_lettered) == (requeued, dead)

    @precondition(lambda self: any(t.state == TaskStatus.FAILED for t in self.tasks.values()))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        dead = sorted(i for i, t in self.tasks.items() if t.state == TaskStatus.FAILED)
        task_id = data.draw(st.sampled_from(dead))
        assert self.call("c1", "replay_dlq", [task_id]) == [task_id]
        task = self.tasks[task_id]
        task.attempt = 0
        self.push(task)
        self.totals["replayed"] += 1

    @rule(task_id=st.sampled_from(ANY_ID))
    def replay_of_a_live_task_is_refused(self, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is None or task.state == TaskStatus.FAILED:
            return
        with pytest.raises(InvalidState):
            self.call("c1", "replay_dlq", [task_id])

    @rule(consumer=st.sampled_from(CONSUMERS))
    def release(self, consumer: str) -> None:
        held = [(t.stream != "high", t.seq, i) for i, t in self.tasks.items() if t.holder == consumer]
        assert self.call(consumer, "release", "default") == len(held)
        for _, _, task_id in sorted(held):
            task = self.tasks[task_id]
            if task.cancel_requested:
                self.end_cancelled(task)
            else:
                task.attempt -= 1
                self.push(task)

    @rule(task_id=st.sampled_from(ANY_ID + PARENTS), twice=st.booleans())
    def cancel(self, task_id: str, twice: bool) -> None:
        fan = self.fanouts.get(task_id)
        task = self.tasks.get(task_id)
        state = fan.state if fan is not None else task.state if task is not None else None
        if state is None:
            with pytest.raises(TaskNotFound):
                self.call("c1", "cancel", task_id, "stop")
            return
        if state in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            with pytest.raises(InvalidState):
                self.call("c1", "cancel", task_id, "stop")
            return
        got = self.call("c1", "cancel", task_id, "stop")
        if state == TaskStatus.CANCELLED or (task is not None and task.cancel_requested):
            assert (got.status, got.changed) == (
                "cancelled" if state == TaskStatus.CANCELLED else "cancel_requested",
                False,
            )
            return
        if task is not None and state == TaskStatus.WORKING:
            assert (got.status, got.changed) == ("cancel_requested", True)
            task.cancel_requested = True
        elif task is not None:
            assert (got.status, got.changed) == ("cancelled", True)
            if self.end_cancelled(task):  # this cancel failed its fanout parent; its reply has no report
                self.fanouts[task.parent or ""].finished_reports += 1
        else:  # a waiting parent: cancelled, then its unfinished children (its continuation never runs)
            assert fan is not None
            assert (got.status, got.changed) == ("cancelled", True)
            fan.state = TaskStatus.CANCELLED
            self.totals["cancelled"] += 1
            for child in sorted(fan.pending):
                ctask = self.tasks[child]
                if ctask.state == TaskStatus.WORKING:
                    ctask.cancel_requested = True
                else:
                    self.end_cancelled(ctask)
        if twice:  # repeating a cancel changes nothing
            again = self.call("c2", "cancel", task_id, "again")
            assert (again.status, again.changed) == (got.status, False)

    @precondition(lambda self: any(t.state == TaskStatus.WORKING for t in self.tasks.values()))
    @rule(data=st.data())
    def cancel_a_working_task(self, data: st.DataObject) -> None:
        held = sorted(i for i, t in self.tasks.items() if t.state == TaskStatus.WORKING)
        self.cancel(data.draw(st.sampled_from(held)), twice=False)

    @rule(delay=st.sampled_from([UNIT_MS, 3 * UNIT_MS]))
    def cancel_a_delayed_task(self, delay: int) -> None:
        """A delayed task cancelled before it is due leaves the delayed set and is never delivered."""
        task_id = f"d{self.delayed}"
        self.delayed += 1
        self.call("c0", "enqueue", "t", {}, task_id=task_id, delay_ms=delay)
        self.totals["enqueued"] += 1
        assert self.call("c0", "get_queue_stats").delayed == 1
        got = self.call("c1", "cancel", task_id)
        assert (got.status, got.changed) == ("cancelled", True)
        self.tasks[task_id] = ModelTask(TaskStatus.CANCELLED, "low")
        self.totals["cancelled"] += 1

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def statistics_match_the_model(self) -> None:
        if not hasattr(self, "portal"):
            return
        stats = self.call("c0", "get_queue_stats")
        states = [t.state for t in self.tasks.values()]
        assert stats.available == states.count(TaskStatus.QUEUED)
        assert stats.in_flight == states.count(TaskStatus.WORKING)
        assert stats.overdue == len(self.expired())
        assert stats.dead_letter == states.count(TaskStatus.FAILED)
        assert stats.delayed == 0
        assert stats.totals == {k: v for k, v in self.totals.items() if v}

    @invariant()
    def every_task_has_the_modelled_state_and_attempt(self) -> None:
        if not hasattr(self, "portal"):
            return
        for task_id, task in self.tasks.items():
            info = self.call("c0", "get_task", task_id)
            assert (info.status, info.attempt) == (task.state, task.attempt), task_id
            assert info.lease_holder == task.holder
            assert info.checkpoint == task.checkpoint, task_id
        for parent, fan in self.fanouts.items():
            info = self.call("c0", "get_task", parent)
            assert info.status == fan.state, parent
            assert info.fanout is not None
            assert (info.fanout.completed, info.fanout.failed) == (fan.completed, fan.failed)
            assert fan.finished_reports <= 1


def _refusal(task: ModelTask | None, consumer: str) -> type[Exception] | None:
    if task is None:
        return TaskNotFound
    if task.state == TaskStatus.WORKING and task.holder == consumer:
        return None
    if task.state == TaskStatus.COMPLETED:
        return InvalidState
    return NotLeaseHolder


def test_the_queue_behaves_like_its_model(redis_url: str) -> None:
    run_machine(QueueModel, redis_url, max_examples=200, steps=30)
