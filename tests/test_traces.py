"""Traces: a task carries the trace context of the call that enqueued it, and whoever works it
continues that trace (deliveries, checkpoints, acks, failures, fanouts), in any process.

The core tests use the OpenTelemetry SDK's in-memory exporter through ``tracing.use_provider``
(the global provider can be set once per process, so the suite leaves it alone); two
TaskQueue instances stand for two processes (each keeps its own open delivery spans). The
stdio tests are in test_traces_stdio.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer

import mcp_queue_server.tracing as tracing
from mcp_queue_server import NewTask, NotLeaseHolder, Task, TaskQueue
from mcp_queue_server.core import codec
from mcp_queue_server.worker.runtime import TaskContext, Worker
from tests.conftest import QueueFactory
from tests.test_worker import Events, running


class Traced:
    """The spans the queue (and the test's agents) finished, by name."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer: Tracer = self.provider.get_tracer("test-agents")

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.spans(name)
        return span


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    tracing.use_provider(t.provider)
    try:
        yield t
    finally:
        tracing.use_provider(None)


def child_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.context is not None
    assert parent.context is not None
    return (
        child.parent is not None
        and child.parent.span_id == parent.context.span_id
        and child.context.trace_id == parent.context.trace_id
    )


def links_to(span: ReadableSpan, other: ReadableSpan) -> bool:
    assert other.context is not None
    return any(link.context.span_id == other.context.span_id for link in span.links)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_task_is_delivered_checkpointed_and_acked_in_the_trace_that_enqueued_it(
    make_queue: QueueFactory, traced: Traced
) -> None:
    producer: TaskQueue = await make_queue("producer")
    worker: TaskQueue = await make_queue("w1", lease_ms=30_000)
    with traced.tracer.start_as_current_span("producer agent"):
        await producer.enqueue("summarise", {"doc": 1}, task_id="t1")
    with traced.tracer.start_as_current_span("worker agent"):
        (task,) = await worker.read_tasks(1)
        await worker.checkpoint("t1", {"page": 3})
        await worker.ack("t1", {"summary": "ok"})

    agent, enqueue = traced.one("producer agent"), traced.one("enqueue default")
    process, ack = traced.one("process default"), traced.one("ack default")
    assert child_of(enqueue, agent)
    assert child_of(process, enqueue)
    assert child_of(ack, process)
    assert attrs(enqueue)["messaging.message.id"] == "t1"
    assert (
        attrs(process).items()
        >= {
            "messaging.message.id": "t1",
            "mcp_queue.attempt": 1,
            "mcp_queue.holder": "w1",
            "mcp_queue.lease_ms": 30_000,
            "mcp_queue.lease_expires_at": task.lease_expires_at,
            "mcp_queue.outcome": "acked",
        }.items()
    )
    assert [e.name for e in process.events] == ["checkpoint"]
    assert attrs(ack)["mcp_queue.outcome"] == "acked"
    # The worker agent's own calls are another trace, linked from the task's spans.
    worker_agent = traced.one("worker agent")
    assert links_to(process, worker_agent)
    assert links_to(ack, worker_agent)
    assert ack.end_time is not None
    assert process.end_time is not None
    assert ack.end_time <= process.end_time


async def test_each_attempt_is_a_delivery_span_and_a_failure_ends_it_in_error(
    make_queue: QueueFactory, traced: Traced
) -> None:
    producer: TaskQueue = await make_queue("producer")
    worker: TaskQueue = await make_queue("w1")
    with traced.tracer.start_as_current_span("producer agent"):
        await producer.enqueue("flaky", {}, task_id="t1")
    await worker.read_tasks(1)
    await worker.fail("t1", "timeout calling the model")
    await worker.read_tasks(1)
    await worker.fail("t1", "still failing", retry=False)

    enqueue = traced.one("enqueue default")
    first, second = traced.spans("process default")
    assert [attrs(s)["mcp_queue.attempt"] for s in (first, second)] == [1, 2]
    assert child_of(first, enqueue)
    assert child_of(second, enqueue)
    assert [attrs(s)["mcp_queue.outcome"] for s in (first, second)] == ["queued", "failed"]
    assert second.status.status_code == StatusCode.ERROR
    assert second.status.description == "still failing"
    fails = traced.spans("fail default")
    assert [child_of(f, p) for f, p in zip(fails, (first, second), strict=True)] == [True, True]


async def test_a_task_settled_through_another_process_continues_its_stored_trace(
    make_queue: QueueFactory, traced: Traced
) -> None:
    producer: TaskQueue = await make_queue("producer")
    reader: TaskQueue = await make_queue("w1")
    other_process: TaskQueue = await make_queue("w1")  # same holder, no open delivery span
    with traced.tracer.start_as_current_span("producer agent"):
        await producer.enqueue("t", {}, task_id="t1")
    await reader.read_tasks(1)
    await other_process.checkpoint("t1", {"step": 1})
    await other_process.ack("t1")

    enqueue = traced.one("enqueue default")
    checkpoint, ack = traced.one("checkpoint default"), traced.one("ack default")
    assert child_of(checkpoint, enqueue)
    assert child_of(ack, enqueue)
    assert [e.name for e in checkpoint.events] == ["checkpoint"]


async def test_a_fanouts_children_are_worked_in_the_parent_tasks_trace(
    make_queue: QueueFactory, traced: Traced
) -> None:
    producer: TaskQueue = await make_queue("producer")
    worker: TaskQueue = await make_queue("w1")
    with traced.tracer.start_as_current_span("producer agent"):
        await producer.enqueue("plan", {}, task_id="job")
    await worker.read_tasks(1)
    with traced.tracer.start_as_current_span("worker agent"):  # its own trace, as an MCP agent's call is
        await worker.fanout("job", [NewTask("part", {"n": n}) for n in range(2)], on_complete=NewTask("merge", {}))
    for task in await worker.read_tasks(5):
        await worker.ack(task.task_id)
    (merge,) = await worker.read_tasks(1)
    await worker.ack(merge.task_id)

    job = next(s for s in traced.spans("process default") if attrs(s)["messaging.message.id"] == "job")
    fanout = traced.one("fanout default")
    assert child_of(fanout, job)
    assert links_to(fanout, traced.one("worker agent"))
    assert attrs(job)["mcp_queue.outcome"] == "fanned_out"
    children = [s for s in traced.spans("process default") if s is not job]
    assert len(children) == 3  # two parts and the on_complete task
    assert all(child_of(s, fanout) for s in children)
    assert {attrs(s)["mcp_queue.parent_task_id"] for s in children if attrs(s)["mcp_queue.task_type"] == "part"} == {
        "job"
    }


async def test_a_worker_runs_its_handler_inside_the_tasks_delivery_span(
    make_queue: QueueFactory, traced: Traced
) -> None:
    queue: TaskQueue = await make_queue("w", real_clock=True)
    with traced.tracer.start_as_current_span("producer agent"):
        await queue.enqueue("work", {}, task_id="t1")
    events = Events()

    async def work(task: Task, ctx: TaskContext) -> str:
        with traced.tracer.start_as_current_span("call the model"):
            await ctx.checkpoint({"half": True})
        return "done"

    async with running(Worker(queue, {"work": work}, on_event=events)):
        await events.wait_for("acked")

    process = traced.one("process default")
    assert child_of(traced.one("call the model"), process)
    assert [e.name for e in process.events] == ["checkpoint"]
    assert attrs(process)["mcp_queue.outcome"] == "acked"
    assert child_of(traced.one("ack default"), process)


async def test_without_a_tracer_provider_nothing_is_stored_and_reads_are_unchanged(
    make_queue: QueueFactory,
) -> None:
    # The caller has a trace of its own (another component traces), but no provider is configured
    # for the queue: the task stores no context and no span is made.
    assert not tracing.enabled()
    elsewhere = Traced()
    queue: TaskQueue = await make_queue("w1")
    with elsewhere.tracer.start_as_current_span("someone else's span"):
        await queue.enqueue("t", {"a": 1}, task_id="t1")
        await queue.fanout("job", [NewTask("part", {}, task_id="p1")])
    for task_id in ("t1", "job", "p1"):
        assert await queue.redis.hget(queue.keys("default").task(task_id), codec.TRACE_FIELD) is None
    tasks = await queue.read_tasks(5)
    assert {t.task_id for t in tasks} == {"t1", "p1"}
    assert all(type(t) is Task for t in tasks)
    await queue.ack_many([t.task_id for t in tasks])
    assert [s.name for s in elsewhere.exporter.get_finished_spans()] == ["someone else's span"]


@pytest.mark.parametrize(
    "env",
    [
        {},  # nothing asks for traces
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_the_otel_variables_turn_tracing_on_only_when_they_ask_for_traces(env: dict[str, str]) -> None:
    assert tracing.configure_from_env(env) is False
    assert not tracing.enabled()


def test_an_exporter_the_installation_cannot_run_is_a_one_line_setup_error() -> None:
    with pytest.raises(tracing.TracingSetupError, match=r"^OTEL_TRACES_EXPORTER 'zipkin' is not supported: use otlp"):
        tracing.configure_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert not tracing.enabled()


async def test_a_delivery_whose_lease_ran_out_ends_when_its_holder_learns_it(
    make_queue: QueueFactory, traced: Traced, clock: Any
) -> None:
    producer: TaskQueue = await make_queue("producer")
    slow: TaskQueue = await make_queue("w1", lease_ms=1_000)
    other: TaskQueue = await make_queue("w2")
    with traced.tracer.start_as_current_span("producer agent"):
        await producer.enqueue("t", {}, task_id="t1")
    await slow.read_tasks(1)
    clock.advance(1_001)
    await other.read_tasks(1)
    with pytest.raises(NotLeaseHolder):
        await slow.extend_lease("t1", 1_000)
    await other.ack("t1")

    lost, done = traced.spans("process default")
    assert [attrs(lost)["mcp_queue.holder"], attrs(done)["mcp_queue.holder"]] == ["w1", "w2"]
    assert [attrs(lost)["mcp_queue.outcome"], attrs(done)["mcp_queue.outcome"]] == ["lease_lost", "acked"]
    assert lost.status.status_code == StatusCode.ERROR
