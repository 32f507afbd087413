"""The ``/status`` page: what an operator opens first, as HTML that refreshes itself every few seconds.

Per queue: waiting (high / low), delayed, in flight, overdue, dead letters, the oldest waiting
task's age; enqueue and completion rates as an inline SVG chart (from the samples
:class:`~mcp_queue_server.observe.metrics.Metrics` keeps at each refresh); the consumers and
what they hold; each limit key's limit, working and waiting tasks; the newest dead letters. No
script, no external asset: a meta refresh, inline CSS for light and dark
(``prefers-color-scheme``). Everything read from the store (queue,
task and consumer names, types, errors) is data and is escaped.

Also the login form ``/status`` shows a browser without a session when a token is configured.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from html import escape

from mcp_queue_server.core.models import DeadTask, QueueStats
from mcp_queue_server.observe.metrics import QueueView, Sample

REFRESH_S = 5
#: Consumers listed per queue (the busiest first); the rest are counted.
MAX_CONSUMERS = 10
#: Error text shown per dead letter (the tooltip has a little more).
ERROR_CHARS = 100
ERROR_TITLE_CHARS = 1000
#: Samples needed before a chart is drawn (two rates: a line, not a dot).
MIN_CHART_SAMPLES = 3
#: The current rate is measured over about this many seconds of samples.
RATE_WINDOW_S = 60.0
CHART_W, CHART_H, CHART_PAD = 320, 64, 4

_STYLE = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0;
  --card: #f6f8fa; --warn: #9a6700; --bad: #cf222e; --enq: #0969da; --done: #1a7f37; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --line: #3d444d;
    --card: #151b23; --warn: #d29922; --bad: #f85149; --enq: #4493f8; --done: #3fb950; }
}
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; padding: 1.2em;
  background: var(--bg); color: var(--fg); }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
h2 { font-size: 1.15em; margin: 0 0 .6em; word-break: break-all; }
h3 { font-size: .95em; margin: 1em 0 .3em; color: var(--muted); font-weight: 600; }
small, .muted { color: var(--muted); }
a { color: var(--enq); }
.down, .bad { color: var(--bad); }
.warn { color: var(--warn); }
.bad, .warn { font-weight: 600; }
ul.attention { padding-left: 1.2em; margin: .6em 0; }
.queues { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 380px), 1fr));
  gap: 1em; margin-top: 1em; }
section.queue { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 1em;
  min-width: 0; }
dl.figures { display: grid; grid-template-columns: repeat(3, 1fr); gap: .6em; margin: 0; }
dl.figures div { min-width: 0; }
dt { font-size: .8em; color: var(--muted); }
dd { margin: 0; font-size: 1.35em; font-variant-numeric: tabular-nums; }
dd small { font-size: .6em; display: block; }
.chart svg { display: block; width: 100%; height: auto; max-width: 480px; }
.chart .axis { stroke: var(--line); stroke-width: 1; }
.chart .enq { stroke: var(--enq); fill: none; stroke-width: 2; }
.chart .done { stroke: var(--done); fill: none; stroke-width: 2; stroke-dasharray: 5 3; }
.key-enq { color: var(--enq); } .key-done { color: var(--done); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .5em; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: .85em; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
td.id, .id, .error { overflow-wrap: anywhere; }
ul.dead { list-style: none; padding: 0; margin: 0; }
ul.dead li { padding: .35em 0; border-bottom: 1px solid var(--line); }
ul.dead .id { font-weight: 600; }
.error { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85em; color: var(--bad); }
form { margin-top: 1em; display: flex; gap: .5em; flex-wrap: wrap; align-items: center; }
input, button { font: inherit; padding: .4em .6em; border: 1px solid var(--line); border-radius: 6px;
  background: var(--bg); color: var(--fg); }
button { background: var(--enq); color: #fff; border-color: var(--enq); cursor: pointer; }
"""


def _head(title: str, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
    )


def age(ms: int | None) -> str:
    """A duration for people: ``-``, ``850 ms``, ``12.3 s``, ``4 min 5 s``, ``2 h 3 min``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    s = ms // 1000
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# -- rates -------------------------------------------------------------------------------------


def _rates(samples: Sequence[Sample], field: str) -> list[tuple[float, float]]:
    """(time, per minute) between consecutive samples; a total that went down (reset) counts 0."""
    out = []
    for a, b in itertools.pairwise(samples):
        span = b.at - a.at
        if span > 0:
            out.append((b.at, max(getattr(b, field) - getattr(a, field), 0) / span * 60))
    return out


def _current(samples: Sequence[Sample], field: str) -> float:
    """Per minute over the last :data:`RATE_WINDOW_S` of samples (at least the last two)."""
    last = samples[-1]
    first = next((s for s in samples if last.at - s.at <= RATE_WINDOW_S and s is not last), samples[-2])
    span = last.at - first.at
    return max(getattr(last, field) - getattr(first, field), 0) / span * 60 if span > 0 else 0.0


def _rate_text(per_min: float) -> str:
    return f"{per_min:.0f}/min" if per_min >= 10 else f"{per_min:.1f}/min"


def _chart(samples: Sequence[Sample]) -> str:
    if len(samples) < MIN_CHART_SAMPLES:
        return (
            '<div class="chart"><small>Rates: too few samples yet. This page takes one at each refresh '
            f"(every {REFRESH_S} s), so the chart fills in while it stays open.</small></div>"
        )
    enq, done = _rates(samples, "enqueued"), _rates(samples, "completed")
    start, end = samples[0].at, samples[-1].at
    top = max(1.0, *(r for _, r in enq), *(r for _, r in done))
    inner_w, inner_h = CHART_W - 2 * CHART_PAD, CHART_H - 2 * CHART_PAD

    def points(rates: list[tuple[float, float]]) -> str:
        return " ".join(
            f"{CHART_PAD + (t - start) / (end - start) * inner_w:.1f},{CHART_PAD + inner_h - r / top * inner_h:.1f}"
            for t, r in rates
        )

    span = age(round((end - start) * 1000))
    label = f"enqueued and completed per minute over the last {span}; top of the chart {_rate_text(top)}"
    svg = (
        f'<svg viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<line class="axis" x1="{CHART_PAD}" y1="{CHART_H - CHART_PAD}" x2="{CHART_W - CHART_PAD}" '
        f'y2="{CHART_H - CHART_PAD}"/>'
        f'<polyline class="enq" points="{points(enq)}"/><polyline class="done" points="{points(done)}"/></svg>'
    )
    now_enq, now_done = _current(samples, "enqueued"), _current(samples, "completed")
    caption = (
        f'<small><span class="key-enq">━ enqueued {_rate_text(now_enq)}</span> · '
        f'<span class="key-done">╍ completed {_rate_text(now_done)}</span> · last {escape(span)}, '
        f"top {_rate_text(top)}</small>"
    )
    return f'<h3>rates</h3><div class="chart">{svg}{caption}</div>'


# -- one queue ---------------------------------------------------------------------------------


def _figure(name: str, value: str, cls: str = "", note: str = "") -> str:
    extra = f"<small>{note}</small>" if note else ""
    klass = f' class="{cls}"' if cls else ""
    return f"<div{klass}><dt>{name}</dt><dd>{value}{extra}</dd></div>"


def _figures(s: QueueStats) -> str:
    return (
        '<dl class="figures">'
        + _figure("waiting", str(s.available), note=f"high {s.high.available} · low {s.low.available}")
        + _figure("delayed", str(s.delayed))
        + _figure("in flight", str(s.in_flight))
        + _figure("overdue", str(s.overdue), "warn" if s.overdue else "")
        + _figure(
            "past deadline",
            str(s.past_deadline),
            "warn" if s.past_deadline else "",
            f"worst {age(s.most_past_deadline_ms)}" if s.most_past_deadline_ms else "",
        )
        + _figure("dead letters", str(s.dead_letter), "bad" if s.dead_letter else "")
        + _figure("oldest waiting", age(s.oldest_waiting_age_ms))
        + "</dl>"
    )


def _consumers(s: QueueStats) -> str:
    if not s.consumers:
        return "<h3>consumers</h3><small>none: no worker or server uses this queue now</small>"
    busiest = sorted(s.consumers, key=lambda c: (-c.pending, c.idle_ms, c.name))
    rows = "".join(
        f'<tr><td class="id">{escape(c.name)}</td><td>{c.pending}</td><td>{age(c.idle_ms)}</td>'
        f"<td>{age(c.last_seen_ms)}</td></tr>"
        for c in busiest[:MAX_CONSUMERS]
    )
    more = len(busiest) - MAX_CONSUMERS
    tail = f"<small>and {more} more</small>" if more > 0 else ""
    head = "<tr><th>consumer</th><th>holds</th><th>idle</th><th>last seen</th></tr>"
    return f'<h3>consumers</h3><div class="scroll"><table>{head}{rows}</table></div>{tail}'


def _limits(s: QueueStats) -> str:
    """Each limit key: its limit, what it holds, what waits for it (nothing when the queue has none)."""
    if not s.limits:
        return ""

    def cap(value: int | None) -> str:
        return "-" if value is None else str(value)

    rows = "".join(
        f'<tr><td class="id">{escape(info.key)}</td><td>{info.working} / {cap(info.max_working)}</td>'
        f"<td>{info.started_last_minute} / {cap(info.max_per_minute)}</td><td>{info.waiting}</td></tr>"
        for info in s.limits[:MAX_CONSUMERS]
    )
    head = "<tr><th>limit key</th><th>working / max</th><th>started last minute / max</th><th>waiting</th></tr>"
    return f'<h3>limits</h3><div class="scroll"><table>{head}{rows}</table></div>'


def _dead(s: QueueStats, dead: Sequence[DeadTask], now_ms: int) -> str:
    if not dead:
        return ""
    items = "".join(
        f'<li><span class="id">{escape(d.task_id)}</span> <small>· {escape(d.task_type or "-")} · attempt '
        f"{d.attempt}{'' if d.max_attempts is None else f'/{d.max_attempts}'}"
        f"{'' if d.dead_at is None else f' · dead for {age(max(now_ms - d.dead_at, 0))}'}</small>"
        f'<div class="error" title="{escape(_clip(d.error or "", ERROR_TITLE_CHARS))}">'
        f"{escape(_clip(d.error or '-', ERROR_CHARS))}</div></li>"
        for d in dead
    )
    return f'<h3>newest dead letters ({len(dead)} of {s.dead_letter})</h3><ul class="dead">{items}</ul>'


def _queue(view: QueueView, now_ms: int) -> str:
    s = view.stats
    return (
        f'<section class="queue"><h2>{escape(s.queue)}</h2>{_figures(s)}{_chart(view.samples)}'
        f"{_consumers(s)}{_limits(s)}{_dead(s, view.dead, now_ms)}</section>"
    )


def _attention(views: Sequence[QueueView]) -> str:
    notes = []
    for v in views:
        s, q = v.stats, escape(v.stats.queue)
        if s.overdue:
            notes.append(
                f'<li class="warn">{q}: {s.overdue} overdue (a worker stopped or stalled; the next read or '
                "recover hands them out again)</li>"
            )
        if s.past_deadline:
            notes.append(
                f'<li class="warn">{q}: {s.past_deadline} past their deadline, the worst by '
                f"{age(s.most_past_deadline_ms)} (they still run: add workers or look at what holds them)</li>"
            )
        if s.dead_letter:
            notes.append(f'<li class="bad">{q}: {_count(s.dead_letter, "dead letter")} to look at</li>')
        if s.available and not s.consumers:
            notes.append(f'<li class="warn">{q}: {s.available} waiting and no consumer</li>')
    return f'<ul class="attention">{"".join(notes)}</ul>' if notes else "<p>Nothing needs attention.</p>"


def status_page(views: Sequence[QueueView], up: bool, key_prefix: str, now_ms: int | None = None) -> str:
    """The page for the last refresh; every string from the store in it is escaped."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if up:
        body = _attention(views) + '<div class="queues">' + "".join(_queue(v, now_ms) for v in views) + "</div>"
    else:
        body = '<p class="down">queue store unavailable: nothing to show until it answers again</p>'
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now_ms / 1000))
    return (
        _head("mcp-queue-server status", refresh=True) + "<h1>mcp-queue-server</h1>"
        f"<small>key prefix {escape(key_prefix)} · {when} · refreshes every {REFRESH_S} s · "
        'numbers for Prometheus: <a href="/metrics">/metrics</a></small>'
        f"{body}</body></html>"
    )


def login_page(message: str | None = None) -> str:
    """The form a browser gets from ``/status`` when a token is configured and it has no session.

    The token goes in a POST body (never in the URL); ``message`` says why the form is back.
    """
    note = f'<p class="down" role="alert">{escape(message)}</p>' if message else ""
    return (
        _head("mcp-queue-server status: sign in", refresh=False)
        + "<h1>mcp-queue-server</h1><p>This server needs its auth token to show the status page.</p>"
        f"{note}"
        '<form method="post" action="/status/login">'
        '<label>token <input type="password" name="token" autocomplete="current-password" required autofocus>'
        '</label> <button type="submit">open status</button></form></body></html>'
    )
