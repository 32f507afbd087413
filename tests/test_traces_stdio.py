"""One trace across processes: a producer agent's ``enqueue_task`` over stdio, worked by a worker
agent's ``read_tasks``, ``checkpoint`` and ``ack`` through another server process over stdio.

Each server is the real entry point (``python -m mcp_queue_server``) configured only by the
standard OTEL_* variables, exporting OTLP/HTTP to a small collector this test runs; the agents'
own spans come from the SDK's in-memory exporter in the test process (a local provider: the
suite leaves the global one alone). The checked trace is made of spans from all three processes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp_queue_server import Settings
from tests.test_stdio import ROOT, START_S, server_env

WAIT_S = 20


@dataclass
class S:
    """A finished span, whichever process exported it."""

    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    links: list[str]
    attributes: dict[str, Any]
    events: list[str] = field(default_factory=list)


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class Collector:
    """An OTLP/HTTP traces endpoint (POST /v1/traces, protobuf) keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[S] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.add(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, request: ExportTraceServiceRequest) -> None:
        for resource in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                for sp in scope.spans:
                    with self.lock:
                        self.spans.append(
                            S(
                                sp.name,
                                attrs.get("service.name", ""),
                                sp.trace_id.hex(),
                                sp.span_id.hex(),
                                sp.parent_span_id.hex(),
                                [link.span_id.hex() for link in sp.links],
                                {a.key: _value(a.value) for a in sp.attributes},
                                [e.name for e in sp.events],
                            )
                        )

    async def wait_for(self, names: list[str]) -> list[S]:
        with anyio.fail_after(WAIT_S):
            while True:
                with self.lock:
                    seen = [s.name for s in self.spans]
                if all(seen.count(n) >= names.count(n) for n in set(names)):
                    return list(self.spans)
                await anyio.sleep(0.05)  # the servers export in the background: poll, bounded


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    thread = threading.Thread(target=c.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield c
    finally:
        c.server.shutdown()
        c.server.server_close()


def local(span: ReadableSpan) -> S:
    assert span.context is not None
    return S(
        span.name,
        "test agents",
        format(span.context.trace_id, "032x"),
        format(span.context.span_id, "016x"),
        format(span.parent.span_id, "016x") if span.parent else "",
        [format(link.context.span_id, "016x") for link in span.links],
        dict(span.attributes or {}),
    )


def server(
    settings: Settings, consumer: str, service: str, collector: Collector, **extra: str
) -> StdioServerParameters:
    env = server_env(
        settings,
        consumer,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
        OTEL_SERVICE_NAME=service,
        OTEL_BSP_SCHEDULE_DELAY="50",
        **extra,
    )
    return StdioServerParameters(command=sys.executable, args=["-m", "mcp_queue_server"], env=env, cwd=ROOT)


def one(spans: list[S], name: str, **attributes: Any) -> S:
    (found,) = [s for s in spans if s.name == name and s.attributes.items() >= attributes.items()]
    return found


def child_of(child: S, parent: S) -> bool:
    return child.trace_id == parent.trace_id and child.parent_id == parent.span_id


async def test_one_trace_from_an_enqueue_over_stdio_through_a_worker_agent_in_another_server(
    settings: Settings, collector: Collector
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agents = provider.get_tracer("agents")
    with anyio.fail_after(2 * START_S + WAIT_S):
        async with Client(server(settings, "producer", "producer-server", collector, MCP_QUEUE_ROLE="producer")) as p:
            with agents.start_as_current_span("producer agent"):  # the client sends its context in _meta
                enqueued = await p.call_tool("enqueue_task", {"task_type": "summarise", "payload": {"doc": 1}})
                fanned = await p.call_tool(
                    "fanout", {"parent_task_id": "job", "subtasks": [{"task_type": "part", "payload": {"n": 1}}]}
                )
        async with Client(server(settings, "crew1", "worker-server", collector, MCP_QUEUE_ROLE="worker")) as w:
            read = await w.call_tool("read_tasks", {"count": 5, "lease_ms": 60_000})
            assert read.structured_content is not None
            tasks = read.structured_content["tasks"]
            await w.call_tool("checkpoint", {"task_id": tasks[0]["task_id"], "data": {"page": 2}})
            for task in tasks:
                await w.call_tool("ack", {"task_id": task["task_id"], "result": {"ok": True}})
        spans = [local(s) for s in exporter.get_finished_spans()]
        spans += await collector.wait_for(
            [
                *("tools/call enqueue_task", "enqueue default", "tools/call fanout", "fanout default"),
                *("tools/call read_tasks", "tools/call checkpoint", "tools/call ack", "tools/call ack"),
                *("process default", "process default", "ack default", "ack default"),
            ]
        )

    assert enqueued.structured_content is not None
    assert fanned.structured_content is not None
    task_id = enqueued.structured_content["task_id"]
    (child_id,) = fanned.structured_content["subtask_ids"]
    assert [t["task_id"] for t in tasks] == [task_id, child_id]
    assert all("trace" not in t for t in tasks)  # the context travels in the store, not in replies

    agent = one(spans, "producer agent")
    call = one(spans, "tools/call enqueue_task")  # the MCP SDK's span, joined rather than duplicated
    enqueue = one(spans, "enqueue default")
    process = one(spans, "process default", **{"messaging.message.id": task_id})
    ack = one(spans, "ack default", **{"messaging.message.id": task_id})
    assert (call.service, enqueue.service) == ("producer-server", "producer-server")
    assert (process.service, ack.service) == ("worker-server", "worker-server")
    assert child_of(call, agent)
    assert child_of(enqueue, call)
    assert child_of(process, enqueue)
    assert child_of(ack, process)
    assert (
        process.attributes.items()
        >= {
            "mcp_queue.attempt": 1,
            "mcp_queue.holder": "crew1",
            "mcp_queue.lease_ms": 60_000,
            "mcp_queue.outcome": "acked",
        }.items()
    )
    assert process.events == ["checkpoint"]
    # The worker agent's tool calls are its own trace, linked from the task's spans.
    read_call, ack_calls = one(spans, "tools/call read_tasks"), [s for s in spans if s.name == "tools/call ack"]
    assert read_call.trace_id != agent.trace_id
    assert read_call.span_id in process.links
    assert any(c.span_id in ack.links for c in ack_calls)

    # The fanout: its child is worked in the producer's trace, under the fanout span.
    fanout = one(spans, "fanout default")
    child = one(spans, "process default", **{"messaging.message.id": child_id})
    assert child_of(fanout, one(spans, "tools/call fanout"))
    assert child_of(one(spans, "tools/call fanout"), agent)
    assert child_of(child, fanout)
    assert child.attributes["mcp_queue.parent_task_id"] == "job"


def test_a_server_asked_for_an_exporter_it_cannot_run_exits_2_with_one_line(settings: Settings) -> None:
    env = server_env(settings, "x", OTEL_TRACES_EXPORTER="zipkin")
    done = subprocess.run(
        [sys.executable, "-m", "mcp_queue_server"],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_S,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mcp-queue-server: error: OTEL_TRACES_EXPORTER 'zipkin' is not supported: use otlp, console or none"
    ]
