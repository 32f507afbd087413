"""The ``/status`` page: the queues at a glance, as HTML that refreshes itself every few seconds."""

from __future__ import annotations

import time
from html import escape

from mcp_queue_server.core.models import QueueStats

REFRESH_S = 5

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.down { color: #b00; font-weight: bold; }
.warn { color: #b60; }
small { color: #777; }
"""

_COLUMNS = ["queue", "waiting (high / low)", "delayed", "in flight", "dead letters", "oldest waiting", "consumers"]
_TOTALS = ["enqueued", "completed", "retried", "dead_lettered", "replayed"]


def _age(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f} s"


def _row(s: QueueStats) -> str:
    dead = f'<span class="warn">{s.dead_letter}</span>' if s.dead_letter else "0"
    cells = [
        escape(s.queue),
        f"{s.available} ({s.high.available} / {s.low.available})",
        str(s.delayed),
        str(s.in_flight),
        dead,
        _age(s.oldest_waiting_age_ms),
        str(len(s.consumers)),
        *(str(s.totals.get(k, 0)) for k in _TOTALS),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _consumers(s: QueueStats) -> str:
    if not s.consumers:
        return ""
    rows = "".join(
        f"<tr><td>{escape(c.name)}</td><td>{c.pending}</td><td>{_age(c.idle_ms)}</td></tr>"
        for c in sorted(s.consumers, key=lambda c: (-c.pending, c.idle_ms))
    )
    head = "<tr><th>consumer</th><th>in flight</th><th>idle</th></tr>"
    return f"<h2>consumers of {escape(s.queue)}</h2><table>{head}{rows}</table>"


def status_page(stats: list[QueueStats], up: bool, key_prefix: str) -> str:
    """The page for a snapshot; every name in it is escaped (queue and consumer names come from callers)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in [*_COLUMNS, *(t.replace("_", "-") for t in _TOTALS)])
    body = (
        f"<table><tr>{head}</tr>{''.join(_row(s) for s in stats)}</table>{''.join(_consumers(s) for s in stats)}"
        if up
        else '<p class="down">queue store unavailable: nothing to show until it answers again</p>'
    )
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH_S}"><title>mcp-queue-server status</title>'
        f"<style>{_STYLE}</style></head><body><h1>mcp-queue-server</h1>"
        f"<small>key prefix {escape(key_prefix)} · {when} · refreshes every {REFRESH_S} s · "
        'numbers for Prometheus: <a href="metrics">/metrics</a></small>'
        f"{body}</body></html>"
    )


def login_page(message: str | None = None) -> str:
    """The form a browser gets from ``/status`` when a token is configured and it has no session.

    The token goes in a POST body (never in the URL); ``message`` says why the form is back.
    """
    note = f'<p class="down" role="alert">{escape(message)}</p>' if message else ""
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>mcp-queue-server status: sign in</title><style>{_STYLE}</style></head><body>"
        "<h1>mcp-queue-server</h1><p>This server needs its auth token to show the status page.</p>"
        f"{note}"
        '<form method="post" action="/status/login">'
        '<label>token <input type="password" name="token" autocomplete="current-password" required autofocus>'
        '</label> <button type="submit">open status</button></form></body></html>'
    )
