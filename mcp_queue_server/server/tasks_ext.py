"""MCP Tasks on both lanes, through the SDK's public hooks (records in :mod:`.tasks`).

* 2025-11-25 (core, experimental): a server middleware adds ``capabilities.tasks`` to the
  initialize result and ``execution.taskSupport: "optional"`` to enqueue_task and fanout in
  tools/list (absent, the spec's "forbidden", everywhere else), and answers a ``tools/call``
  carrying ``task`` with ``CreateTaskResult``: the SDK's per-version sieve would cut that result
  down to a ``CallToolResult``, so it is built above the sieve, after the tool ran as usual.
  ``tasks/get``, ``tasks/result``, ``tasks/list`` and ``tasks/cancel`` are extension methods
  (the SDK routes no ``tasks/*`` method itself). The session that created a task is sent
  ``notifications/tasks/status`` (the task object) when it ends (completed, failed or
  cancelled), whichever server process ended it: :class:`SessionTaskStatus` listens on the
  Redis-fed subscription bus for the session's lifetime, for the ids created in it.
* 2026-07-28 (the ``io.modelcontextprotocol/tasks`` extension, SEP-2663): the extension is
  declared in ``capabilities.extensions``; a ``tools/call`` of enqueue_task or fanout whose
  per-request client capabilities declare it is answered, by the extension's ``tools/call``
  interceptor, with a task handle (``resultType: "task"``); ``tasks/get`` answers
  ``resultType: "complete"`` with the result inline once the task is done, ``tasks/cancel``
  acknowledges, ``tasks/update`` is refused (these tasks never ask for input).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import MCPError
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.subscriptions import ResourceUpdated, ServerEvent
from mcp.types import INVALID_PARAMS, INVALID_REQUEST, CallToolRequestParams, PaginatedRequestParams, RequestParams
from mcp_types import CLIENT_CAPABILITIES_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict

from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.errors import QueueError
from mcp_queue_server.server.identity import ANONYMOUS, Principals, principal_of
from mcp_queue_server.server.lifespan import ServerState
from mcp_queue_server.server.sdk_compat import request_connection
from mcp_queue_server.server.subscriptions import RedisSubscriptionBus, bus_for, task_uri
from mcp_queue_server.server.tasks import (
    RELATED_TASK_META,
    TASK_TOOLS,
    TASKS_EXTENSION,
    TaskRecord,
    call_tool_result,
    create_record,
    detailed_task,
    handle_fields,
    invalid,
    is_terminal,
    load_record,
    now_ms,
    owned_ids,
    task_fields,
    task_info,
    ttl_for,
)
from mcp_queue_server.settings import Role

#: The protocol revision of the core tasks lane.
CORE_TASKS_VERSION = "2025-11-25"
_CORE = frozenset({CORE_TASKS_VERSION})
_MODERN = frozenset(MODERN_PROTOCOL_VERSIONS)
#: tasks/list page size.
LIST_PAGE = 50
#: Longest single wait of tasks/result on the events stream; it waits again until the task ends.
RESULT_SLICE_MS = 10_000

CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
#: The 2025-11-25 notification of a task's new status.
STATUS_NOTIFICATION = "notifications/tasks/status"
#: Task updates waiting for one session's pump; beyond this the newest are dropped (best-effort).
MAX_PENDING = 256
#: Where a connection keeps its task-status watcher (``Connection.state``).
_STATUS_KEY = "mcp_queue_server.task_status"

logger = logging.getLogger(__name__)


class SessionTaskStatus:
    """Sends ``notifications/tasks/status`` to one session for the tasks it created.

    While the session has unfinished tasks it listens on the bus (whose tailers read every
    process's task events from Redis); a pump task of its own re-reads a named task and, when
    its status changed, sends the task object on the session's standalone stream. A task is
    forgotten once terminal; the listener stops with the session (or when none is left).
    """

    def __init__(self, bus: RedisSubscriptionBus, connection: Connection, queue: TaskQueue) -> None:
        self._bus = bus
        self._connection = connection
        self._queue = queue
        #: Watched tasks by ``task://`` URI: the record and the status last sent.
        self._tasks: dict[str, tuple[TaskRecord, str]] = {}
        self._unlisten: Callable[[], None] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._send: MemoryObjectSendStream[str] | None = None

    def watch(self, record: TaskRecord, status: str) -> None:
        if status != "working":
            return
        self._tasks[task_uri(record.queue, record.task_id)] = (record, status)
        if self._unlisten is None:
            self._send, receive = anyio.create_memory_object_stream[str](MAX_PENDING)
            self._pump = asyncio.get_running_loop().create_task(self._forward(receive))
            self._unlisten = self._bus.subscribe(self.hear)

    def hear(self, event: ServerEvent) -> None:
        if not isinstance(event, ResourceUpdated) or event.uri not in self._tasks or self._send is None:
            return
        try:
            self._send.send_nowait(event.uri)
        except anyio.WouldBlock:
            logger.debug("session %s is behind: dropped a status of %s", self._connection.session_id, event.uri)

    async def _forward(self, receive: MemoryObjectReceiveStream[str]) -> None:
        async with receive:
            async for uri in receive:
                watched = self._tasks.get(uri)
                if watched is None:
                    continue
                record, sent = watched
                try:
                    info = await task_info(self._queue, record)
                except QueueError as exc:
                    logger.warning("cannot read task %s for its status notification: %s", record.task_id, exc)
                    continue
                task = task_fields(record, info)
                if task["status"] == sent:
                    continue
                if is_terminal(info):
                    self._tasks.pop(uri, None)
                else:
                    self._tasks[uri] = (record, task["status"])
                await self._connection.notify(STATUS_NOTIFICATION, task)  # never raises: best-effort
                if not self._tasks:
                    self.close()
                    return

    def close(self) -> None:
        """Stop listening (no task left, or the session ended)."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._send is not None:
            self._send.close()
            self._send = None
        pump, self._pump = self._pump, None
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether the request's own client capabilities declare the tasks extension."""
    meta = (ctx.params or {}).get("_meta") if isinstance(ctx.params, Mapping) else None
    caps = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, Mapping) else None
    extensions = caps.get("extensions") if isinstance(caps, Mapping) else None
    return isinstance(extensions, Mapping) and TASKS_EXTENSION in extensions


class TaskIdParams(RequestParams):
    """The params of tasks/get, tasks/result and tasks/cancel."""

    task_id: str


class UpdateParams(RequestParams):
    model_config = ConfigDict(extra="allow")


def _dump(result: HandlerResult) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dict(cast(Mapping[str, Any], result or {}))


def _error_text(result: Mapping[str, Any]) -> str:
    texts = [c.get("text", "") for c in result.get("content", []) if isinstance(c, Mapping)]
    return " ".join(str(t) for t in texts) or "the tool call failed"


class QueueTasks(Extension):
    """MCP Tasks over the queue (see the module docstring); also the server middleware."""

    identifier = TASKS_EXTENSION

    def __init__(self, principals: Principals) -> None:
        self.principals = principals

    # -- who asks --------------------------------------------------------------------------

    def caller(self, ctx: ServerRequestContext[Any, Any]) -> tuple[str, bool]:
        """The request's principal, and whether it is an admin (who sees every task)."""
        principal = principal_of(ctx.request)
        named = self.principals.by_name.get(principal or "")
        return principal or ANONYMOUS, named is not None and named.role is Role.ADMIN

    @staticmethod
    async def queue_of(ctx: ServerRequestContext[Any, Any]) -> TaskQueue:
        state = cast(ServerState, ctx.lifespan_context)
        return await state.queue()

    async def _record(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> tuple[TaskQueue, TaskRecord]:
        q = await self.queue_of(ctx)
        principal, admin = self.caller(ctx)
        return q, await load_record(q, task_id, principal, admin)

    async def _create(
        self, ctx: ServerRequestContext[Any, Any], tool: str, output: dict[str, Any], ttl: object
    ) -> tuple[TaskQueue, TaskRecord]:
        q = await self.queue_of(ctx)
        task_id = output.get("task_id") or output.get("parent_task_id")
        if not isinstance(task_id, str):
            raise MCPError(INVALID_REQUEST, f"{tool} returned no task id to follow")
        principal, _ = self.caller(ctx)
        record = TaskRecord(
            task_id,
            str(output.get("queue", "default")),
            tool,
            principal,
            now_ms(),
            ttl_for(ttl, q.settings.result_ttl_s),
            output,
        )
        await create_record(q, record)
        return q, record

    # -- 2025-11-25: the server middleware ---------------------------------------------------

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        if ctx.method == "tools/call" and "task" in params and ctx.protocol_version not in _MODERN:
            return await self._call_as_task(ctx, params, call_next)
        result = await call_next(ctx)
        if not isinstance(result, dict):
            return result
        if ctx.method == "initialize" and result.get("protocolVersion") == CORE_TASKS_VERSION:
            capabilities = dict(result.get("capabilities") or {})
            capabilities["tasks"] = CAPABILITY
            return {**result, "capabilities": capabilities}
        if ctx.method == "tools/list" and ctx.protocol_version == CORE_TASKS_VERSION:
            tools = [
                {**t, "execution": {"taskSupport": "optional"}} if t.get("name") in TASK_TOOLS else t
                for t in result.get("tools", [])
            ]
            return {**result, "tools": tools}
        return result

    async def _call_as_task(
        self, ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any], call_next: CallNext
    ) -> HandlerResult:
        name = params.get("name")
        if ctx.protocol_version != CORE_TASKS_VERSION:
            raise invalid(f"task-augmented tools/call needs protocol version {CORE_TASKS_VERSION}")
        if name not in TASK_TOOLS:
            raise invalid(
                f"{str(name)[:100]} cannot run as a task (its execution.taskSupport is forbidden): "
                f"call it without task; tools that can: {', '.join(sorted(TASK_TOOLS))}"
            )
        task = params.get("task")
        if not isinstance(task, Mapping):
            raise invalid('task must be an object such as {"ttl": 60000}')
        ttl = cast(Mapping[str, Any], task).get("ttl")
        q = await self.queue_of(ctx)
        ttl_for(ttl, q.settings.result_ttl_s)  # refuse a bad ttl before enqueuing anything
        plain = {k: v for k, v in params.items() if k != "task"}
        result = _dump(await call_next(dataclasses.replace(ctx, params=plain)))
        output = result.get("structuredContent")
        if result.get("isError") or not isinstance(output, dict):
            raise invalid(f"{name} refused the call, no task was created: {_error_text(result)}")
        q, record = await self._create(ctx, str(name), cast(dict[str, Any], output), ttl)
        task = task_fields(record, await task_info(q, record))
        self._notify_session(ctx, q, record, task["status"])
        return {"task": task}

    @staticmethod
    def _notify_session(ctx: ServerRequestContext[Any, Any], q: TaskQueue, record: TaskRecord, status: str) -> None:
        """Have the creating session told when the task's status changes (if it has a stream)."""
        connection = request_connection(ctx)
        if not connection.has_standalone_channel:
            return
        watcher = connection.state.get(_STATUS_KEY)
        if not isinstance(watcher, SessionTaskStatus):
            bus = bus_for(cast(ServerState, ctx.lifespan_context))
            watcher = connection.state[_STATUS_KEY] = SessionTaskStatus(bus, connection, q)
            connection.exit_stack.callback(watcher.close)
        watcher.watch(record, status)

    # -- 2026-07-28: the tools/call interceptor -----------------------------------------------

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.protocol_version not in _MODERN or params.name not in TASK_TOOLS or not declares_tasks(ctx):
            return await call_next(ctx)
        result = _dump(await call_next(ctx))
        output = result.get("structuredContent")
        if result.get("isError") or not isinstance(output, dict):
            return result
        q, record = await self._create(ctx, params.name, cast(dict[str, Any], output), None)
        return {"resultType": "task", **handle_fields(record, await task_info(q, record))}

    # -- tasks/* -----------------------------------------------------------------------------

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding("tasks/get", TaskIdParams, self.get),
            MethodBinding("tasks/cancel", TaskIdParams, self.cancel),
            MethodBinding("tasks/result", TaskIdParams, self.result, protocol_versions=_CORE),
            MethodBinding("tasks/list", PaginatedRequestParams, self.list, protocol_versions=_CORE),
            MethodBinding("tasks/update", UpdateParams, self.update, protocol_versions=_MODERN),
        )

    async def get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        q, record = await self._record(ctx, params.task_id)
        info = await task_info(q, record)
        if ctx.protocol_version not in _MODERN:
            return task_fields(record, info)
        return {"resultType": "complete", **detailed_task(record, info)}

    async def result(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        """Wait until the task ends (woken by the queue's events stream), then its final result."""
        q, record = await self._record(ctx, params.task_id)
        slice_ms = min(RESULT_SLICE_MS, q.settings.max_block_ms)
        while True:
            info = await task_info(q, record, wait_ms=slice_ms)
            if is_terminal(info):
                break
            q, record = await self._record(ctx, params.task_id)  # still there (not expired)?
        final = call_tool_result(record, info)
        return {**final, "_meta": {RELATED_TASK_META: {"taskId": record.task_id}}}

    async def list(self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams) -> HandlerResult:
        q = await self.queue_of(ctx)
        principal, admin = self.caller(ctx)
        start = int(params.cursor) if params.cursor and params.cursor.isdigit() else 0
        ids = await owned_ids(q, principal)
        page: list[dict[str, Any]] = []
        for task_id in ids[start : start + LIST_PAGE]:
            try:
                record = await load_record(q, task_id, principal, admin)
            except MCPError:
                continue  # expired since the index was read
            page.append(task_fields(record, await task_info(q, record)))
        more = start + LIST_PAGE < len(ids)
        return {"tasks": page, **({"nextCursor": str(start + LIST_PAGE)} if more else {})}

    async def cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        q, record = await self._record(ctx, params.task_id)
        info = await task_info(q, record)
        if is_terminal(info):
            status = "gone" if info is None else str(info.status)
            raise MCPError(INVALID_PARAMS, f"task {record.task_id} is already {status}: it cannot be cancelled")
        cancel = getattr(q, "cancel", None)
        if cancel is None:
            raise MCPError(INVALID_REQUEST, "this server's queue cannot cancel tasks yet (TaskQueue.cancel is missing)")
        try:
            # Queued or delayed: cancelled at once; working: on request (its worker learns it
            # when renewing the lease), so the task may still read "working" here.
            await cancel(record.task_id, "cancelled through MCP tasks/cancel", queue=record.queue)
        except QueueError as exc:
            raise invalid(f"task {record.task_id} cannot be cancelled: {exc}") from None
        info = await task_info(q, record)
        if ctx.protocol_version in _MODERN:
            return {}
        return task_fields(record, info)

    async def update(self, ctx: ServerRequestContext[Any, Any], params: UpdateParams) -> HandlerResult:
        raise MCPError(INVALID_REQUEST, "tasks/update is not supported: these tasks never ask for input")
