"""A saga's steps and compensations are worked in the trace of the call that started it: the
saga stores the caller's context and every task it creates carries it."""

from __future__ import annotations

import mcp_queue_server.tracing as tracing
from mcp_queue_server import SagaAction, SagaStep, TaskQueue
from mcp_queue_server.core import codec
from tests import test_traces
from tests.conftest import QueueFactory
from tests.test_traces import Traced, attrs, child_of

traced = test_traces.traced  # the in-memory exporter fixture


async def test_a_sagas_steps_and_compensations_are_worked_in_the_trace_that_started_it(
    make_queue: QueueFactory, traced: Traced
) -> None:
    producer: TaskQueue = await make_queue("producer")
    worker: TaskQueue = await make_queue("w1", max_attempts=1)
    undo = SagaAction("undo", {})
    with traced.tracer.start_as_current_span("producer agent"):
        await producer.start_saga("s", [SagaStep("book", {}, compensate=undo), SagaStep("pay", {})])
    (book,) = await worker.read_tasks(1)
    await worker.ack(book.task_id, {"booked": True})
    (pay,) = await worker.read_tasks(1)
    await worker.fail(pay.task_id, "card declined", retry=False)
    (comp,) = await worker.read_tasks(1)
    await worker.ack(comp.task_id)

    started = traced.one("start_saga default")
    assert child_of(started, traced.one("producer agent"))
    worked = {attrs(s)["messaging.message.id"]: s for s in traced.spans("process default")}
    assert set(worked) == {"s.s1", "s.s2", "s.c1"}
    assert all(child_of(span, started) for span in worked.values())


async def test_without_a_tracer_provider_a_sagas_tasks_carry_no_trace(queue: TaskQueue) -> None:
    assert not tracing.enabled()
    elsewhere = Traced()
    with elsewhere.tracer.start_as_current_span("someone else's span"):
        await queue.start_saga("s", [SagaStep("book", {})])
    for task_id in ("s", "s.s1"):
        assert await queue.redis.hget(queue.keys("default").task(task_id), codec.TRACE_FIELD) is None
