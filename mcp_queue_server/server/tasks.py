"""MCP Tasks as a view of the durable queue (issue 14, part 2): records, statuses, results.

A tool call made as an MCP task (``enqueue_task`` or ``fanout``) enqueues as usual; the MCP
task id IS the queue task id (the fanout's parent id), so the task survives restarts, can be
followed through any server process sharing the store, and is worked by any agent calling
read_tasks or by the worker runtime. What the queue does not keep is kept in a small side
record, one Redis hash per MCP task (``<prefix>:mcptask:<task_id>``): the queue, the tool, the
creating principal, the ttl and the creating call's own output. It expires with the task's
ttl (the requested one, capped by ``result_ttl_s``); an expired or unknown id is -32602.

Status, from the queue's: ``working`` while queued, delayed, working or waiting_children;
``completed`` once acked; ``failed`` once dead-lettered; ``cancelled`` once cancelled. The
final result is the tool's own output plus ``status`` and the worker's ``result`` (or
``error``); a fanout's adds the subtasks' ``results`` (the output schemas allow these fields).

The wiring to the two protocol lanes is in :mod:`~mcp_queue_server.server.tasks_ext`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mcp import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS

from mcp_queue_server.core.models import TaskInfo
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.errors import TaskNotFound

#: The tools a client may call as a task; every other tool forbids it (it already waits, or is quick).
TASK_TOOLS = frozenset({"enqueue_task", "fanout"})
#: The polling interval suggested to clients (they may also wait on tasks/result or subscribe).
POLL_INTERVAL_MS = 1_000
#: The identifier of the 2026-07-28 tasks extension (SEP-2663).
TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
#: ``_meta`` key tying a result to its task (2025-11-25).
RELATED_TASK_META = "io.modelcontextprotocol/related-task"
#: Queue statuses still running, seen as ``working``.
_RUNNING = {"queued", "delayed", "working", "waiting_children"}


def record_key(queue: TaskQueue, task_id: str) -> str:
    return f"{queue.settings.key_prefix}:mcptask:{task_id}"


def owner_index_key(queue: TaskQueue, principal: str) -> str:
    return f"{queue.settings.key_prefix}:mcptasks:{principal}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def invalid(message: str) -> MCPError:
    return MCPError(INVALID_PARAMS, message)


@dataclass(frozen=True)
class TaskRecord:
    """What the side hash keeps about one MCP task."""

    task_id: str
    queue: str
    tool: str
    principal: str
    created_at: int
    ttl_ms: int
    output: dict[str, Any]

    def fields(self) -> dict[str, str]:
        return {
            "queue": self.queue,
            "tool": self.tool,
            "principal": self.principal,
            "created_at": str(self.created_at),
            "ttl_ms": str(self.ttl_ms),
            "output": json.dumps(self.output, separators=(",", ":")),
        }


def ttl_for(requested: object, result_ttl_s: int) -> int:
    """The ttl a task gets: the requested one (ms, a positive integer) capped by ``result_ttl_s``.

    Raises:
        MCPError: -32602 when ``requested`` is not a positive integer.
    """
    cap = result_ttl_s * 1000
    if requested is None:
        return cap
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise invalid(f"task ttl must be a positive integer of milliseconds (at most {cap}), got {requested!r}")
    return min(requested, cap)


async def create_record(queue: TaskQueue, record: TaskRecord) -> None:
    key = record_key(queue, record.task_id)
    redis: Any = queue.redis
    await redis.hset(key, mapping=record.fields())
    await redis.pexpire(key, record.ttl_ms)
    index = owner_index_key(queue, record.principal)
    await redis.zadd(index, {record.task_id: record.created_at})
    await redis.pexpire(index, queue.settings.result_ttl_s * 1000)


async def load_record(queue: TaskQueue, task_id: str, principal: str, admin: bool) -> TaskRecord:
    """The record of ``task_id`` if ``principal`` may see it (its creator, or an admin).

    Raises:
        MCPError: -32602 for an unknown or expired id, and for another principal's task (the
            same words: the caller learns nothing about others' tasks).
    """
    raw: Any = await queue.redis.hgetall(record_key(queue, task_id)) if task_id else {}
    fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
    if not fields or (fields["principal"] != principal and not admin):
        raise invalid(f"unknown task {task_id[:200]!r}: no such task, it expired, or it is not yours")
    return TaskRecord(
        task_id,
        fields["queue"],
        fields["tool"],
        fields["principal"],
        int(fields["created_at"]),
        int(fields["ttl_ms"]),
        json.loads(fields["output"]),
    )


async def owned_ids(queue: TaskQueue, principal: str) -> list[str]:
    """The ids of ``principal``'s tasks, oldest first (expired ones are dropped from the index)."""
    redis: Any = queue.redis
    index = owner_index_key(queue, principal)
    ids = [_text(i) for i in await redis.zrange(index, 0, -1)]
    alive = [i for i in ids if await redis.exists(record_key(queue, i))]
    gone = [i for i in ids if i not in alive]
    if gone:
        await redis.zrem(index, *gone)
    return alive


async def task_info(queue: TaskQueue, record: TaskRecord, wait_ms: int = 0) -> TaskInfo | None:
    """The queue's view of the task (None: the queue record is gone)."""
    try:
        if wait_ms:
            return await queue.wait_for_task(record.task_id, wait_ms, queue=record.queue)
        return await queue.get_task(record.task_id, queue=record.queue)
    except TaskNotFound:
        return None


def mcp_status(info: TaskInfo | None) -> str:
    if info is None:
        return "failed"
    status = str(info.status)
    return "working" if status in _RUNNING else status


def is_terminal(info: TaskInfo | None) -> bool:
    return mcp_status(info) != "working"


def status_message(info: TaskInfo | None) -> str:
    if info is None:
        return "the queue no longer holds this task"
    if info.error:
        return f"{info.status}: {info.error}"
    return f"queue status {info.status}"


def task_fields(record: TaskRecord, info: TaskInfo | None) -> dict[str, Any]:
    """The task as 2025-11-25 states it (``Task``)."""
    updated = (info.finished_at if info else None) or record.created_at
    return {
        "taskId": record.task_id,
        "status": mcp_status(info),
        "statusMessage": status_message(info),
        "createdAt": iso(record.created_at),
        "lastUpdatedAt": iso(max(updated, record.created_at)),
        "ttl": record.ttl_ms,
        "pollInterval": POLL_INTERVAL_MS,
    }


def handle_fields(record: TaskRecord, info: TaskInfo | None) -> dict[str, Any]:
    """The task as the 2026-07-28 extension states it (the task handle)."""
    task = task_fields(record, info)
    return {
        "taskId": task["taskId"],
        "status": task["status"],
        "statusMessage": task["statusMessage"],
        "createdAt": task["createdAt"],
        "lastUpdatedAt": task["lastUpdatedAt"],
        "ttlMs": record.ttl_ms,
        "pollIntervalMs": POLL_INTERVAL_MS,
    }


def final_output(record: TaskRecord, info: TaskInfo | None) -> dict[str, Any]:
    """The tool's output with the task's final status and the workers' result or error."""
    out = dict(record.output)
    if info is None:
        out["error"] = "the queue no longer holds this task (its record expired or was purged)"
        return out
    if record.tool == "fanout":
        out["status"] = str(info.status)
        if info.fanout is not None:
            out["results"] = info.fanout.results
    else:
        out["status"] = str(info.status)
        if info.result is not None:
            out["result"] = info.result
    if info.error:
        out["error"] = info.error
    return out


def call_tool_result(record: TaskRecord, info: TaskInfo | None) -> dict[str, Any]:
    """The final ``CallToolResult`` of a terminal task (``isError`` unless it completed)."""
    out = final_output(record, info)
    return {
        "content": [{"type": "text", "text": json.dumps(out, separators=(",", ":"), ensure_ascii=False)}],
        "structuredContent": out,
        "isError": mcp_status(info) != "completed",
    }


def detailed_task(record: TaskRecord, info: TaskInfo | None) -> dict[str, Any]:
    """The task as the 2026-07-28 extension's ``tasks/get`` and ``notifications/tasks`` state it.

    Terminal tasks carry the final ``CallToolResult`` inline as ``result``; a failed one (dead-
    lettered, or its queue record gone) also carries the ``error`` object the spec requires of
    ``failed``, its message the status message.
    """
    task = handle_fields(record, info)
    if is_terminal(info):
        # As a 2026-07-28 tools/call would have answered: results there carry resultType.
        task["result"] = {"resultType": "complete", **call_tool_result(record, info)}
        if task["status"] == "failed":
            task["error"] = {"code": INTERNAL_ERROR, "message": status_message(info)}
    return task
