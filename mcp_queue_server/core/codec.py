"""Turn raw Redis replies into the records of :mod:`mcp_queue_server.core.models`."""

from __future__ import annotations

import json
from typing import Any

from mcp_queue_server.core.models import (
    ConsumerInfo,
    DeadTask,
    FanoutProgress,
    FanoutState,
    QueueStats,
    StreamStats,
    Task,
    TaskInfo,
    TaskStatus,
)
from mcp_queue_server.core.scripts import text


def _int(value: Any) -> int | None:
    return None if value is None or value is False else int(value)


def _json(value: Any) -> Any:
    # Decoded first: json.loads on bytes guesses the encoding each time (about a third slower).
    return None if value is None or value is False else json.loads(text(value))


def task(row: list[Any], queue: str) -> Task:
    """One delivered task from read.lua."""
    return Task(
        task_id=text(row[0]),
        task_type=text(row[1]),
        priority=int(row[2]),
        payload=json.loads(text(row[3])),
        attempt=int(row[4]),
        lease_expires_at=int(row[5]),
        checkpoint=_json(row[6]),
        parent_task_id=text(row[7]) if row[7] else None,
        queue=queue,
    )


def fanout_progress(row: Any) -> FanoutProgress | None:
    """The fanout report of child_finished() in _lib.lua (or None for a plain task)."""
    if not row:
        return None
    return FanoutProgress(
        parent_task_id=text(row[0]),
        completed=int(row[1]),
        failed=int(row[2]),
        total=int(row[3]),
        done=bool(int(row[4])),
        finished_parent=bool(int(row[5])),
    )


def _decode_map(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def task_info(task_id: str, queue: str, raw: dict[bytes, bytes], ckpt: Any, fo: Any, fr: Any) -> TaskInfo:
    """The full record of one task from HGETALL of its hash, checkpoint and fanout keys."""
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
        checkpoint=_json(ckpt),
        lease_holder=h.get("consumer"),
        lease_expires_at=_int(h.get("lease_until")),
        parent_task_id=h.get("parent"),
        run_at=_int(h.get("run_at")),
        created_at=_int(h.get("created_at")),
        finished_at=_int(h.get("finished_at") or h.get("dead_at")),
        replays=int(h.get("replays", 0)),
        fanout=fanout,
        queue=queue,
    )


def dead_task(row: list[Any]) -> DeadTask:
    """One entry of inspect_dlq.lua."""
    return DeadTask(
        task_id=text(row[1]),
        task_type=text(row[2]) if row[2] else None,
        payload=_json(row[3]),
        error=text(row[4]) if row[4] else None,
        attempt=_int(row[5]) or 0,
        max_attempts=_int(row[6]),
        priority=_int(row[7]),
        source_stream=text(row[8]) if row[8] else None,
        created_at=_int(row[9]),
        dead_at=_int(row[10]),
        replays=_int(row[11]) or 0,
        parent_task_id=text(row[12]) if row[12] else None,
    )


def _ok(value: Any, default: Any) -> Any:
    """A pipeline reply, or ``default`` when that command failed (e.g. no such stream yet)."""
    return default if isinstance(value, Exception) else value


def _entry_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def queue_stats(queue: str, now: int, replies: list[Any], group: str) -> tuple[QueueStats, list[Any]]:
    """Statistics from the stats pipeline; also the XINFO GROUPS rows, for the age lookup."""
    hlen, llen, hpend, lpend, hgroups, lgroups, hcons, lcons, delayed, dlq, totals = (
        _ok(replies[0], 0),
        _ok(replies[1], 0),
        _ok(replies[2], {}),
        _ok(replies[3], {}),
        _ok(replies[4], []),
        _ok(replies[5], []),
        _ok(replies[6], []),
        _ok(replies[7], []),
        _ok(replies[8], 0),
        _ok(replies[9], 0),
        _ok(replies[10], {}),
    )
    hp, lp = int(hpend.get("pending", 0)), int(lpend.get("pending", 0))
    consumers: dict[str, ConsumerInfo] = {}
    for row in [*hcons, *lcons]:
        name = text(row["name"])
        seen = consumers.get(name)
        pending = int(row["pending"]) + (seen.pending if seen else 0)
        idle = min(int(row["idle"]), seen.idle_ms if seen else int(row["idle"]))
        consumers[name] = ConsumerInfo(name=name, pending=pending, idle_ms=idle)
    stats = QueueStats(
        queue=queue,
        high=StreamStats(length=hlen, pending=hp, available=max(hlen - hp, 0)),
        low=StreamStats(length=llen, pending=lp, available=max(llen - lp, 0)),
        delayed=delayed,
        in_flight=hp + lp,
        available=max(hlen - hp, 0) + max(llen - lp, 0),
        dead_letter=dlq,
        oldest_waiting_age_ms=None,
        consumers=sorted(consumers.values(), key=lambda c: c.name),
        totals={k.decode(): int(v) for k, v in totals.items()},
    )
    groups = [_group_last_id(hgroups, group), _group_last_id(lgroups, group)]
    return stats, groups


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
