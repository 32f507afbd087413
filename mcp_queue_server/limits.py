"""Every bound and pattern of the queue's inputs, and the checks that apply them.

The one home of these contracts: the core checks them, the tool schemas and the settings
take them from here. Names and ids end up inside Redis key names, so they come from an
allowlist; JSON is bounded in size and depth before it reaches Redis.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mcp_queue_server.errors import InvalidInput

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
TASK_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
TASK_TYPE_PATTERN = r"^[A-Za-z0-9_.:/-]{1,128}$"
#: A schedule's id: its tasks' ids are "<schedule_id>-<slot ms>", within TASK_ID_PATTERN's 128.
SCHEDULE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
#: next_cursor of inspect_dlq: a stream entry id ("<ms>-<seq>", at most 20 + 1 + 20 digits).
CURSOR_PATTERN = r"^[0-9-]{1,41}$"
CURSOR_MAX_LENGTH = 41
#: next_cursor of list_tasks: "<state>:<a>:<b>", an index position (a stream entry id, or a
#: zset score and member); opaque to callers, checked against the state by check_list_cursor.
LIST_CURSOR_PATTERN = r"^[a-z_]{1,16}:[A-Za-z0-9-]{1,41}:[A-Za-z0-9_.-]{0,128}$"
LIST_CURSOR_MAX_LENGTH = 187

DAY_MS = 86_400_000
MAX_DELAY_MS = 365 * DAY_MS  #: longest delay of an enqueue
MAX_ATTEMPTS = 1000  #: most deliveries a task may be allowed
MAX_DEADLINE_MS = 365 * DAY_MS  #: longest deadline_ms of a task (from its enqueue)
PRIORITY_RANGE = (-1_000_000, 1_000_000)
MAX_ERROR_LENGTH = 4096  #: characters of a fail_task error
MAX_CHECKPOINT_TTL_S = 30 * 86_400
MAX_MIN_IDLE_MS = 30 * DAY_MS  #: recover(min_idle_ms=) upper bound
#: recover(min_idle_ms=) lower bound: below a second, "idle" would take tasks a worker is
#: still running (a lease renewal or an ack can be that far apart); stuck tasks are idle for
#: far longer than this.
MIN_RECOVER_IDLE_MS = 1000
HEARTBEAT_INTERVAL_S = 20.0  #: how often a worker or server says "alive" for the queues it uses
#: A holder (worker, server) not heard from for this long is gone: 3 heartbeat intervals.
HOLDER_STALE_MS = 60_000
#: A client re-adds a queue to the registry this often (once per queue and process in between),
#: so a queue forgotten while a producer still uses it comes back within this time.
REGISTRY_REFRESH_S = 60.0
MAX_SUBTASKS = 1000  #: children of one fanout
MAX_BATCH = 100  #: tasks of one enqueue_batch tool call
MAX_IDS = 1000  #: task ids of one bulk ack, replay or purge tool call
MAX_DLQ_PAGE = 1000  #: inspect_dlq page size (the tool allows MAX_TOOL_PAGE)
MAX_TOOL_PAGE = 100  #: a page returned to a model
STATS_PAGE = 100  #: queues per page of queue_stats over every queue, and per round trip of their scripts
MAX_CANCEL_IDS = 100  #: task ids of one cancel_task call
MIN_EVERY_MS = 1000  #: shortest interval of a schedule: each slot costs a firing round trip or two
#: A slot fires on time if some process sees it within this long (and before the next slot);
#: later it is missed, and the schedule's catch_up decides (skip it, or fire once for all missed).
SCHEDULE_GRACE_MS = 60_000
#: How often the server, the Worker runtime and a read look for due schedules at the most
#: (a ticker sleeps until the next slot when that is sooner).
SCHEDULE_TICK_S = 1.0
#: A task's limit_key: the same alphabet as task types (it ends up in Redis key names).
LIMIT_KEY_PATTERN = TASK_TYPE_PATTERN
MAX_LIMIT = 1_000_000  #: largest max_working / max_per_minute of a limit
MAX_SAGA_STEPS = 50  #: steps of one saga
SAGA_BRANCHES = (2, 100)  #: branches of one parallel saga step
MAX_SAGA_BYTES = 4 * 1024 * 1024  #: all payloads of one saga together (the MCP request cap)
#: A saga id leaves room for its tasks' suffixes (".c50.b100") within a task id's 128 characters.
SAGA_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,118}$"

_NAME_RE = re.compile(NAME_PATTERN)
_TASK_ID_RE = re.compile(TASK_ID_PATTERN)
_TASK_TYPE_RE = re.compile(TASK_TYPE_PATTERN)
_SCHEDULE_ID_RE = re.compile(SCHEDULE_ID_PATTERN)
_SAGA_ID_RE = re.compile(SAGA_ID_PATTERN)
_CURSOR_RE = re.compile(CURSOR_PATTERN)
_LIST_CURSOR_RE = re.compile(LIST_CURSOR_PATTERN)
_ENTRY_ID_RE = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
_SCORE_RE = re.compile(r"^-?[0-9]{1,19}$")


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_queue_name(name: object) -> str:
    """Return ``name`` if it is an allowed queue name, else raise :class:`InvalidInput`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInput(f"invalid queue name {_describe(name)}: use 1-64 characters from A-Z a-z 0-9 _ . -")
    return name


def check_task_id(task_id: object) -> str:
    """Return ``task_id`` if it is an allowed task id, else raise :class:`InvalidInput`."""
    if not isinstance(task_id, str) or not _TASK_ID_RE.fullmatch(task_id):
        raise InvalidInput(f"invalid task id {_describe(task_id)}: use 1-128 characters from A-Z a-z 0-9 _ . -")
    return task_id


def check_saga_id(saga_id: object) -> str:
    """Return ``saga_id`` if it is an allowed saga id, else raise :class:`InvalidInput`."""
    if not isinstance(saga_id, str) or not _SAGA_ID_RE.fullmatch(saga_id):
        raise InvalidInput(f"invalid saga id {_describe(saga_id)}: use 1-118 characters from A-Z a-z 0-9 _ . -")
    return saga_id


def check_task_type(task_type: object) -> str:
    """Return ``task_type`` if it is an allowed task type, else raise :class:`InvalidInput`."""
    if not isinstance(task_type, str) or not _TASK_TYPE_RE.fullmatch(task_type):
        raise InvalidInput(f"invalid task type {_describe(task_type)}: use 1-128 characters from A-Z a-z 0-9 _ . : / -")
    return task_type


def check_schedule_id(schedule_id: object) -> str:
    if not isinstance(schedule_id, str) or not _SCHEDULE_ID_RE.match(schedule_id):
        raise InvalidInput(
            f"schedule_id must match {SCHEDULE_ID_PATTERN} (letters, digits, _ . -; up to 100), got "
            f"{_describe(schedule_id)}"
        )
    return schedule_id


def check_limit_key(key: object) -> str:
    """Return ``key`` if it is an allowed limit key, else raise :class:`InvalidInput`."""
    if not isinstance(key, str) or not _TASK_TYPE_RE.fullmatch(key):
        raise InvalidInput(f"invalid limit_key {_describe(key)}: use 1-128 characters from A-Z a-z 0-9 _ . : / -")
    return key


def check_int(name: str, value: object, low: int, high: int) -> int:
    """Return ``value`` if it is an int (not a bool) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, got {value}")
    return value


def check_error(error: object) -> str:
    """Return ``error`` if it is a non-empty string within :data:`MAX_ERROR_LENGTH`."""
    if not isinstance(error, str) or not error or len(error) > MAX_ERROR_LENGTH:
        raise InvalidInput(f"error must be a non-empty string of at most {MAX_ERROR_LENGTH} characters")
    return error


def check_cursor(cursor: object) -> str:
    """Return ``cursor`` if it looks like a ``next_cursor`` (a stream entry id)."""
    if not isinstance(cursor, str) or not _CURSOR_RE.fullmatch(cursor):
        raise InvalidInput("cursor must be a next_cursor value returned by an earlier inspect_dlq call")
    return cursor


def check_stats_cursor(cursor: object) -> str:
    """A ``next_cursor`` of a page of every queue's statistics: the last queue name of that page."""
    if not isinstance(cursor, str) or not _NAME_RE.fullmatch(cursor):
        raise InvalidInput(f"cursor {_describe(cursor)} is not a next_cursor of queue_stats: pass one back as returned")
    return cursor


def check_list_cursor(state: str, cursor: object) -> tuple[str, str]:
    """The index position a list_tasks ``next_cursor`` of ``state`` names: (a, b) as list_tasks.lua
    reads them. Refuses anything an earlier page of the same state did not return."""
    bad = InvalidInput(f"cursor must be a next_cursor value returned by an earlier list_tasks call for state {state}")
    if not isinstance(cursor, str) or len(cursor) > LIST_CURSOR_MAX_LENGTH or not _LIST_CURSOR_RE.fullmatch(cursor):
        raise bad
    kind, a, b = cursor.split(":", 2)
    if kind != state:
        raise bad
    if state == "queued":
        ok = (a in ("high", "low") and bool(_ENTRY_ID_RE.fullmatch(b))) or (a == "parked" and (b == "" or b.isdigit()))
    elif state == "failed":
        ok = bool(_ENTRY_ID_RE.fullmatch(a)) and b == ""
    else:
        ok = bool(_SCORE_RE.fullmatch(a) and _TASK_ID_RE.fullmatch(b))
    if not ok:
        raise bad
    return a, b


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests containers deeper than ``limit`` (iterative: no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


#: Built once: ``json.dumps`` with non-default options builds a new encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dump_json(name: str, value: Any, max_bytes: int) -> str:
    """Serialise ``value`` compactly, refusing NaN/Infinity and anything over ``max_bytes``."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be JSON (no NaN or Infinity): {exc}") from None
    # A character takes at most 4 bytes in UTF-8: short texts need no encoding to be measured.
    size = len(text) if len(text) * 4 <= max_bytes else len(text.encode())
    if size > max_bytes:
        raise InvalidInput(
            f"{name} is {_size(size)}, limit {_size(max_bytes)}: store large data elsewhere and pass a reference"
        )
    return text


def _size(n: int) -> str:
    return f"{n} bytes" if n < 10_240 else f"{n / 1024:.0f} KiB"
