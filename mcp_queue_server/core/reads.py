"""What is read straight from Redis, not through a script: a task's keys and the stats pipeline.

The stats pipeline is declared once (:data:`_STATS`: name, command, default): the same
table queues the commands and names their replies, so their order cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from mcp_queue_server.core.codec import text
from mcp_queue_server.core.codec_saga import saga_state
from mcp_queue_server.core.keys import HELD_CONSUMER, QueueKeys
from mcp_queue_server.core.models import (
    TERMINAL_STATES,
    ConsumerInfo,
    FanoutState,
    LimitInfo,
    QueueStats,
    StreamStats,
    TaskInfo,
    TaskStatus,
)
from mcp_queue_server.limits import HOLDER_STALE_MS


def _int(value: Any) -> int | None:
    return None if value is None or value is False else int(value)


def _decode_map(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def task_commands(pipe: Any, k: QueueKeys, task_id: str) -> None:
    """Queue the reads :func:`task_info` decodes, in its order."""
    pipe.hgetall(k.task(task_id))
    pipe.get(k.checkpoint(task_id))
    pipe.hgetall(k.fanout(task_id))
    pipe.hgetall(k.fanout_results(task_id))
    pipe.hgetall(k.saga(task_id))  # one more reply in the same round trip; empty for a task


def task_info(task_id: str, queue: str, replies: list[Any]) -> TaskInfo | None:
    """The full record of one task from :func:`task_commands`' replies; None: no such task."""
    raw, ckpt, fo, fr, sg = replies
    if not raw:
        return None
    h = _decode_map(raw)
    fanout = None
    if fo:
        f = _decode_map(fo)
        fanout = FanoutState(
            total=int(f["total"]),
            completed=int(f["completed"]),
            failed=int(f["failed"]),
            done=f["done"] == "1",
            results={k.decode(): json.loads(v) for k, v in (fr or {}).items()},
            subtask_ids=json.loads(f["children"]),
            failed_child=f.get("failed_child"),
        )
    result: Any = None
    if "result" in h:
        result = json.loads(h["result"])
    elif fanout and h.get("state") == TaskStatus.COMPLETED:
        result = fanout.results
    return TaskInfo(
        task_id=task_id,
        status=TaskStatus(h["state"]),
        task_type=h.get("type"),
        priority=_int(h.get("priority")),
        attempt=int(h.get("attempt", 0)),
        max_attempts=_int(h.get("max_attempts")),
        result=result,
        error=h.get("error"),
        checkpoint=None if ckpt is None else json.loads(text(ckpt)),
        lease_holder=h.get("consumer"),
        lease_expires_at=_int(h.get("lease_until")),
        parent_task_id=h.get("parent"),
        run_at=_int(h.get("run_at")),
        created_at=_int(h.get("created_at")),
        finished_at=_int(h.get("finished_at") or h.get("dead_at")),
        replays=int(h.get("replays", 0)),
        fanout=fanout,
        queue=queue,
        deadline_at=_int(h.get("deadline_at")),
        limit_key=h.get("limit_key"),
        saga=saga_state(task_id, sg) if h.get("kind") == "saga" else None,
    )


def with_overdue(info: TaskInfo, now: int) -> TaskInfo:
    """``info`` with ``overdue`` set: past its deadline at ``now`` (the queue's clock), unfinished."""
    late = info.deadline_at is not None and now > info.deadline_at and info.status not in TERMINAL_STATES
    return dataclasses.replace(info, overdue=late) if late else info


# -- statistics ---------------------------------------------------------------------

_Add = Callable[[Any, QueueKeys, str, int], object]

#: (name, how to queue the command on a pipeline (pipe, keys, group, now in ms), reply when it
#: fails: e.g. no stream yet).
#: The defaults are only read, never changed.
_STATS: tuple[tuple[str, _Add, Any], ...] = (
    ("high_length", lambda p, k, g, t: p.xlen(k.high), 0),
    ("low_length", lambda p, k, g, t: p.xlen(k.low), 0),
    ("high_pending", lambda p, k, g, t: p.xpending(k.high, g), {}),
    ("low_pending", lambda p, k, g, t: p.xpending(k.low, g), {}),
    ("high_groups", lambda p, k, g, t: p.xinfo_groups(k.high), []),
    ("low_groups", lambda p, k, g, t: p.xinfo_groups(k.low), []),
    ("high_consumers", lambda p, k, g, t: p.xinfo_consumers(k.high, g), []),
    ("low_consumers", lambda p, k, g, t: p.xinfo_consumers(k.low, g), []),
    ("delayed", lambda p, k, g, t: p.zcard(k.delayed), 0),
    ("dead_letter", lambda p, k, g, t: p.xlen(k.dlq), 0),
    ("overdue", lambda p, k, g, t: p.zcount(k.leases, "-inf", t), 0),
    # Deadlines: how many unfinished tasks are past theirs, and the earliest deadline of all.
    ("past_deadline", lambda p, k, g, t: p.zcount(k.deadlines, "-inf", f"({t}"), 0),
    ("first_deadline", lambda p, k, g, t: p.zrange(k.deadlines, 0, 0, withscores=True), []),
    ("totals", lambda p, k, g, t: p.hgetall(k.stats), {}),
    # Live holders: seen within HOLDER_STALE_MS (older ones are dropped by the next read or heartbeat).
    ("holders", lambda p, k, g, t: p.zrangebyscore(k.holders, t - HOLDER_STALE_MS, "+inf", withscores=True), []),
    # Limit keys: those with a limit, and those with a line of held-back tasks.
    ("limits", lambda p, k, g, t: p.hgetall(k.limits), {}),
    ("lines", lambda p, k, g, t: p.zrange(k.limit_wait, 0, -1), []),
)


def stats_commands(pipe: Any, k: QueueKeys, group: str, now: int) -> None:
    """Queue the commands :func:`queue_stats` decodes (run with ``raise_on_error=False``);
    ``now`` (ms since the epoch, the queue's clock) tells expired leases from live ones."""
    for _, add, _ in _STATS:
        add(pipe, k, group, now)


def _ok(value: Any, default: Any) -> Any:
    """A pipeline reply, or ``default`` when that command failed (e.g. no such stream yet)."""
    return default if isinstance(value, Exception) else value


def queue_stats(queue: str, replies: list[Any], group: str, now: int = 0) -> tuple[QueueStats, list[bytes]]:
    """Statistics from :func:`stats_commands`' replies (``now``: the time they were asked
    for); also each stream's last-delivered id, after which :func:`oldest_age` looks for the
    oldest waiting entry. The consumers are the group's members and the live holders."""
    r = {name: _ok(reply, default) for (name, _, default), reply in zip(_STATS, replies, strict=True)}
    rows = [
        (text(row["name"]), int(row["pending"]), int(row["idle"]))
        for row in [*r["high_consumers"], *r["low_consumers"]]
        if text(row["name"]) != HELD_CONSUMER
    ]
    first = r["first_deadline"]
    stats = assemble(
        queue,
        now,
        lengths=(r["high_length"], r["low_length"]),
        # Entries of held-back tasks wait in the HELD consumer's pending list: waiting, not in flight.
        in_flight=(_in_flight(r["high_pending"]), _in_flight(r["low_pending"])),
        consumer_rows=rows,
        holders=[(text(member), int(score)) for member, score in r["holders"]],
        delayed=r["delayed"],
        dead_letter=r["dead_letter"],
        overdue=r["overdue"],
        past_deadline=r["past_deadline"],
        first_deadline=int(first[0][1]) if first else None,
        totals={k.decode(): int(v) for k, v in r["totals"].items()},
        limits=[
            limit_info(text(key), raw) for key, raw in sorted({**dict.fromkeys(r["lines"]), **r["limits"]}.items())
        ],
    )
    return stats, [_group_last_id(r["high_groups"], group), _group_last_id(r["low_groups"], group)]


def assemble(
    queue: str,
    now: int,
    *,
    lengths: tuple[int, int],
    in_flight: tuple[int, int],
    consumer_rows: list[tuple[str, int, int]],
    holders: list[tuple[str, int]],
    delayed: int,
    dead_letter: int,
    overdue: int,
    past_deadline: int,
    first_deadline: int | None,
    totals: dict[str, int],
    limits: list[LimitInfo],
    oldest_waiting_age_ms: int | None = None,
) -> QueueStats:
    """One queue's :class:`QueueStats` from what was read, by the stats pipeline or by
    queue_stats.lua (one decoding, so both give the same record). ``consumer_rows``: (name,
    pending, idle ms) of the group's members on both streams, the held consumer left out;
    ``holders``: (name, last seen ms)."""
    (hlen, llen), (hp, lp) = lengths, in_flight
    consumers: dict[str, ConsumerInfo] = {}
    for name, pending, idle in consumer_rows:
        seen = consumers.get(name)
        consumers[name] = ConsumerInfo(
            name=name,
            pending=pending + (seen.pending if seen else 0),
            idle_ms=min(idle, seen.idle_ms if seen else idle),
        )
    for name, score in holders:
        ago = max(now - score, 0)
        seen = consumers.get(name)
        consumers[name] = (
            ConsumerInfo(name=name, pending=0, idle_ms=ago, last_seen_ms=ago)
            if seen is None
            else dataclasses.replace(seen, last_seen_ms=ago)
        )
    return QueueStats(
        queue=queue,
        high=StreamStats(length=hlen, pending=hp, available=max(hlen - hp, 0)),
        low=StreamStats(length=llen, pending=lp, available=max(llen - lp, 0)),
        delayed=delayed,
        in_flight=hp + lp,
        available=max(hlen - hp, 0) + max(llen - lp, 0),
        dead_letter=dead_letter,
        oldest_waiting_age_ms=oldest_waiting_age_ms,
        overdue=overdue,
        past_deadline=past_deadline,
        most_past_deadline_ms=None if first_deadline is None or now <= first_deadline else now - first_deadline,
        consumers=sorted(consumers.values(), key=lambda c: c.name),
        totals=totals,
        limits=limits,
    )


def _in_flight(pending: dict[str, Any]) -> int:
    held = sum(int(c["pending"]) for c in pending.get("consumers") or [] if text(c["name"]) == HELD_CONSUMER)
    return int(pending.get("pending", 0)) - held


def limit_info(key: str, raw: bytes | None) -> LimitInfo:
    """A key's limit as set_limit.lua stores it ("<max_working> <max_per_minute>", "-" none);
    the counts come from :func:`limit_commands`."""
    working = per_minute = None
    if raw is not None:
        a, b = text(raw).split(" ")
        working, per_minute = (None if a == "-" else int(a)), (None if b == "-" else int(b))
    return LimitInfo(key, working, per_minute, 0, 0, 0)


def limit_commands(pipe: Any, k: QueueKeys, keys: list[str], now: int) -> None:
    """Queue, per limit key, what :func:`limit_counts` decodes: held, held back, started in the last minute."""
    for key in keys:
        pipe.scard(k.limit_working(key))
        pipe.zcard(k.limit_line(key))
        pipe.zcount(k.limit_starts(key), f"({now - 60_000}", "+inf")


def limit_counts(limits: list[LimitInfo], replies: list[Any]) -> list[LimitInfo]:
    return [
        dataclasses.replace(info, working=int(w), waiting=int(q), started_last_minute=int(m))
        for info, (w, q, m) in zip(limits, zip(*[iter(replies)] * 3, strict=True), strict=True)
    ]


def _group_last_id(rows: list[Any], group: str) -> bytes:
    for row in rows:
        if text(row["name"]) == group:
            value = row["last-delivered-id"]
            return value if isinstance(value, bytes) else str(value).encode()
    return b"0-0"


def oldest_age(now: int, first_entries: list[Any]) -> int | None:
    """Age of the oldest entry not yet delivered (XRANGE after the last-delivered id, per stream)."""
    stamps = [_entry_ms(_ok(rows, [])[0][0]) for rows in first_entries if _ok(rows, [])]
    return max(now - min(stamps), 0) if stamps else None


def _entry_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])
