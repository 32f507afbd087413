"""A hypothesis state machine for limits: the real queue against an exact model of one limit key.

Tasks carry the limited key ``a``, the unlimited key ``b`` (tracked, never held back) or none.
The model predicts every read exactly: expired leases first (by deadline, then id), each keyed
one delivered again only if its key has room and nobody waits in its line (else it joins the end
of the line); then the line of ``a`` while it has room; then the stream in order, where a task of
``a`` without room (or behind a waiting line) is held back and the read goes on. Slots are freed
by ack, fail (retried or dead-lettered), release, cancellation and expiry; starts are counted per
rolling minute. After every step the queue's limit row (working, waiting, started in the last
minute) must equal the model's, and no delivery may take ``a`` past its limit.

Time: the scripts run on Redis's clock plus the test clock's offset, with real time running on
underneath; the model moves in whole units (every lease and the minute are multiples of UNIT_MS),
so while an example takes far less than a unit of real time, expiry and the rolling minute are
decided in the model exactly as in Redis (see test_state_machine.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)

from mcp_queue_server import NotLeaseHolder, TaskStatus
from tests.queue_machine import QueueMachine, run_machine

IDS = [f"t{i}" for i in range(10)]
KEYS = ["a", "a", "a", "b", None]  #: mostly the limited key
CONSUMERS = ["c0", "c1"]
UNIT_MS = 20_000
LEASE_MS = 2 * UNIT_MS
MINUTE_MS = 60_000
BLOCKED = "blocked"


@dataclass
class ModelTask:
    key: str | None
    state: TaskStatus = TaskStatus.QUEUED
    seq: int = 0  #: place in the stream (queued, not held back)
    attempt: int = 0
    holder: str | None = None
    lease_until: int = 0  #: model time
    lease_score: int = 0  #: the deadline Redis reported: orders expired leases
    held: bool = False  #: held back in its key's line
    cancel_requested: bool = False


@dataclass
class Limit:
    max_working: int | None = None
    max_per_minute: int | None = None


@dataclass
class LimitsModel:
    limit: Limit | None = None
    line: list[str] = field(default_factory=list)  #: held-back ids of key a, in order
    starts: list[int] = field(default_factory=list)  #: model times of a's delivery starts
    wait: int | str | None = None  #: a's score in lwait: a time, BLOCKED, or None (not waiting)


class LimitsMachine(QueueMachine):
    @initialize(max_working=st.sampled_from([1, 2, None]), max_per_minute=st.sampled_from([None, 2, 3]))
    def open_queues(self, max_working: int | None, max_per_minute: int | None) -> None:
        self.start_queues(CONSUMERS, "sml", max_attempts=1000, retry_backoff_ms=0, lease_ms=LEASE_MS)
        self.now = 0
        self.tasks: dict[str, ModelTask] = {}
        self.seq = 0
        self.m = LimitsModel()
        self.set_limit(max_working, max_per_minute)

    # -- the model's limit -------------------------------------------------------------

    def working(self) -> int:
        return sum(1 for t in self.tasks.values() if t.key == "a" and t.state == TaskStatus.WORKING)

    def recent_starts(self) -> list[int]:
        return [s for s in self.m.starts if s > self.now - MINUTE_MS]

    def room(self) -> tuple[bool, int | str]:
        lim = self.m.limit
        if lim is None:
            return True, self.now
        if lim.max_working is not None and self.working() >= lim.max_working:
            return False, BLOCKED
        recent = self.recent_starts()
        if lim.max_per_minute is not None and len(recent) >= lim.max_per_minute:
            return False, min(recent) + MINUTE_MS
        return True, self.now

    def free_slot(self, task: ModelTask) -> None:
        """The task (working, key a) stops working: a line waiting for a slot may move."""
        if task.key == "a" and self.m.wait == BLOCKED:
            event("a freed slot wakes a waiting line")
            self.m.wait = self.now

    def push(self, tid: str) -> None:
        t = self.tasks[tid]
        self.seq += 1
        t.state, t.seq, t.holder, t.held = TaskStatus.QUEUED, self.seq, None, False

    def stop_working(self, tid: str) -> None:
        t = self.tasks[tid]
        was_working = t.state == TaskStatus.WORKING
        t.state = TaskStatus.QUEUED  # placeholder: the caller sets the real end state
        if was_working:
            self.free_slot(t)

    def park(self, tid: str) -> None:
        event(f"held back ({'expired' if self.tasks[tid].attempt else 'new'})")
        t = self.tasks[tid]
        t.state, t.held, t.holder = TaskStatus.QUEUED, True, None
        self.m.line.append(tid)
        self.m.wait = self.room()[1]

    def deliver(self, tid: str, consumer: str, out: list[str]) -> None:
        t = self.tasks[tid]
        t.state, t.holder, t.held = TaskStatus.WORKING, consumer, False
        t.attempt += 1
        t.lease_until = self.now + LEASE_MS
        if t.key == "a":
            self.m.starts.append(self.now)
            lim = self.m.limit
            if lim is not None and lim.max_working is not None:
                assert self.working() <= lim.max_working
        out.append(tid)

    def predict_read(self, consumer: str, count: int) -> list[str]:
        out: list[str] = []
        live = [(t.lease_score, i) for i, t in self.tasks.items() if t.state == TaskStatus.WORKING]
        expired = [i for _, i in sorted(live) if self.tasks[i].lease_until <= self.now][:count]
        for tid in expired:
            t = self.tasks[tid]
            if t.cancel_requested:
                self.stop_working(tid)
                t.state = TaskStatus.CANCELLED
                continue
            if t.key == "a":
                t.state = TaskStatus.QUEUED  # its expired slot is dropped (no wake: this read serves the line)
                ok, _ = self.room()
                if self.m.line or not ok:
                    self.park(tid)
                    continue
            self.deliver(tid, consumer, out)
        if self.m.wait is not None and self.m.wait != BLOCKED and self.m.wait <= self.now:  # type: ignore[operator]
            while len(out) < count:
                if not self.m.line:
                    self.m.wait = None
                    break
                ok, due = self.room()
                if not ok:
                    self.m.wait = due
                    break
                event("delivered from the line")
                self.deliver(self.m.line.pop(0), consumer, out)
        stream = sorted((t.seq, i) for i, t in self.tasks.items() if t.state == TaskStatus.QUEUED and not t.held)
        for _, tid in stream:
            if len(out) >= count:
                break
            t = self.tasks[tid]
            if t.key == "a" and (self.m.line or not self.room()[0]):
                self.park(tid)
                continue
            self.deliver(tid, consumer, out)
        return out

    # -- rules ---------------------------------------------------------------------------

    @rule(tid=st.sampled_from(IDS), key=st.sampled_from(KEYS))
    def enqueue(self, tid: str, key: str | None) -> None:
        got = self.call("c0", "enqueue", "t", {}, task_id=tid, limit_key=key)
        if tid in self.tasks:
            assert got.duplicate
            return
        assert not got.duplicate
        self.tasks[tid] = ModelTask(key)
        self.push(tid)

    @rule(consumer=st.sampled_from(CONSUMERS), count=st.integers(1, 4))
    def read(self, consumer: str, count: int) -> None:
        got = self.call(consumer, "read_messages", count=count)
        expected = self.predict_read(consumer, count)
        assert [t.task_id for t in got] == expected
        for task in got:
            m = self.tasks[task.task_id]
            assert task.attempt == m.attempt
            m.lease_score = task.lease_expires_at

    def held(self) -> list[str]:
        return sorted(i for i, t in self.tasks.items() if t.state == TaskStatus.WORKING)

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data(), by_holder=st.integers(0, 5))
    def ack(self, data: st.DataObject, by_holder: int) -> None:
        tid = data.draw(st.sampled_from(self.held()))
        t = self.tasks[tid]
        assert t.holder is not None
        if not by_holder:
            other = next(c for c in CONSUMERS if c != t.holder)
            with pytest.raises(NotLeaseHolder):  # another's task: refused, its slot stays taken
                self.call(other, "acknowledge", tid)
            return
        self.call(t.holder, "acknowledge", tid)
        self.stop_working(tid)
        t.state = TaskStatus.COMPLETED

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data(), retry=st.booleans())
    def fail(self, data: st.DataObject, retry: bool) -> None:
        tid = data.draw(st.sampled_from(self.held()))
        t = self.tasks[tid]
        got = self.call(t.holder, "fail", tid, "boom", retry=retry)
        self.stop_working(tid)
        if t.cancel_requested:
            t.state = TaskStatus.CANCELLED
        elif retry:
            self.push(tid)
        else:
            t.state = TaskStatus.FAILED
        assert got.status == t.state

    @rule(consumer=st.sampled_from(CONSUMERS))
    def release(self, consumer: str) -> None:
        self.call(consumer, "release")
        held = sorted(
            (t.seq, i) for i, t in self.tasks.items() if t.state == TaskStatus.WORKING and t.holder == consumer
        )
        for _, tid in held:
            t = self.tasks[tid]
            self.stop_working(tid)
            if t.cancel_requested:
                t.state = TaskStatus.CANCELLED
            else:
                t.attempt -= 1
                self.push(tid)

    @rule(tid=st.sampled_from(IDS))
    def cancel(self, tid: str) -> None:
        t = self.tasks.get(tid)
        if t is None or t.state in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
            return
        got = self.call("c0", "cancel", tid)
        if t.state == TaskStatus.WORKING:
            t.cancel_requested = True
            assert got.status == "cancel_requested"
            return
        if t.held:
            self.m.line.remove(tid)
        t.state, t.held = TaskStatus.CANCELLED, False
        assert got.status == "cancelled"

    @rule(
        max_working=st.sampled_from([None, 1, 2]),
        max_per_minute=st.sampled_from([None, 1, 2, 3]),
    )
    def set_limit(self, max_working: int | None, max_per_minute: int | None) -> None:
        self.call("c1", "set_limit", "a", max_working, max_per_minute)
        self.m.limit = None if max_working is None and max_per_minute is None else Limit(max_working, max_per_minute)
        if self.m.line:
            self.m.wait = self.now

    @rule(units=st.integers(1, 3))
    def advance(self, units: int) -> None:
        self.clock.advance(units * UNIT_MS)
        self.now += units * UNIT_MS

    # -- checks --------------------------------------------------------------------------

    @invariant()
    def limit_row_matches(self) -> None:
        if not hasattr(self, "portal"):
            return
        rows = {r.key: r for r in self.call("c0", "get_limits")}
        row = rows.get("a")
        if self.m.limit is None and self.m.wait is None:
            assert row is None
            return
        assert row is not None
        assert (row.working, row.waiting) == (self.working(), len(self.m.line))
        assert row.started_last_minute == len(self.recent_starts())
        if self.m.limit is not None:
            assert (row.max_working, row.max_per_minute) == (self.m.limit.max_working, self.m.limit.max_per_minute)
        b = rows.get("b")
        assert b is None  # never limited, never held back


def test_limits_behave_like_their_model(redis_url: str) -> None:
    run_machine(LimitsMachine, redis_url, max_examples=150, steps=40)
