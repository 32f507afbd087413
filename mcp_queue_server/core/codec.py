"""The Python side of every script's contract: argument builders and typed replies.

Each ``*_args`` builder returns a script's ARGV after the four common ones (base, group,
consumer, clock; see ``lua/_lib.lua``), and each ``*_reply`` turns the script's raw reply
into a NamedTuple, or a :class:`Refusal` that :func:`raise_for` maps to an error. The
layout of each lua file's ``ARGV``/``Returns`` header is spelled here (or, for the operator
scripts, in :mod:`~mcp_queue_server.core.codec_admin`) and nowhere else: no other module
indexes a script reply. The same goes for the stats pipeline and the
records read straight from Redis (:func:`task_info`, :func:`queue_stats`).

Here: the scripts a producer or a worker runs (enqueue, fanout, read, heartbeat, ack, fail,
extend, checkpoint, release, recover); what every reply shares (field decoding, the
:class:`Refusal`) is :mod:`~mcp_queue_server.core.replies`, re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from mcp_queue_server.core.models import FanoutProgress, Task, TaskStatus
from mcp_queue_server.core.replies import Refusal as Refusal
from mcp_queue_server.core.replies import _json, _texts
from mcp_queue_server.core.replies import raise_for as raise_for
from mcp_queue_server.core.replies import refusal as refusal
from mcp_queue_server.core.replies import text as text
from mcp_queue_server.core.scripts import Code
from mcp_queue_server.limits import HOLDER_STALE_MS

# -- enqueue.lua and fanout.lua -------------------------------------------------------

#: The task hash field holding the trace context the task was enqueued with (absent: none).
TRACE_FIELD = "trace"


class NewRow(NamedTuple):
    """One task of enqueue.lua, checked and serialised."""

    task_id: str
    task_type: str
    priority: int
    payload: str
    delay_ms: int
    max_attempts: int | str  #: "" = the queue's default
    deadline_ms: int | str = ""  #: "" = none; else finish within this many ms of the enqueue
    trace: str = ""  #: the enqueuing call's trace context (tracing.carrier_of); "" none
    limit_key: str = ""  #: "" = none (see set_limit)


class ChildRow(NamedTuple):
    """One subtask (or the continuation) of fanout.lua, checked and serialised."""

    task_id: str
    task_type: str
    priority: int
    payload: str
    max_attempts: int | str  #: "" = the queue's default
    deadline_ms: int | str = ""  #: "" = none (a continuation has none)
    trace: str = ""  #: the fanout call's trace context (tracing.carrier_of); "" none
    limit_key: str = ""  #: "" = none (see set_limit)


#: fanout.lua's continuation fields when there is none (cont_id "" turns it off).
_NO_CONTINUATION = ("", "", "", 0, "", "", "")


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
    parent_trace: str = "",
) -> list[Any]:
    """``parent_trace``: the trace context a parent created by this fanout stores."""
    args: list[Any] = [
        threshold,
        default_max_attempts,
        parent_id,
        "" if parent_data is None else parent_data,
        "fail" if fail_parent_on_child_failure else "continue",
        result_ttl_s,
        *(
            _NO_CONTINUATION
            if continuation is None
            else (*continuation[:5], continuation.trace, continuation.limit_key)
        ),
        len(children),
        max_length,
        parent_trace,
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
    traces: list[str | None]  #: each task's stored trace context (tracing.context_of), None: none


def read_args(req: ReadRequest, request_id: str, *, recall_only: bool = False, client_room: str = "") -> list[Any]:
    """``client_room`` is for the limits negative control only ("key room ..."; see read.lua)."""
    return [*req, request_id, int(recall_only), HOLDER_STALE_MS, client_room]


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
        [text(row[8]) if row[8] else None for row in reply[5:]],
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


_ACKED_NOW = Acked(False, None)
_ACKED_BEFORE = Acked(True, None)


def ack_args(result_ttl_s: int, task_ids: Sequence[str], results: Sequence[str]) -> list[Any]:
    args: list[Any] = [result_ttl_s, len(task_ids)]
    for pair in zip(task_ids, results, strict=True):
        args += pair
    return args


def ack_reply(reply: Any) -> list[Acked | Refusal]:
    out: list[Acked | Refusal] = []
    for row in reply:
        if row == Code.OK:  # a bare code: completed now, no fanout report
            out.append(_ACKED_NOW)
            continue
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


# -- recover.lua ---------------------------------------------------------------------


class Recovered(NamedTuple):
    requeued: list[str]
    dead_lettered: list[str]
    cancelled: list[str]  #: their cancellation was requested


def recover_args(min_idle_ms: int | None, limit: int, request_id: str) -> list[Any]:
    return ["" if min_idle_ms is None else min_idle_ms, limit, request_id]


def recover_reply(reply: Any) -> Recovered:
    again, gone, cancelled = reply
    return Recovered(_texts(again), _texts(gone), _texts(cancelled))
