"""The queue's events stream: which tasks reached a final state, for waiting without polling.

Every script that finishes tasks (ack; fail when it dead-letters; read and recover when they
dead-letter an expired task; a fanout parent finished by its last child) ends with one XADD
to ``<base>events`` (:attr:`~mcp_queue_server.core.keys.QueueKeys.events`) whose fields are
task id -> new state, trimmed to about :data:`EVENTS_MAXLEN` entries (``lua/_lib.lua``).

A waiter takes the stream's last id *before* it reads what it waits on (the order makes a
lost wake-up impossible: a change after the id is in the stream after it), then XREAD BLOCKs
after that id. The stream is only a wake-up: the task record stays the truth, and a waiter
re-reads it when an event names its task. Being in Redis, an event reaches waiters in every
server process, whichever one finished the task.

This module spells the commands and decodes their replies (the only place that indexes them).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mcp_queue_server.core.codec import text
from mcp_queue_server.core.keys import QueueKeys
from mcp_queue_server.core.models import TaskStatus

#: About how many entries a queue's events stream keeps (MAXLEN ~; spelled again in _lib.lua as events_maxlen).
EVENTS_MAXLEN = 10_000
#: Entries one XREAD returns at most; a waiter that falls further behind reads on from there.
EVENTS_PER_READ = 1_000
#: The id before every entry: what a waiter starts after when the stream is empty or missing.
FIRST_ID = "0-0"


class Finished(NamedTuple):
    """One entry of the events stream: the tasks one script call finished."""

    entry_id: str
    tasks: dict[str, TaskStatus]  #: task id -> completed or failed


def last_id_command(k: QueueKeys) -> tuple[Any, ...]:
    """The stream's newest entry (decoded by :func:`last_id`)."""
    return ("XREVRANGE", k.events, "+", "-", "COUNT", 1)


def last_id(reply: Any) -> str:
    """The id to wait after, from :func:`last_id_command`'s reply."""
    return text(reply[0][0]) if reply else FIRST_ID


def xread_command(k: QueueKeys, after: str, block_ms: int) -> tuple[Any, ...]:
    """Entries after ``after``, waiting up to ``block_ms`` for one (decoded by :func:`entries`)."""
    return ("XREAD", "COUNT", EVENTS_PER_READ, "BLOCK", block_ms, "STREAMS", k.events, after)


def entries(reply: Any) -> list[Finished]:
    """The entries of an XREAD of one stream (None, or [] / {} when the wait timed out)."""
    if not reply:
        return []
    # [[stream, [[id, fields]...]]] raw; redis-py parses fields to a dict; RESP3 is a map by stream.
    rows = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    out: list[Finished] = []
    for entry_id, fields in rows:
        flat = list(fields.items()) if isinstance(fields, dict) else list(zip(fields[::2], fields[1::2], strict=True))
        out.append(Finished(text(entry_id), {text(task): TaskStatus(text(state)) for task, state in flat}))
    return out
