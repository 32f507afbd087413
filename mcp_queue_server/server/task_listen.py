"""``notifications/tasks`` through ``subscriptions/listen`` with a ``taskIds`` filter (2026-07-28).

The tasks extension (SEP-2663) has a client listen for task status with
``subscriptions/listen {notifications: {taskIds: [...]}}``; the server acknowledges the ids it
agreed to watch and then sends ``notifications/tasks`` (the task as ``tasks/get`` states it) on
that stream whenever a watched task's status changes. The SDK's listen handler knows only the
core filter (list changes, resource URIs) and drops ``taskIds`` from its acknowledgement, so
:func:`serve_task_listen` wraps it through the server's public handler registry: a listen
without ``taskIds`` goes to the SDK's handler unchanged; one with ``taskIds`` is served here,
core filter included, from the same :class:`~.subscriptions.RedisSubscriptionBus`, whose
tailers read every server process's task events from Redis. So a client listening through
process A hears of a task a worker acked through process B.

Rules where the spec is silent:

* Ids the caller may not see (unknown, expired, another principal's) are left out of the
  acknowledgement, the same way for all three, so nothing leaks about others' tasks.
* A watched task already finished when the stream opens is announced right after the
  acknowledgement (it would otherwise never change again); a task is forgotten once terminal.
* At most :data:`MAX_TASK_IDS` ids per stream; more is -32602 (listen in several streams).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.subscriptions import SUBSCRIPTION_ID_META_KEY, ResourceUpdated, ServerEvent
from mcp.shared.subscriptions import event_matches, event_to_notification
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsAcknowledgedNotificationParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
)

from mcp_queue_server.errors import QueueError
from mcp_queue_server.server.sdk_compat import send_stream_notification
from mcp_queue_server.server.subscriptions import RedisSubscriptionBus, task_uri
from mcp_queue_server.server.tasks import (
    TASKS_EXTENSION,
    TaskRecord,
    detailed_task,
    is_terminal,
    load_record,
    task_info,
)
from mcp_queue_server.server.tasks_ext import QueueTasks, declares_tasks

#: The extension's status notification on a listen stream.
TASKS_NOTIFICATION = "notifications/tasks"
#: Most task ids one listen stream may watch.
MAX_TASK_IDS = 100
#: Events waiting for one stream's writer; a stream whose client stopped reading is ended there
#: (the SDK's rule: no replay, the client re-listens and re-reads).
MAX_BUFFERED = 1024
_LISTEN = "subscriptions/listen"


def _core_subset(requested: SubscriptionFilter) -> SubscriptionFilter:
    """The core part of ``requested`` this server honors (all of it, as the SDK's handler does)."""
    return SubscriptionFilter(
        tools_list_changed=True if requested.tools_list_changed else None,
        prompts_list_changed=True if requested.prompts_list_changed else None,
        resources_list_changed=True if requested.resources_list_changed else None,
        resource_subscriptions=list(requested.resource_subscriptions) if requested.resource_subscriptions else None,
    )


def _task_ids(requested: SubscriptionFilter) -> list[str] | None:
    """The filter's ``taskIds`` (None: absent), checked."""
    extra = requested.model_extra or {}
    if "taskIds" not in extra:
        return None
    ids = extra["taskIds"]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise MCPError(INVALID_PARAMS, "notifications.taskIds must be a list of task id strings")
    if len(ids) > MAX_TASK_IDS:
        many = f"notifications.taskIds has {len(ids)} ids, at most {MAX_TASK_IDS}"
        raise MCPError(INVALID_PARAMS, f"{many}: listen in several streams")
    return list(dict.fromkeys(ids))


def _missing_capability() -> MCPError:
    return MCPError(
        MISSING_REQUIRED_CLIENT_CAPABILITY,
        f"Missing required client capability: declare {TASKS_EXTENSION} to listen for taskIds",
        {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
    )


class TaskListen:
    """The ``subscriptions/listen`` handler: ``taskIds`` served here, everything else by ``inner``."""

    def __init__(self, inner: Callable[..., Any], bus: RedisSubscriptionBus, tasks: QueueTasks) -> None:
        self._inner = inner
        self._bus = bus
        self._tasks = tasks

    async def __call__(self, ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams) -> Any:
        ids = _task_ids(params.notifications)
        if ids is None:
            return await self._inner(ctx, params)
        if not declares_tasks(ctx):
            raise _missing_capability()
        if ctx.request_id is None:
            raise MCPError(INVALID_REQUEST, f"{_LISTEN} requires a request id")
        queue = await self._tasks.queue_of(ctx)
        principal, admin = self._tasks.caller(ctx)
        watched: dict[str, TaskRecord] = {}
        for task_id in ids:
            try:
                record = await load_record(queue, task_id, principal, admin)
            except MCPError:
                continue  # unknown, expired or not the caller's: not honored, not told why
            watched[task_uri(record.queue, record.task_id)] = record
        return await self._serve(ctx, params.notifications, watched)

    async def _serve(
        self, ctx: ServerRequestContext[Any, Any], requested: SubscriptionFilter, watched: dict[str, TaskRecord]
    ) -> SubscriptionsListenResult:
        subscription_id = ctx.request_id
        assert subscription_id is not None
        core = _core_subset(requested)
        core_uris = frozenset(core.resource_subscriptions or ())
        honored = core.model_copy(update={"taskIds": [r.task_id for r in watched.values()]})
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: subscription_id}
        queue = await self._tasks.queue_of(ctx)
        sent: dict[str, str] = {}  # task URI -> the status last announced
        send, receive = anyio.create_memory_object_stream[ServerEvent | str](MAX_BUFFERED)

        def hear(event: ServerEvent) -> None:
            wanted: ServerEvent | str | None = None
            if isinstance(event, ResourceUpdated) and event.uri in watched:
                wanted = event.uri
            if event_matches(core, core_uris, event):
                self._put(send, event)
            if wanted is not None:
                self._put(send, wanted)

        async def announce(uri: str) -> None:
            record = watched.get(uri)
            if record is None:
                return
            try:
                info = await task_info(queue, record)
            except QueueError:
                return  # the store is away: the next event (or the client's poll) reads again
            task = detailed_task(record, info)
            if sent.get(uri) == task["status"]:
                return
            sent[uri] = task["status"]
            if is_terminal(info):
                del watched[uri]
            await send_stream_notification(ctx, TASKS_NOTIFICATION, {**task, "_meta": meta})

        unsubscribe = self._bus.subscribe(hear)  # before the ack: a change meanwhile is buffered
        try:
            await ctx.session.send_notification(
                SubscriptionsAcknowledgedNotification(
                    params=SubscriptionsAcknowledgedNotificationParams(notifications=honored, _meta=meta)
                ),
                related_request_id=subscription_id,
            )
            sent.update(dict.fromkeys(watched, "working"))
            for uri in list(watched):
                await announce(uri)  # announced only if it finished before the stream opened
            async for item in receive:
                if isinstance(item, str):
                    await announce(item)
                else:
                    await ctx.session.send_notification(
                        event_to_notification(item, meta), related_request_id=subscription_id
                    )
        finally:
            unsubscribe()
            send.close()
            receive.close()
        return SubscriptionsListenResult(_meta=meta)

    @staticmethod
    def _put(send: MemoryObjectSendStream[ServerEvent | str], item: ServerEvent | str) -> None:
        try:
            send.send_nowait(item)
        except anyio.ClosedResourceError:
            pass
        except anyio.WouldBlock:
            send.close()  # the client stopped reading: end the stream (no replay; it re-listens)


def serve_task_listen(server: Server[Any], bus: RedisSubscriptionBus, tasks: QueueTasks) -> None:
    """Wrap ``server``'s ``subscriptions/listen`` handler so listens with ``taskIds`` are served.

    Only the public registry is used (``get_request_handler`` / ``add_request_handler``); the
    SDK's handler keeps serving every listen without ``taskIds``.
    """
    entry = server.get_request_handler(_LISTEN)
    if entry is None:
        return  # the server was built without subscriptions
    server.add_request_handler(_LISTEN, SubscriptionsListenRequestParams, TaskListen(entry.handler, bus, tasks))
