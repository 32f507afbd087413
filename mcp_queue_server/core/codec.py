"""The Python side of every script's contract: argument builders and typed replies.

Each ``*_args`` builder returns a script's ARGV after the four common ones (base, group,
consumer, clock; see ``lua/_lib.lua``), and each ``*_reply`` turns the script's raw reply
into a NamedTuple, or a :class:`Refusal` that :func:`raise_for` maps to an error. The
layout of each lua file's ``ARGV``/``Returns`` header is spelled here and nowhere else:
no other module indexes a script reply. The same goes for the stats pipeline and the
records read straight from Redis (:func:`task_info`, :func:`queue_stats`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, NoReturn

from mcp_queue_server.core.models import (
    CancelResult,
    DeadLetterPage,
    DeadTask,
    FanoutProgress,
    ListedTask,
    Task,
    TaskPage,
    TaskStatus,
)
from mcp_queue_server.core.scripts import Code
from mcp_queue_server.errors import ConflictingRequest, InvalidState, NotLeaseHolder, TaskNotFound
from mcp_queue_server.limits import HOLDER_STALE_MS


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int | None:
    return None if value is None or value is False else int(value)


def _json(value: Any) -> Any:
    # Decoded first: json.loads on bytes guesses the encoding each time (about a third slower).
    return None if value is None or value is False else json.loads(text(value))


def _texts(values: Any) -> list[str]:
    return [text(v) for v in values]


# -- refusals -------------------------------------------------------------------------


class Refusal(NamedTuple):
    """A script declined to act: ``code`` is a :class:`Code` below OK, or ALREADY."""

    code: int
    state: str = ""
    holder: str = ""
    until: str = ""
    task_id: str = ""  #: the id the refusal names, when not the caller's (fanout, replay, purge)


def refusal(row: Any) -> Refusal:
    """``not_held()`` / ``refusal()`` of _lib.lua, and fanout's {BAD_STATE, state} / {CONFLICT, id}."""
    code = row[0]
    if code == Code.NOT_HOLDER:
        return Refusal(code, text(row[1]), text(row[2]), text(row[3]))
    if code == Code.CONFLICT:
        return Refusal(code, task_id=text(row[1]))
    if code in (Code.ALREADY, Code.BAD_STATE):
        return Refusal(code, text(row[-1]))
    return Refusal(code)


def _dlq_refusal(row: Any) -> Refusal:
    """``dlq_picks()`` of _lib.lua: {NOT_FOUND, id} or {BAD_STATE, id, state}."""
    return Refusal(row[0], text(row[-1]) if row[0] == Code.BAD_STATE else "", task_id=text(row[1]))


def raise_for(why: Refusal, task_id: str) -> NoReturn:
    """Turn a refusal into the matching error."""
    code, state = why.code, why.state
    if code == Code.NOT_FOUND:
        raise TaskNotFound(f"task {task_id} not found: check the id and queue (completed tasks expire after a while)")
    if code == Code.NOT_HOLDER:
        if state == "working":
            # The reply carries no clock: seconds from this process's wall clock, for the message
            # only (a model reads seconds from now; the lease itself is the queue's business).
            left_s = max(0, -((time.time_ns() // 1_000_000 - int(why.until or 0)) // 1000))
            raise NotLeaseHolder(
                f"task {task_id} is leased by another worker ({why.holder}) for {left_s} s more; "
                "your lease expired or you never held it, so nothing was changed: drop this task and read again"
            )
        if state == TaskStatus.CANCELLED:
            raise NotLeaseHolder(f"task {task_id} was cancelled: drop it; nothing changed")
        raise NotLeaseHolder(
            f"task {task_id} is {state}, not leased to you: only the worker that read it may do this; nothing changed"
        )
    if code == Code.ALREADY:
        raise InvalidState(f"task {task_id} is already completed; there is nothing left to do with it")
    if code == Code.BAD_STATE:
        raise InvalidState(f"task {task_id} is {state}; this operation does not apply to it")
    if code == Code.CONFLICT:
        raise ConflictingRequest(f"task id {why.task_id} is already in use: pick new subtask ids")
    raise InvalidState(f"task {task_id}: unexpected script reply {int(code)}")


# -- enqueue.lua and fanout.lua -------------------------------------------------------


class NewRow(NamedTuple):
    """One task of enqueue.lua, checked and serialised."""

    task_id: str
    task_type: str
    priority: int
    payload: str
    delay_ms: int
    max_attempts: int | str  #: "" = the queue's default


class ChildRow(NamedTuple):
    """One subtask (or the continuation) of fanout.lua, checked and serialised."""

    task_id: str
    task_type: str
    priority: int
    payload: str
    max_attempts: int | str  #: "" = the queue's default


#: fanout.lua's continuation fields when there is none (cont_id "" turns it off).
_NO_CONTINUATION = ("", "", "", 0, "")


class Enqueued(NamedTuple):
    duplicate: bool
    status: TaskStatus


def enqueue_args(threshold: int, default_max_attempts: int, tasks: Sequence[NewRow], max_length: int = 0) -> list[Any]:
    args: list[Any] = [threshold, default_max_attempts, len(tasks), max_length]
    for row in tasks:
        args += row
    return args


class Full(NamedTuple):
    """enqueue.lua / fanout.lua refused: the queue would grow past its maximum length."""

    length: int  #: waiting + delayed tasks now


def _full(reply: Any) -> Full | None:
    return Full(int(reply[1])) if reply and reply[0] == Code.FULL else None


def enqueue_reply(reply: Any) -> list[Enqueued] | Full:
    return _full(reply) or [Enqueued(code == Code.DUPLICATE, TaskStatus(text(state))) for code, state in reply]


class FannedOut(NamedTuple):
    child_ids: list[str]
    duplicate: bool
    continuation_id: str | None


def fanout_args(
    threshold: int,
    default_max_attempts: int,
    parent_id: str,
    parent_data: str | None,
    fail_parent_on_child_failure: bool,
    result_ttl_s: int,
    continuation: ChildRow | None,
    children: Sequence[ChildRow],
    max_length: int = 0,
) -> list[Any]:
    args: list[Any] = [
        threshold,
        default_max_attempts,
        parent_id,
        "" if parent_data is None else parent_data,
        "fail" if fail_parent_on_child_failure else "continue",
        result_ttl_s,
        *(_NO_CONTINUATION if continuation is None else continuation),
        len(children),
        max_length,
    ]
    for row in children:
        args += row
    return args


def fanout_reply(reply: Any) -> FannedOut | Refusal | Full:
    full = _full(reply)
    if full is not None:
        return full
    code = reply[0]
    if code not in (Code.OK, Code.DUPLICATE):
        return refusal(reply)
    return FannedOut(_texts(reply[1]), code == Code.DUPLICATE, text(reply[2]) if reply[2] else None)


# -- read.lua -------------------------------------------------------------------------


class ReadRequest(NamedTuple):
    """What a read asks for; the same for every try of one ``read_messages`` call."""

    max_tasks: int
    lease_ms: int
    prefer_high: int  #: 1/0
    promote_limit: int


class ReadReply(NamedTuple):
    next_wake_ms: int  #: -1: nothing delayed or leased
    dead_lettered: int
    last_ids: tuple[Any, Any]  #: last entry ids of high and low, for XREAD after them ("" when tasks came)
    now_used: int  #: the clock the script ran with (Redis's, plus a test clock's offset)
    tasks: list[Task]


def read_args(req: ReadRequest, request_id: str, *, recall_only: bool = False) -> list[Any]:
    return [*req, request_id, int(recall_only), HOLDER_STALE_MS]


# -- heartbeat.lua --------------------------------------------------------------------


def heartbeat_args() -> list[Any]:
    return [HOLDER_STALE_MS]


def read_reply(reply: Any, queue: str) -> ReadReply:
    return ReadReply(
        int(reply[0]),
        int(reply[1]),
        (reply[2], reply[3]),
        int(reply[4]),
        [task(row, queue) for row in reply[5:]],
    )


def task(row: Any, queue: str) -> Task:
    """One delivered task of read.lua."""
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


# -- ack.lua, fail.lua, extend.lua, checkpoint.lua, release.lua ------------------------


class Acked(NamedTuple):
    already: bool  #: completed by an earlier ack
    fanout: FanoutProgress | None


_ACKED_BEFORE = Acked(True, None)


def ack_args(result_ttl_s: int, task_ids: Sequence[str], results: Sequence[str]) -> list[Any]:
    args: list[Any] = [result_ttl_s, len(task_ids)]
    for pair in zip(task_ids, results, strict=True):
        args += pair
    return args


def ack_reply(reply: Any) -> list[Acked | Refusal]:
    out: list[Acked | Refusal] = []
    for row in reply:
        code = row[0]
        if code == Code.OK:
            out.append(Acked(False, fanout_progress(row[3])))
        elif code == Code.ALREADY:
            out.append(_ACKED_BEFORE)
        else:
            out.append(refusal(row))
    return out


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


class Failed(NamedTuple):
    status: TaskStatus  #: queued or delayed (to retry), or failed (dead-lettered)
    attempt: int
    retry_at: int | None
    fanout: FanoutProgress | None


def fail_args(
    task_id: str, error: str, retry: bool, backoff_ms: int, max_backoff_ms: int, request_id: str
) -> list[Any]:
    return [task_id, error, int(retry), backoff_ms, max_backoff_ms, request_id]


def fail_reply(reply: Any) -> Failed | Refusal:
    if reply[0] != Code.OK:
        return refusal(reply)
    status = TaskStatus(text(reply[1]))
    retry_at = int(reply[3]) if status in (TaskStatus.QUEUED, TaskStatus.DELAYED) else None
    return Failed(status, int(reply[2]), retry_at, fanout_progress(reply[4]))


class Extended(NamedTuple):
    lease_until: int
    cancel_requested: bool


def extend_args(task_id: str, lease_ms: int) -> list[Any]:
    return [task_id, lease_ms]


def extend_reply(reply: Any) -> Extended | Refusal:
    return Extended(int(reply[1]), bool(int(reply[2]))) if reply[0] == Code.OK else refusal(reply)


class Checkpointed(NamedTuple):
    lease_until: int | None  #: None: the caller does not hold the task (a seed before delivery)
    cancel_requested: bool


def checkpoint_args(task_id: str, data: str, ttl_s: int) -> list[Any]:
    """``data`` "" deletes the checkpoint."""
    return [task_id, data, ttl_s]


def checkpoint_reply(reply: Any) -> Checkpointed | Refusal:
    return Checkpointed(int(reply[1]) or None, bool(int(reply[2]))) if reply[0] == Code.OK else refusal(reply)


class Released(NamedTuple):
    released: int
    more: bool  #: another call is needed


def release_args(limit: int, *, forget_consumer: bool, task_ids: Sequence[str] = ()) -> list[Any]:
    """All the caller's tasks (``limit`` per call), or only ``task_ids`` (``limit`` = their number)."""
    return [limit, int(forget_consumer), *task_ids]


def release_reply(reply: Any) -> Released:
    return Released(int(reply[0]), bool(int(reply[1])))


# -- recover.lua, replay.lua, purge.lua, inspect_dlq.lua --------------------------------


class Recovered(NamedTuple):
    requeued: list[str]
    dead_lettered: list[str]
    cancelled: list[str]  #: their cancellation was requested


def recover_args(min_idle_ms: int | None, limit: int, request_id: str) -> list[Any]:
    return ["" if min_idle_ms is None else min_idle_ms, limit, request_id]


def recover_reply(reply: Any) -> Recovered:
    again, gone, cancelled = reply
    return Recovered(_texts(again), _texts(gone), _texts(cancelled))


class Replayed(NamedTuple):
    task_ids: list[str]
    picked: int  #: DLQ entries taken (some may name tasks that moved on)


class Purged(NamedTuple):
    purged: int
    picked: int


def dlq_args(request_id: str, task_ids: Sequence[str] | None, limit: int) -> list[Any]:
    """replay.lua / purge.lua: the given ids, or (None) the oldest ``limit`` dead tasks."""
    if task_ids is None:
        return [request_id, 0, limit]
    return [request_id, len(task_ids), *task_ids]


def replay_reply(reply: Any) -> Replayed | Refusal:
    return Replayed(_texts(reply[1]), int(reply[2])) if reply[0] == Code.OK else _dlq_refusal(reply)


def purge_reply(reply: Any) -> Purged | Refusal:
    return Purged(int(reply[1]), int(reply[2])) if reply[0] == Code.OK else _dlq_refusal(reply)


def inspect_dlq_args(count: int, cursor: str | None, newest_first: bool) -> list[Any]:
    return [count, cursor or "", int(newest_first)]


def inspect_dlq_reply(reply: Any) -> DeadLetterPage:
    return DeadLetterPage(tasks=[_dead_task(row) for row in reply[1:]], next_cursor=text(reply[0]) or None)


def _dead_task(row: Any) -> DeadTask:
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


# -- cancel.lua, list_tasks.lua ---------------------------------------------------------


def cancel_args(result_ttl_s: int, reason: str, task_ids: Sequence[str]) -> list[Any]:
    return [result_ttl_s, reason, len(task_ids), *task_ids]


def cancel_reply(task_ids: Sequence[str], reply: Any) -> list[CancelResult | Refusal]:
    out: list[CancelResult | Refusal] = []
    for task_id, row in zip(task_ids, reply, strict=True):
        if row[0] == Code.OK:
            out.append(CancelResult(task_id, text(row[1]), bool(int(row[2]))))
        else:
            out.append(refusal(row))
    return out


def list_args(state: str, count: int, task_type: str | None, cursor: tuple[str, str] | None) -> list[Any]:
    return [state, count, task_type or "", *(cursor or ("", ""))]


def list_reply(state: str, reply: Any) -> TaskPage:
    a, b, now = text(reply[0]), text(reply[1]), int(reply[2])
    tasks = []
    for row in reply[3:]:
        lease_until = _int(row[7])
        status = TaskStatus(text(row[2]))
        tasks.append(
            ListedTask(
                task_id=text(row[0]),
                task_type=text(row[1]) if row[1] else None,
                status=status,
                priority=_int(row[3]),
                attempt=_int(row[4]) or 0,
                holder=text(row[5]) if row[5] else None,
                created_at=_int(row[6]),
                lease_ms_left=max(lease_until - now, 0)
                if lease_until is not None and status == TaskStatus.WORKING
                else None,
            )
        )
    return TaskPage(tasks, f"{state}:{a}:{b}" if a else None)
