"""Prometheus metrics of one server process: the registry, the store collector and the tool-latency timer.

At each scrape the queue's statistics are read from the store (so every server process
reports the same, store-wide numbers): depths, in flight, overdue (expired leases not yet
reclaimed), delayed, dead letters, the oldest waiting task's age, consumers, each limit key's
limit and counts, and the store's running totals as counters. Each refresh also keeps a sample
of the totals per queue, in a bounded ring (:class:`Sample`), from which the ``/status`` page
draws recent rates. This process adds its own tool-call latency histogram. Queues reported:
``default``, every queue a tool call named and every queue in the store's registry (at most
:data:`MAX_QUEUES`).

The store is read over a plain connection of its own: with the embedded Redis it does not
register as a user (so it neither starts the Redis nor keeps it running), and a scrape while
the store is down answers ``mcp_queue_store_up 0`` instead of failing.

Served over HTTP by :mod:`mcp_queue_server.observe.http` (``/metrics`` and ``/status``).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import anyio
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mcp_queue_server.core.models import DeadTask, QueueStats
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.errors import QueueError
from mcp_queue_server.limits import check_queue_name
from mcp_queue_server.settings import Settings
from mcp_queue_server.store.open import Store

P = ParamSpec("P")
R = TypeVar("R")

#: Most queues reported (a bound on label cardinality: queue names come from callers).
MAX_QUEUES = 100
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TOTALS = ("enqueued", "completed", "retried", "dead_lettered", "replayed")
#: Samples of the totals kept per queue, and the least time between two of them: the ring
#: covers at least ``HISTORY_SAMPLES * MIN_SAMPLE_GAP_S`` seconds (10 minutes), however
#: often /status and /metrics are asked.
HISTORY_SAMPLES = 300
MIN_SAMPLE_GAP_S = 2.0
#: Newest dead letters shown per queue on /status.
STATUS_DLQ = 5
#: Most limit keys reported per queue (keys with a limit are set by admins; a bound all the same).
MAX_LIMIT_KEYS = 100
#: Per limit key (see TaskQueue.set_limit): LimitInfo field -> help text.
LIMIT_GAUGES = {
    "working": "Tasks of the limit key held by workers now.",
    "waiting": "Tasks of the limit key held back for its limit (still queued).",
    "started_last_minute": "Deliveries of the limit key started in the last 60 s.",
    "max_working": "The limit key's max_working (no series: none).",
    "max_per_minute": "The limit key's max_per_minute (no series: none).",
}


@dataclass(frozen=True, slots=True)
class Sample:
    """The store's running totals of one queue at one refresh (``at``: monotonic seconds)."""

    at: float
    enqueued: int
    completed: int


@dataclass(frozen=True, slots=True)
class QueueView:
    """What ``/status`` shows of one queue: its statistics, recent samples, newest dead letters."""

    stats: QueueStats
    samples: list[Sample]
    dead: list[DeadTask]


class Metrics:
    """The metrics of one server process; :meth:`timed` wraps tools, :meth:`render` answers a scrape."""

    def __init__(
        self, settings: Settings, queues: Iterable[str] = ("default",), *, sample_gap_s: float = MIN_SAMPLE_GAP_S
    ) -> None:
        self.settings = settings
        self.queues = set(queues)
        self.sample_gap_s = sample_gap_s
        self.registry = CollectorRegistry(auto_describe=False)
        self.tool_latency = Histogram(
            "mcp_queue_tool_call_duration_seconds",
            "Time to answer an MCP tool call, by tool and outcome (ok, or error: the tool reported an error).",
            ["tool", "outcome"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.registry.register(_StoreCollector(self))
        #: The last refresh: every reported queue's statistics, and whether the store answered.
        self.snapshot: list[QueueStats] = []
        self.store_up = False
        #: Per queue, the totals at past refreshes (oldest first, bounded).
        self.history: dict[str, deque[Sample]] = {}
        self._scrape_seconds = 0.0
        self._queue: TaskQueue | None = None
        self._lock = anyio.Lock()

    # -- tool latency --------------------------------------------------------------------

    def timed(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """``fn`` (a tool) recording its latency; remembers the queue it named."""
        name = fn.__name__

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            self._remember(kwargs.get("queue"))
            start = time.perf_counter()
            outcome = "error"
            try:
                result = await fn(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                self.tool_latency.labels(name, outcome).observe(time.perf_counter() - start)

        return wrapper

    def _remember(self, queue: Any) -> None:
        if isinstance(queue, str) and queue not in self.queues and len(self.queues) < MAX_QUEUES:
            with contextlib.suppress(QueueError):
                self.queues.add(check_queue_name(queue))

    # -- the store's numbers -------------------------------------------------------------

    async def _store(self) -> TaskQueue:
        if self._queue is None:
            store = Store(self.settings)
            self._queue = await store.queue(consumer=f"{self.settings.consumer}-metrics", join=False)
        return self._queue

    async def refresh(self) -> None:
        """Read every reported queue's statistics from the store (once per scrape)."""
        async with self._lock:
            start = time.perf_counter()
            try:
                store = await self._store()
                # The queues tools named, and every queue in the registry (bounded).
                known = [name for name in await store.known_queues(MAX_QUEUES) if name not in self.queues]
                names = sorted({*self.queues, *known[: max(MAX_QUEUES - len(self.queues), 0)]})
                self.snapshot = await store.stats_of(names)  # 100 queues per round trip
                self.store_up = True
            except (QueueError, OSError, ValueError):
                self.snapshot, self.store_up = [], False
            self._scrape_seconds = time.perf_counter() - start
            self._sample(time.monotonic())

    def _sample(self, now: float) -> None:
        for s in self.snapshot:
            ring = self.history.setdefault(s.queue, deque(maxlen=HISTORY_SAMPLES))
            if ring and now - ring[-1].at < self.sample_gap_s:
                continue
            ring.append(Sample(now, s.totals.get("enqueued", 0), s.totals.get("completed", 0)))

    async def status_view(self) -> list[QueueView]:
        """Refresh, then every reported queue with its samples and newest dead letters (for /status)."""
        await self.refresh()
        views = []
        for s in self.snapshot:
            dead: list[DeadTask] = []
            if s.dead_letter and self._queue is not None:
                with contextlib.suppress(QueueError, OSError, ValueError):
                    dead = (await self._queue.inspect_dlq(STATUS_DLQ, queue=s.queue)).tasks
            views.append(QueueView(s, list(self.history.get(s.queue, ())), dead))
        return views

    async def render(self) -> bytes:
        """The Prometheus text exposition, with fresh queue statistics."""
        await self.refresh()
        return generate_latest(self.registry)

    async def aclose(self) -> None:
        """Close the store connection (a later refresh opens it again)."""
        queue, self._queue = self._queue, None
        if queue is not None:
            await queue.disconnect(release=False)


class _StoreCollector(Collector):
    """The store's numbers from the last refresh, as gauges and counters."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield GaugeMetricFamily("mcp_queue_store_up", "1 when the queue store answered this scrape.", m.store_up)
        yield GaugeMetricFamily(
            "mcp_queue_scrape_duration_seconds", "Time to read the queue statistics.", m._scrape_seconds
        )
        gauges = {
            "waiting": GaugeMetricFamily(
                "mcp_queue_waiting_tasks", "Tasks waiting for a worker.", labels=["queue", "priority"]
            ),
            "delayed": GaugeMetricFamily(
                "mcp_queue_delayed_tasks", "Tasks waiting for their run-at time (delay or retry).", labels=["queue"]
            ),
            "in_flight": GaugeMetricFamily("mcp_queue_in_flight_tasks", "Tasks leased to workers.", labels=["queue"]),
            "overdue": GaugeMetricFamily(
                "mcp_queue_overdue_tasks",
                "Tasks in flight whose lease expired, not yet reclaimed (a worker died or stalled).",
                labels=["queue"],
            ),
            "past_deadline": GaugeMetricFamily(
                "mcp_queue_past_deadline_tasks",
                "Unfinished tasks past their deadline (deadline_ms); late tasks still run.",
                labels=["queue"],
            ),
            "most_past_deadline": GaugeMetricFamily(
                "mcp_queue_most_past_deadline_seconds",
                "How far the most overdue unfinished task is past its deadline (0: none).",
                labels=["queue"],
            ),
            "dead": GaugeMetricFamily(
                "mcp_queue_dead_letter_tasks", "Tasks in the dead-letter queue.", labels=["queue"]
            ),
            "age": GaugeMetricFamily(
                "mcp_queue_oldest_waiting_age_seconds", "Age of the oldest waiting task (0: none).", labels=["queue"]
            ),
            "consumers": GaugeMetricFamily("mcp_queue_consumers", "Consumers in the queue's group.", labels=["queue"]),
        }
        totals = {
            name: CounterMetricFamily(f"mcp_queue_tasks_{name}", f"Tasks {name.replace('_', '-')}.", labels=["queue"])
            for name in TOTALS
        }
        limits = {
            name: GaugeMetricFamily(f"mcp_queue_limit_{name}", text, labels=["queue", "key"])
            for name, text in LIMIT_GAUGES.items()
        }
        for s in m.snapshot:
            gauges["waiting"].add_metric([s.queue, "high"], s.high.available)
            gauges["waiting"].add_metric([s.queue, "low"], s.low.available)
            gauges["delayed"].add_metric([s.queue], s.delayed)
            gauges["in_flight"].add_metric([s.queue], s.in_flight)
            gauges["overdue"].add_metric([s.queue], s.overdue)
            gauges["past_deadline"].add_metric([s.queue], s.past_deadline)
            gauges["most_past_deadline"].add_metric([s.queue], (s.most_past_deadline_ms or 0) / 1000)
            gauges["dead"].add_metric([s.queue], s.dead_letter)
            gauges["age"].add_metric([s.queue], (s.oldest_waiting_age_ms or 0) / 1000)
            gauges["consumers"].add_metric([s.queue], len(s.consumers))
            for name, family in totals.items():
                family.add_metric([s.queue], s.totals.get(name, 0))
            for info in s.limits[:MAX_LIMIT_KEYS]:
                for name, gauge in limits.items():
                    value = getattr(info, name)
                    if value is not None:  # a key without that limit has no such series
                        gauge.add_metric([s.queue, info.key], value)
        yield from gauges.values()
        yield from totals.values()
        yield from limits.values()
