"""Figures, targets, reporting and the small helpers every workload shares."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mcp_queue_server import Settings

Direction = Literal["higher", "lower"]


@dataclass(frozen=True, kw_only=True)
class Target:
    """An absolute bound on the median and/or a bound on the ratio to the baseline."""

    value: float | None = None  #: median >= value (higher is better) or <= value (lower)
    ratio: float | None = None  #: ratio >= this (higher) or <= this (lower)
    delta: float | None = None  #: median - baseline <= this
    text: str = ""

    def met(self, median: float, baseline: float | None, direction: Direction) -> bool:
        ratio = median / baseline if baseline else None
        ok = True
        if self.delta is not None and baseline is not None:
            ok &= median - baseline <= self.delta
        if self.value is not None:
            ok &= median >= self.value if direction == "higher" else median <= self.value
        if self.ratio is not None and ratio is not None:
            ok &= ratio >= self.ratio if direction == "higher" else ratio <= self.ratio
        return ok


@dataclass
class Figure:
    """One reported figure: our median beside the same run's baseline median.

    ``ratio`` is always ``median / baseline_median``: for a rate (higher is better)
    above 1 is faster than the floor; for a latency or memory (lower is better) above 1
    is slower or bigger.
    """

    name: str
    unit: str
    median: float
    min: float
    max: float
    reps: int
    baseline_name: str | None
    baseline_median: float | None
    ratio: float | None
    better: Direction = "higher"
    target: str | None = None
    met: bool | None = None
    baseline_min: float | None = None
    baseline_max: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


def make_figure(
    name: str,
    unit: str,
    values: Sequence[float],
    baseline_name: str | None = None,
    baseline: Sequence[float] = (),
    *,
    better: Direction = "higher",
    target: Target | None = None,
    **extra: Any,
) -> Figure:
    """Median/min/max of ``values``, the baseline's median and the ratio between them."""
    med = statistics.median(values)
    base = statistics.median(baseline) if baseline else None
    ratio = med / base if base else None
    return Figure(
        name=name,
        unit=unit,
        median=round(med, 3),
        min=round(min(values), 3),
        max=round(max(values), 3),
        reps=len(values),
        baseline_name=baseline_name,
        baseline_median=None if base is None else round(base, 3),
        ratio=None if ratio is None else round(ratio, 3),
        better=better,
        target=target.text if target else None,
        met=target.met(med, base, better) if target else None,
        baseline_min=round(min(baseline), 3) if baseline else None,
        baseline_max=round(max(baseline), 3) if baseline else None,
        extra=extra,
    )


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(math.ceil(q * len(ordered)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def payload(i: int = 0) -> dict[str, Any]:
    """A no-op task's payload: about 200 bytes of JSON, like the research figures."""
    return {"doc": f"doc-{i:08d}", "op": "noop", "step": i, "text": "lorem ipsum dolor sit amet " * 5, "tags": ["a"]}


PAYLOAD_BYTES = len(json.dumps(payload(), separators=(",", ":")))


def payload_text(i: int = 0) -> str:
    return json.dumps(payload(i), separators=(",", ":"))


def bench_settings(redis_url: str, prefix: str | None = None, **overrides: Any) -> Settings:
    """Settings isolated by a unique key prefix; no environment read beyond the defaults."""
    return Settings(
        redis_url=redis_url,
        key_prefix=prefix or new_prefix(),
        data_dir=Path("/nonexistent-bench-data-dir"),
        **overrides,
    )


def new_prefix() -> str:
    return f"bench{uuid.uuid4().hex[:10]}"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Report:
    """Collects figures; prints one JSON object per line on stdout as they come."""

    def __init__(self, *, stream: Any = None) -> None:
        self.figures: list[Figure] = []
        self.meta: dict[str, Any] = {}
        self._stream = stream if stream is not None else sys.stdout

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(json.dumps(figure.as_json()), file=self._stream, flush=True)
        log(f"  {figure.name}: {_fmt(figure.median)} {figure.unit} (floor {_fmt(figure.baseline_median)}, "
            f"ratio {_fmt(figure.ratio)}){_status(figure)}")  # fmt: skip
        if "bound_tasks_per_s" in figure.extra:
            log(f"    one client with no Python work at all tops out near {_fmt(figure.extra['bound_tasks_per_s'])} "
                f"tasks/s (bare round trip, Redis's share replaced by our script's)")  # fmt: skip
        if "bound_ratio_with_client_check" in figure.extra:
            log(f"    the client's outputSchema check (jsonschema) costs {figure.extra['client_check_us_per_task']} "
                f"us/task: with a server as cheap as echo the ratio tops out near "
                f"{_fmt(figure.extra['bound_ratio_with_client_check'])}")  # fmt: skip
        if "bound_ratio_with_queue_call" in figure.extra:
            log(f"    the queue calls alone cost {figure.extra['queue_call_cpu_us_per_task']} us/task in one process: "
                f"with the rest as cheap as echo the ratio stays above "
                f"{_fmt(figure.extra['bound_ratio_with_queue_call'])}")  # fmt: skip
        if "redis_cpu_us_per_task" in figure.extra:
            log(f"    Redis CPU {figure.extra['redis_cpu_us_per_task']} us/task: one Redis tops out near "
                f"{_fmt(figure.extra['redis_bound_tasks_per_s'])} tasks/s")  # fmt: skip
        return figure

    def table(self) -> str:
        rows = [["figure", "median", "min..max", "unit", "baseline (same run)", "ratio", "target", "met"]]
        for f in self.figures:
            base = "" if f.baseline_name is None else f"{f.baseline_name}: {_fmt(f.baseline_median)}"
            rows.append([
                f.name,
                _fmt(f.median),
                f"{_fmt(f.min)}..{_fmt(f.max)}",
                f.unit,
                base,
                _fmt(f.ratio),
                f.target or "",
                "" if f.met is None else ("yes" if f.met else "NO"),
            ])  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        doc = {"meta": self.meta, "figures": [f.as_json() for f in self.figures]}
        path.write_text(json.dumps(doc, indent=2) + "\n")


def _status(f: Figure) -> str:
    return "" if f.met is None else (" [target met]" if f.met else " [target MISSED]")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
