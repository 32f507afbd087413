"""A hypothesis state machine for sagas: the real queue against a model of its sagas.

The model knows every saga task (steps, parallel branches, compensations, on_complete) and
predicts which are delivered, how each ends (ack, fail with or without retry, lease expiry
past the last attempt, cancel), and what the saga does about it: the next step, or the
compensations of the completed steps and branches in reverse order, one at a time, each
exactly once, with the original result; a dead compensation fails the saga and its replay
resumes the chain; cancel stops the running step and compensates. After every step, each
saga's status, its steps' statuses and results, and every task's state and attempt must
match the model. Time follows the test clock (the same grid as tests/test_state_machine.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)

from mcp_queue_server import SagaAction, SagaStep, TaskStatus
from tests.queue_machine import QueueMachine, run_machine

SAGAS = ["S0", "S1"]
CONSUMERS = ["c0", "c1"]
MAX_ATTEMPTS = 2
UNIT_MS = 60_000
LEASE_MS = 2 * UNIT_MS

#: A saga's shape: per step, None (one task) or the number of branches; and which units undo.
Shape = list[int | None]


@dataclass
class MTask:
    state: str = "queued"
    attempt: int = 0
    holder: str | None = None
    lease_until: int = 0
    cancel_requested: bool = False
    saga: str | None = None  #: the saga whose hook this task's end may fire
    branch_of: str | None = None  #: a branch: its parallel step's id


@dataclass
class MSaga:
    shape: Shape
    undo: set[str]  #: units ("i" or "i.j") with a compensation
    status: str = "working"
    cur: int = 0
    wait: str | None = None
    cancel: bool = False
    st: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    branch_done: dict[str, str] = field(default_factory=dict)  #: branch unit -> outcome, until the step ends
    clist: list[str] = field(default_factory=list)
    cpos: int = 0


class SagaModel(QueueMachine):
    @initialize()
    def open_queues(self) -> None:
        self.start_queues(CONSUMERS, "sg", max_attempts=MAX_ATTEMPTS, retry_backoff_ms=0, lease_ms=LEASE_MS)
        self.now = 0
        self.tasks: dict[str, MTask] = {}
        self.sagas: dict[str, MSaga] = {}

    # -- the model of _saga.lua ----------------------------------------------------------

    def new_task(self, task_id: str, saga: str | None, branch_of: str | None = None) -> None:
        assert task_id not in self.tasks
        self.tasks[task_id] = MTask(saga=saga, branch_of=branch_of)

    def start_step(self, sid: str, i: int) -> None:
        saga = self.sagas[sid]
        saga.cur, saga.wait, saga.st[str(i)] = i, f"{sid}.s{i}", "working"
        nb = saga.shape[i - 1]
        if nb is None:
            self.new_task(f"{sid}.s{i}", sid)
            return
        for j in range(1, nb + 1):
            saga.st[f"{i}.{j}"] = "working"
            self.new_task(f"{sid}.s{i}.b{j}", None, branch_of=f"{sid}.s{i}")

    def advance(self, sid: str) -> None:
        saga = self.sagas[sid]
        if saga.cancel:
            return self.compensate(sid, saga.cur)
        if saga.cur == len(saga.shape):
            saga.status, saga.wait = "completed", None
            self.new_task(f"{sid}.done", None)
            return None
        return self.start_step(sid, saga.cur + 1)

    def compensate(self, sid: str, start: int) -> None:
        saga = self.sagas[sid]
        units = []
        for i in range(start, 0, -1):
            nb = saga.shape[i - 1]
            inner = [f"{i}.{j}" for j in range(nb, 0, -1)] if nb else [str(i)]
            units += [u for u in inner if saga.st.get(u) == "completed" and u in saga.undo]
        saga.clist, saga.cpos, saga.status, saga.wait = units, 0, "compensating", None
        self.next_compensation(sid)

    def next_compensation(self, sid: str) -> None:
        saga = self.sagas[sid]
        if saga.cpos >= len(saga.clist):
            saga.status, saga.wait = ("cancelled" if saga.cancel else "compensated"), None
            return
        u = saga.clist[saga.cpos]
        saga.cpos += 1
        saga.wait, saga.st[u] = f"{sid}.c{u}", "compensating"
        self.new_task(f"{sid}.c{u}", sid)

    def ended(self, task_id: str, outcome: str, result: Any = None) -> None:
        """A task reached completed, failed (dead) or cancelled: fire what its end fires."""
        task = self.tasks[task_id]
        if task.branch_of is not None:
            sid, _, rest = task.branch_of.rpartition(".s")
            saga = self.sagas[sid]
            unit = f"{rest}.{task_id.rpartition('.b')[2]}"
            if unit in saga.branch_done:
                return  # a replayed branch: its step ended already
            saga.branch_done[unit] = outcome
            saga.results[unit] = result if outcome == "completed" else {"error": "x"}
            i = int(rest)
            nb = saga.shape[i - 1] or 0
            if saga.wait == task.branch_of and all(f"{i}.{j}" in saga.branch_done for j in range(1, nb + 1)):
                self.step_ended(sid, i, None)
            return
        if task.saga is None or self.sagas[task.saga].wait != task_id:
            return
        sid, saga = task.saga, self.sagas[task.saga]
        kind, unit = task_id[len(sid) + 1], task_id[len(sid) + 2 :]
        if kind == "c":
            if outcome != "completed":
                saga.st[unit], saga.status = "compensation_failed", "failed"
                return
            saga.st[unit] = "compensated"
            saga.status = "compensating"
            return self.next_compensation(sid)
        if outcome != "completed":
            saga.st[unit] = outcome
            return self.compensate(sid, int(unit))
        return self.step_ended(sid, int(unit), result)

    def step_ended(self, sid: str, i: int, result: Any) -> None:
        saga = self.sagas[sid]
        nb = saga.shape[i - 1]
        if nb:
            outcomes = [saga.branch_done[f"{i}.{j}"] for j in range(1, nb + 1)]
            for j, outcome in enumerate(outcomes, 1):
                saga.st[f"{i}.{j}"] = outcome
            if any(o != "completed" for o in outcomes):
                saga.st[str(i)] = "cancelled" if saga.cancel else "failed"
                return self.compensate(sid, i)
            result = [saga.results[f"{i}.{j}"] for j in range(1, nb + 1)]
        saga.st[str(i)], saga.results[str(i)] = "completed", result
        return self.advance(sid)

    def finish(self, task_id: str, state: str, result: Any = None) -> None:
        task = self.tasks[task_id]
        task.state, task.holder, task.cancel_requested = state, None, False
        self.ended(task_id, state, result)

    # -- rules ---------------------------------------------------------------------------

    @rule(
        sid=st.sampled_from(SAGAS),
        shape=st.lists(st.one_of(st.none(), st.integers(2, 3)), min_size=1, max_size=3),
        undo=st.integers(0, 2**9 - 1),
    )
    def start(self, sid: str, shape: Shape, undo: int) -> None:
        units = [
            u for i, nb in enumerate(shape, 1) for u in ([f"{i}.{j}" for j in range(1, nb + 1)] if nb else [str(i)])
        ]
        undone = {u for k, u in enumerate(units) if undo >> k & 1}

        def step(unit: str) -> SagaStep:
            comp = SagaAction("undo", {"u": unit}) if unit in undone else None
            return SagaStep("do", {"u": unit}, comp)

        steps = [
            SagaStep(parallel=[step(f"{i}.{j}") for j in range(1, nb + 1)]) if nb else step(str(i))
            for i, nb in enumerate(shape, 1)
        ]
        got = self.call("c0", "start_saga", sid, steps, on_complete=SagaAction("then", {}))
        known = self.sagas.get(sid)
        assert got.duplicate == (known is not None)
        if known is None:
            self.sagas[sid] = MSaga(shape, undone)
            self.start_step(sid, 1)
        assert got.status == self.sagas[sid].status

    @rule(consumer=st.sampled_from(CONSUMERS))
    def read(self, consumer: str) -> None:
        got = self.call(consumer, "read_messages", count=50)
        queued = {i for i, t in self.tasks.items() if t.state == "queued"}
        assert {t.task_id for t in got} == queued
        for t in got:
            task = self.tasks[t.task_id]
            task.state, task.holder, task.lease_until = "working", consumer, self.now + LEASE_MS
            task.attempt += 1
            assert t.attempt == task.attempt
            if task.saga is not None and t.task_id[len(task.saga) + 1] == "c":
                unit = t.task_id[len(task.saga) + 2 :]
                assert t.payload["saga"]["result"] == self.sagas[task.saga].results[unit]  # the original result
            elif "step" in t.payload.get("saga", {}):  # a step (the on_complete task has no step)
                sid = t.payload["saga"]["saga_id"]
                step = t.payload["saga"]["step"]
                assert t.payload["saga"]["results"] == [self.sagas[sid].results[str(i)] for i in range(1, step)]

    @precondition(lambda self: any(t.state == "working" for t in self.tasks.values()))
    @rule(data=st.data(), how=st.sampled_from(["ack", "ack", "retry", "dead"]))
    def holder_finishes(self, data: st.DataObject, how: str) -> None:
        task_id = data.draw(st.sampled_from(sorted(i for i, t in self.tasks.items() if t.state == "working")))
        task = self.tasks[task_id]
        if how == "ack":
            self.call(task.holder, "acknowledge", task_id, {"by": task_id})
            return self.finish(task_id, "completed", {"by": task_id})
        got = self.call(task.holder, "fail", task_id, "boom", retry=how == "retry")
        if task.cancel_requested:
            assert got.status == TaskStatus.CANCELLED
            return self.finish(task_id, "cancelled")
        if how == "retry" and task.attempt < MAX_ATTEMPTS:
            assert got.status == TaskStatus.QUEUED
            task.state, task.holder = "queued", None
            return None
        assert got.status == TaskStatus.FAILED
        return self.finish(task_id, "failed")

    @rule()
    def leases_expire(self) -> None:
        self.clock.advance(3 * UNIT_MS)
        self.now += 3 * UNIT_MS
        self.call("c0", "recover")
        for task_id, task in sorted(self.tasks.items()):
            if task.state != "working" or task.lease_until > self.now:
                continue
            if task.cancel_requested:
                self.finish(task_id, "cancelled")
            elif task.attempt >= MAX_ATTEMPTS:
                self.finish(task_id, "failed")
            else:
                task.state, task.holder = "queued", None

    @rule(sid=st.sampled_from(SAGAS))
    def cancel(self, sid: str) -> None:
        saga = self.sagas.get(sid)
        if saga is None:
            return
        got = self.portal.call(lambda: self.queues["c0"].cancel_many([sid]))[0]
        if saga.status != "working" or saga.cancel:
            assert not got.changed
            return
        assert got.changed
        saga.cancel = True
        assert saga.wait is not None
        nb = saga.shape[saga.cur - 1]
        # A parallel step's unfinished branches (a branch replayed after it ended no longer counts).
        ids = (
            [f"{saga.wait}.b{j}" for j in range(1, nb + 1) if f"{saga.cur}.{j}" not in saga.branch_done]
            if nb
            else [saga.wait]
        )
        for task_id in ids:
            task = self.tasks[task_id]
            if task.state == "queued":
                self.finish(task_id, "cancelled")
            elif task.state == "working":
                task.cancel_requested = True
        assert got.status == ("cancel_requested" if saga.status == "working" else saga.status)

    @precondition(lambda self: any(t.state == "failed" for t in self.tasks.values()))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(i for i, t in self.tasks.items() if t.state == "failed")))
        self.call("c0", "replay_dlq", [task_id])
        task = self.tasks[task_id]
        task.state, task.attempt = "queued", 0
        if task.saga is not None and self.sagas[task.saga].wait == task_id:  # a dead compensation: resumable
            pass

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def sagas_match_the_model(self) -> None:
        if not hasattr(self, "sagas"):
            return
        for sid, saga in self.sagas.items():
            info = self.call("c0", "get_task", sid)
            assert info.status == saga.status, sid
            assert info.saga is not None
            assert info.saga.waiting_on == saga.wait, sid
            for step in info.saga.steps:
                assert step.status == saga.st.get(str(step.step), "pending"), (sid, step)
                if step.status in ("completed", "compensating", "compensated"):
                    assert step.result == saga.results[str(step.step)]
                for b in step.branches or []:
                    assert b.status == saga.st.get(f"{step.step}.{b.branch}", "pending"), (sid, b)

    @invariant()
    def tasks_match_the_model(self) -> None:
        if not hasattr(self, "tasks"):
            return
        for task_id, task in self.tasks.items():
            info = self.call("c0", "get_task", task_id)
            assert (str(info.status), info.attempt) == (task.state, task.attempt), task_id


def test_sagas_behave_like_their_model(redis_url: str) -> None:
    run_machine(SagaModel, redis_url, max_examples=200, steps=30)
