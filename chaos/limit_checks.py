"""What the workers' logs prove about limits (issue 18), for :mod:`chaos.checker`.

max_working: each delivery of the working key holds it from its start (the read's Redis time:
the lease it returned minus lease_ms) at least until the last checkpoint its worker logged for it
(Redis time again: the renewed lease minus lease_ms). At every start, the deliveries proven to hold
the key then (the new one included) must not exceed max_working. The count is a lower bound of what
Redis held (a worker killed before its checkpoint proves nothing), so every excess is real.

max_per_minute: the starts of the rate key, one per (id, attempt) (the last one: a delivery Redis
forgot in a crash, AOF losing its last second, is delivered again with the same attempt), counted
in every rolling minute (start - 60 s, start].

Flow: unkeyed tasks enqueued while a limited task waited (0.5 s or more since its enqueue, not yet
delivered) must be delivered within :data:`UNKEYED_BOUND_S` (producer and worker log times: both
processes run unfaked on one host).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from chaos.common import Config, read_logs

#: Unkeyed tasks enqueued while a limited task waits are delivered within this (s), faults and all.
UNKEYED_BOUND_S = 10.0
MINUTE_MS = 60_000
Triple = tuple[str, int, str]  #: (task id, attempt, worker)


def held_ends(working: list[dict[str, Any]], proofs: dict[Triple, list[int]]) -> list[int]:
    """Per delivery, the last Redis time its worker proved it held the task (its start if never):
    a proof goes to the latest delivery of its (id, attempt, worker) started at or before it."""
    ends = [d["now"] for d in working]
    of: dict[Triple, list[int]] = defaultdict(list)
    for n, d in enumerate(working):
        of[d["id"], d["attempt"], d["worker"]].append(n)
    for triple, times in proofs.items():
        for p in times:
            mine = [n for n in of.get(triple, []) if working[n]["now"] <= p]
            if mine:
                n = max(mine, key=lambda n: working[n]["now"])
                ends[n] = max(ends[n], p)
    return ends


def over_max_working(working: list[dict[str, Any]], ends: list[int], limit: int) -> tuple[set[str], int]:
    """Ids started while ``limit`` others were proven held; and the most held at once."""
    over, most = set(), 0
    for n, d in enumerate(working):
        s = d["now"]
        held = 1 + sum(1 for m, e in enumerate(working) if m != n and e["now"] <= s < ends[m])
        most = max(most, held)
        if held > limit:
            over.add(d["id"])
    return over, most


def over_per_minute(rated: dict[tuple[str, int], int], limit: int) -> tuple[set[str], int]:
    """Ids whose start made a rolling minute hold more than ``limit`` starts; and the most in one."""
    times = sorted(rated.values())

    def in_minute(s: int) -> int:
        return sum(1 for t in times if s - MINUTE_MS < t <= s)

    fast = {i for (i, _), s in rated.items() if in_minute(s) > limit}
    return fast, max((in_minute(s) for s in times), default=0)


def unkeyed_flow(cfg: Config, kinds: dict[str, str], starts: list[dict[str, Any]]) -> tuple[set[str], dict[str, Any]]:
    """Unkeyed tasks enqueued while a limited task waited: those over the bound, and the figures."""
    enqueued: dict[str, float] = {}
    for rec in read_logs(cfg.logs, "producer-"):
        if rec["op"] == "enqueue" and rec["outcome"] == "ok":
            enqueued.setdefault(rec["id"], rec["t"])
    first: dict[str, float] = {}
    for d in starts:
        first[d["id"]] = min(d["t"], first.get(d["id"], d["t"]))
    known = [i for i in kinds if i in enqueued and i in first]
    waits = [(enqueued[i] + 0.5, first[i]) for i in known if kinds[i] == "limited"]
    waits = [(a, b) for a, b in waits if b > a]
    during = {
        i: first[i] - enqueued[i]
        for i in known
        if kinds[i] in ("normal", "bulk") and any(a <= enqueued[i] < b for a, b in waits)
    }
    latencies = sorted(during.values())

    def pct(q: float) -> float | None:
        return round(latencies[min(int(q * len(latencies)), len(latencies) - 1)], 3) if latencies else None

    figures = {
        "limited_tasks_that_waited_over_0_5_s": len(waits),
        "unkeyed_tasks_enqueued_meanwhile": len(latencies),
        "their_delivery_latency_s": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0), "bound": UNKEYED_BOUND_S},
    }
    return {i for i, w in during.items() if w > UNKEYED_BOUND_S}, figures


def check_limits(
    cfg: Config, kinds: dict[str, str], starts: list[dict[str, Any]], proofs: dict[Triple, list[int]]
) -> tuple[dict[str, set[str]], dict[str, Any]]:
    """Findings (limit_working_exceeded, limit_rate_exceeded, unkeyed_stalled) and the figures."""
    working = [d for d in starts if kinds.get(d["id"]) == "limited"]
    over, most = over_max_working(working, held_ends(working, proofs), cfg.max_working)
    rated = {(d["id"], d["attempt"]): d["now"] for d in starts if kinds.get(d["id"]) == "rated"}
    fast, busiest = over_per_minute(rated, cfg.max_per_minute)
    stalled, flow = unkeyed_flow(cfg, kinds, starts)
    figures = {
        "max_working": cfg.max_working,
        "most_held_at_once": most,
        "working_key_deliveries": len(working),
        "max_per_minute": cfg.max_per_minute,
        "most_started_in_a_minute": busiest,
        "rate_key_deliveries": len(rated),
        **flow,
    }
    return {"limit_working_exceeded": over, "limit_rate_exceeded": fast, "unkeyed_stalled": stalled}, figures
