"""What every script reply shares: decoding its fields, and the :class:`Refusal` a script
answers when it declines to act, which :func:`raise_for` turns into the matching error.

Below both halves of the script contract, :mod:`~mcp_queue_server.core.codec` (which
re-exports its public names) and :mod:`~mcp_queue_server.core.codec_admin`.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple, NoReturn

from mcp_queue_server.core.models import TaskStatus
from mcp_queue_server.core.scripts import Code
from mcp_queue_server.errors import ConflictingRequest, InvalidState, NotLeaseHolder, TaskNotFound


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
