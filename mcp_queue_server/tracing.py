"""OpenTelemetry traces of a task's life: the one module that imports ``opentelemetry``.

A task carries the W3C trace context of the call that enqueued it (the task hash's ``trace``
field: the propagators' carrier as JSON), and whoever works it continues that trace, in any
process: a span for the enqueue (or fanout), one per delivery (attempt, holder, lease; open
until the holder settles it in this process; checkpoints and lease renewals are its
events), and one for the ack or failure, each linked to the call that did it (a worker
agent's ``read_tasks``, the MCP SDK's ``tools/call`` span) when that call is in another trace.

Off unless a tracer provider is configured (the global one, e.g. by :func:`configure_from_env`
with the ``[otel]`` extra, or :func:`use_provider`): then :func:`enabled` is False, nothing is
written to or read from the task, and every helper here returns a shared no-op at the cost of
one check.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context as Context
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, Tracer, TracerProvider
from opentelemetry.trace import Span as Span

logger = logging.getLogger(__name__)

#: The span attributes' namespace for what is the queue's own (messaging.* is OpenTelemetry's).
NS = "mcp_queue"
_SYSTEM = "mcp_queue_server"
#: Delivery spans one process keeps open at most: the oldest are ended ("untracked") past it,
#: so a holder that never settles (its agent went away) costs bounded memory.
MAX_OPEN_DELIVERIES = 10_000

_provider: TracerProvider | None = None  # use_provider(): a provider of our own, not the global one
_tracer: Tracer | None = None


def use_provider(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` instead of the global one (an embedding application's or a test's);
    None goes back to the global provider."""
    global _provider, _tracer
    _provider, _tracer = provider, None


def enabled() -> bool:
    """A tracer provider is configured (else the OpenTelemetry API is a no-op, and so is this module)."""
    if _provider is not None:
        return True
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _get_tracer() -> Tracer:
    global _tracer
    if _tracer is None:
        _tracer = (_provider or trace.get_tracer_provider()).get_tracer(_SYSTEM)
    return _tracer


# -- carriers: the context stored with a task ----------------------------------------------


def carrier_of(ctx: Context | None = None) -> str:
    """The current (or ``ctx``'s) trace context as the task's ``trace`` field ("" when none)."""
    from opentelemetry import propagate  # loads the propagators' entry points: only once traced

    out: dict[str, str] = {}
    propagate.inject(out, context=ctx)
    return json.dumps(out, separators=(",", ":")) if out else ""


def context_of(carrier: str | bytes | None) -> Context | None:
    """The context a task's ``trace`` field stored, or None (absent or unreadable)."""
    if not carrier:
        return None
    from opentelemetry import propagate

    try:
        fields = json.loads(carrier)
        ctx = propagate.extract(fields) if isinstance(fields, dict) else None
    except (ValueError, TypeError):
        return None
    if ctx is None or not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def _caller() -> SpanContext | None:
    """The span of the call doing this, if it is traced."""
    here = trace.get_current_span().get_span_context()
    return here if here.is_valid else None


def _links(caller: SpanContext | None, parent: Context | None) -> list[Link]:
    """A link to the calling span when the new span is parented in another trace."""
    if (
        caller is None
        or parent is None
        or trace.get_current_span(parent).get_span_context().trace_id == caller.trace_id
    ):
        return []
    return [Link(caller)]


def _caller_links(parent: Context | None) -> list[Link]:
    return _links(_caller(), parent)


def _attrs(op: str, queue: str, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"messaging.system": _SYSTEM, "messaging.destination.name": queue}
    out.update({k: v for k, v in more.items() if v is not None})
    return out


# -- producing --------------------------------------------------------------------------


class Sending:
    """An enqueue or fanout in progress: ``carrier`` goes with each task it creates."""

    carrier = ""

    def __enter__(self) -> Sending:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        return None

    def tasks(self, task_ids: Sequence[str], **attributes: Any) -> None:
        """Name the tasks it created (and anything else worth an attribute)."""


_NOT_SENDING = Sending()


class _Send(Sending):
    def __init__(self, span: Span) -> None:
        self.span = span
        self.carrier = carrier_of(trace.set_span_in_context(span))

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if isinstance(exc, BaseException):
            self.span.record_exception(exc)
            self.span.set_status(StatusCode.ERROR, str(exc))
        self.span.end()

    def tasks(self, task_ids: Sequence[str], **attributes: Any) -> None:
        if len(task_ids) == 1:
            self.span.set_attribute("messaging.message.id", task_ids[0])
        else:
            self.span.set_attribute("messaging.batch.message_count", len(task_ids))
            self.span.set_attribute(f"{NS}.task_ids", list(task_ids[:100]))
        self.span.set_attributes({f"{NS}.{k}": v for k, v in attributes.items() if v is not None})


def sending(op: str, queue: str, parent: Context | None = None) -> Sending:
    """A PRODUCER span for ``op`` (enqueue, fanout) as a context manager; its ``carrier`` is
    what each new task stores. ``parent`` (a task's stored context) instead of the caller's,
    which is then linked."""
    if not enabled():
        return _NOT_SENDING
    span = _get_tracer().start_span(
        f"{op} {queue}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": _SYSTEM,
            "messaging.destination.name": queue,
            "messaging.operation.type": "send",
        },
        links=_links(_caller(), parent),
    )
    return _Send(span)


# -- consuming ------------------------------------------------------------------------


class Deliveries:
    """The delivery spans of the tasks this process holds, by (queue, task id), open until the
    holder acks, fails or hands back the task here (or it is delivered here again)."""

    def __init__(self) -> None:
        self._open: OrderedDict[tuple[str, str], tuple[Span, str]] = OrderedDict()  # -> (span, holder)

    def __len__(self) -> int:
        return len(self._open)

    def delivered(
        self, queue: str, tasks: Iterable[Any], carriers: Sequence[str | None], holder: str, lease_ms: int
    ) -> None:
        """Open a CONSUMER span per delivered task (``tasks``: core Task records), parented to
        the context the task stored (else the caller's) and linked to the caller's."""
        tracer = _get_tracer()
        caller = _caller()
        parents: dict[str | None, Context | None] = {None: None}  # a batch often shares one context
        for task, carrier in zip(tasks, carriers, strict=True):
            parent = parents[carrier] if carrier in parents else parents.setdefault(carrier, context_of(carrier))
            key = (queue, task.task_id)
            if key in self._open:
                self._end(key, "redelivered", error="the lease ran out; the task was delivered again")
            attributes = {
                "messaging.system": _SYSTEM,
                "messaging.destination.name": queue,
                "messaging.operation.type": "process",
                "messaging.message.id": task.task_id,
                f"{NS}.task_type": task.task_type,
                f"{NS}.attempt": task.attempt,
                f"{NS}.holder": holder,
                f"{NS}.lease_ms": lease_ms,
                f"{NS}.lease_expires_at": task.lease_expires_at,
            }
            if task.parent_task_id is not None:
                attributes[f"{NS}.parent_task_id"] = task.parent_task_id
            span = tracer.start_span(
                f"process {queue}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                links=_links(caller, parent),
            )
            self._open[key] = (span, holder)
        while len(self._open) > MAX_OPEN_DELIVERIES:
            self._end(next(iter(self._open)), "untracked", error="too many open deliveries in this process")

    def span(self, queue: str, task_id: str) -> Span | None:
        got = self._open.get((queue, task_id))
        return None if got is None else got[0]

    def context(self, queue: str, task_id: str) -> Context | None:
        span = self.span(queue, task_id)
        return None if span is None else trace.set_span_in_context(span)

    def event(self, queue: str, task_id: str, name: str, **attributes: Any) -> bool:
        """Add an event to the task's open delivery span; False: none is open here."""
        span = self.span(queue, task_id)
        if span is None:
            return False
        event(span, name, **attributes)
        return True

    def finish(self, queue: str, task_id: str, outcome: str, error: str | None = None) -> None:
        """End the task's delivery span with ``outcome`` (acked, failed, released, ...)."""
        self._end((queue, task_id), outcome, error)

    def finish_all(self, queues: Iterable[str], holder: str, outcome: str) -> None:
        """End the spans of every task ``holder`` held on ``queues`` (it handed them all back)."""
        names = set(queues)
        for key in [k for k, (_, h) in self._open.items() if h == holder and k[0] in names]:
            self._end(key, outcome)

    def _end(self, key: tuple[str, str], outcome: str, error: str | None = None) -> None:
        got = self._open.pop(key, None)
        if got is None:
            return
        span = got[0]
        span.set_attribute(f"{NS}.outcome", outcome)
        if error is not None:
            span.set_status(StatusCode.ERROR, error)
        span.end()


@contextmanager
def settling(
    op: str, queue: str, task_ids: Sequence[str], parents: Mapping[str, Context | None]
) -> Iterator[list[Span]]:
    """One span per task for ``op`` (ack, fail, checkpoint), each a child of ``parents[id]``
    (its delivery span here, else the context the task stored) and linked to the caller."""
    tracer, caller, name = _get_tracer(), _caller(), f"{op} {queue}"
    spans = [
        tracer.start_span(
            name,
            context=parents.get(task_id),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": _SYSTEM,
                "messaging.destination.name": queue,
                "messaging.operation.type": "settle",
                "messaging.message.id": task_id,
            },
            links=_links(caller, parents.get(task_id)),
        )
        for task_id in task_ids
    ]
    try:
        yield spans
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, str(exc))
        raise
    finally:
        for span in spans:
            span.end()


NOT_SETTLING: AbstractContextManager[list[Span]] = nullcontext([])


def event(span: Span, name: str, **attributes: Any) -> None:
    span.add_event(name, {f"{NS}.{k}": v for k, v in attributes.items() if v is not None})


def outcome(span: Span, result: str, error: str | None = None, **attributes: Any) -> None:
    """Say how a settling span ended."""
    span.set_attribute(f"{NS}.outcome", result)
    if attributes:
        span.set_attributes({f"{NS}.{k}": v for k, v in attributes.items() if v is not None})
    if error is not None:
        span.set_status(StatusCode.ERROR, error)


_NOT_ACTIVE = nullcontext()


def active(span: Span | None) -> AbstractContextManager[Any]:
    """Make ``span`` current (a worker's handler runs inside its task's delivery span)."""
    return _NOT_ACTIVE if span is None else trace.use_span(span, end_on_exit=False)


# -- configuration --------------------------------------------------------------------

_ON_ENV = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class TracingSetupError(Exception):
    """The OTEL_* environment asks for tracing this installation cannot do."""


def configure_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Set the global tracer provider from the standard OTEL_* variables, when they ask for
    traces (an OTLP endpoint or OTEL_TRACES_EXPORTER) and no provider is set yet (e.g. by
    ``opentelemetry-instrument``). Needs the ``[otel]`` extra. Returns whether it did.

    Raises:
        TracingSetupError: the variables ask for traces the installed packages cannot export.
    """
    env = os.environ if environ is None else environ
    exporters = [e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()]
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or exporters == ["none"]:
        return False
    if not any(env.get(name) for name in _ON_ENV) or enabled():
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingSetupError(
            "OTEL_* variables ask for traces but the OpenTelemetry SDK is not installed: "
            "pip install 'mcp-queue-server[otel]', or unset them"
        ) from None
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "mcp-queue-server"}
    provider = SdkTracerProvider(resource=Resource.create(attributes))
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    trace.set_tracer_provider(provider)
    return True


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)  # stdout is the MCP stream on stdio
    if name != "otlp":
        raise TracingSetupError(f"OTEL_TRACES_EXPORTER {name!r} is not supported: use otlp, console or none")
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        extra = "opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc" else "mcp-queue-server[otel]"
        raise TracingSetupError(f"the OTLP exporter for {protocol} is not installed: pip install '{extra}'") from None
    return OTLPSpanExporter()
