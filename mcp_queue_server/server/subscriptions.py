"""Resource subscriptions backed by Redis: a task's subscriber hears of it whichever process changed it.

The SDK serves ``subscriptions/listen`` (SEP-2575) over a pluggable ``SubscriptionBus``;
its default keeps events in process memory, so a client listening through server process A
would never hear of a task that process B finished. :class:`RedisSubscriptionBus` feeds the
bus from the queues' events streams (:mod:`mcp_queue_server.core.events`), which every script
that finishes a task writes to: while anyone listens, one tailer per known queue waits in
XREAD BLOCK on ``<base>events`` and publishes, for each entry,

* ``ResourceUpdated("task://<queue>/<task_id>")`` for every task it names (completed, failed);
* one ``ResourceUpdated("queue://<queue>/stats")`` (its totals changed).

The same bus serves the older ``resources/subscribe`` / ``resources/unsubscribe`` (the session
revisions, 2025-11-25 and before; :func:`serve_resource_subscriptions`): each session that
subscribes listens on the bus while it has subscriptions and is sent
``notifications/resources/updated {uri}`` for the URIs it named; it stops when the session ends.

Events the server publishes itself (``ctx.notify_*``) reach this process's listeners only.
Delivery follows the spec: fire-and-forget, no replay; a listener re-reads the resource.

Tailers start a little in the past (:data:`START_MARGIN_MS` before the first listener came),
so a task finished while the tailer was still starting is announced rather than lost (a
listener may hear of a change twice: it re-reads either way). Queues added to the registry
later are picked up within :data:`REGISTRY_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import MCPError, types
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.subscriptions import ResourceUpdated, ServerEvent
from mcp.types import INVALID_PARAMS, INVALID_REQUEST

from mcp_queue_server.errors import InvalidInput, QueueError
from mcp_queue_server.limits import check_queue_name, check_task_id
from mcp_queue_server.server.resources import RESOURCE_ROLES
from mcp_queue_server.server.sdk_compat import request_connection
from mcp_queue_server.settings import Role

if TYPE_CHECKING:
    from mcp_queue_server.core.queue import TaskQueue
    from mcp_queue_server.server.lifespan import ServerState

logger = logging.getLogger(__name__)

#: How far before the first listener the tailers start reading (covers their own start-up
#: and the skew between this host's clock and Redis's, which stamps the stream ids).
START_MARGIN_MS = 5_000
#: How often the tailers look for queues new to the registry.
REGISTRY_EVERY_S = 2.0
#: Longest one XREAD BLOCK of a tailer (below the socket timeout; see TaskQueue.read_events).
TAIL_BLOCK_MS = 2_000
#: Wait before trying again when the store is unreachable.
RETRY_S = 1.0


def task_uri(queue: str, task_id: str) -> str:
    return f"task://{queue}/{task_id}"


def stats_uri(queue: str) -> str:
    return f"queue://{queue}/stats"


#: The bus of each server state (the first made for it), for :func:`bus_for`.
_BUSES: weakref.WeakKeyDictionary[object, RedisSubscriptionBus] = weakref.WeakKeyDictionary()


def bus_for(state: ServerState) -> RedisSubscriptionBus:
    """The server's bus (the one ``create_server`` made for ``state``; made here if none was)."""
    return _BUSES.get(state) or RedisSubscriptionBus(state)


class RedisSubscriptionBus:
    """A ``SubscriptionBus`` whose resource events come from Redis (see the module docstring).

    ``publish`` fans an event out to this process's listeners; ``subscribe`` registers one and,
    for the first, starts the tailers (stopped again when the last one leaves).
    """

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        _BUSES.setdefault(state, self)

    async def publish(self, event: ServerEvent) -> None:
        self._deliver(event)
        await anyio.lowlevel.checkpoint()

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        token = object()
        self._listeners[token] = listener
        if self._watcher is None or self._watcher.done():
            since_ms = time.time_ns() // 1_000_000 - START_MARGIN_MS
            self._watcher = asyncio.get_running_loop().create_task(self._watch(since_ms))

        def unsubscribe() -> None:
            self._listeners.pop(token, None)
            if not self._listeners and self._watcher is not None:
                self._watcher.cancel()
                self._watcher = None

        return unsubscribe

    def _deliver(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # fan-out boundary: one bad listener must not starve the others
                logger.exception("subscription listener raised; continuing")

    async def _watch(self, since_ms: int) -> None:
        """Tail every known queue's events stream until cancelled (the last listener left)."""
        tailed: set[str] = set()
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    queue = await self._state.queue()
                    for name in await queue.known_queues():
                        if name not in tailed:
                            tailed.add(name)
                            tg.start_soon(self._tail, queue, name, f"{since_ms}-0")
                except QueueError as exc:
                    logger.warning("resource subscriptions cannot list the queues: %s", exc)
                # Queues new to the registry start where they were found (their whole stream is recent).
                since_ms = time.time_ns() // 1_000_000 - START_MARGIN_MS
                await anyio.sleep(REGISTRY_EVERY_S)

    async def _tail(self, queue: TaskQueue, name: str, after: str) -> None:
        while True:
            try:
                got = await queue.read_events(after, TAIL_BLOCK_MS, queue=name)
            except QueueError as exc:
                logger.warning("resource subscriptions of queue %s paused: %s", name, exc)
                await anyio.sleep(RETRY_S)
                continue
            for entry in got:
                after = entry.entry_id
                for task_id in entry.tasks:
                    self._deliver(ResourceUpdated(uri=task_uri(name, task_id)))
            if got:
                self._deliver(ResourceUpdated(uri=stats_uri(name)))
            await anyio.lowlevel.checkpoint()


# -- resources/subscribe and resources/unsubscribe (the session revisions, 2025-11-25 and before) --

#: Updates waiting for one session's stream; beyond this the newest are dropped (a slow client
#: re-reads the resource either way, and delivery is best-effort by the spec).
MAX_PENDING = 256
#: Where a connection keeps its subscriptions (``Connection.state``).
_STATE_KEY = "mcp_queue_server.resource_subscriptions"
_SUBSCRIBABLE = "updates are published for task://<queue>/<task_id> and queue://<queue>/stats"


def check_subscribable(uri: str, role: Role) -> str:
    """``uri`` if this server publishes updates for it, else :class:`InvalidInput` with the reason.

    The names in it are checked as resources/read checks them; the scheme must be one the
    server's role may read (the same rule as its resource list).
    """
    scheme, sep, rest = uri.partition("://")
    if sep and scheme == "task" and role in RESOURCE_ROLES["task"]:
        queue, _, task_id = rest.partition("/")
        check_queue_name(queue)
        check_task_id(task_id)
        return uri
    if sep and scheme == "queue" and role in RESOURCE_ROLES["queue"] and rest.endswith("/stats"):
        check_queue_name(rest.removesuffix("/stats"))
        return uri
    raise InvalidInput(f"cannot subscribe to {uri[:200]}: {_SUBSCRIBABLE}")


class SessionSubscriptions:
    """One session's subscribed URIs, told of updates by the bus while it has any.

    The bus calls :meth:`hear` from its tailers (synchronously); a pump task of this session's
    own sends each wanted update as ``notifications/resources/updated`` on the session's
    standalone stream, so a slow client never holds up the bus.
    """

    def __init__(self, bus: RedisSubscriptionBus, connection: Connection) -> None:
        self.uris: set[str] = set()
        self._bus = bus
        self._connection = connection
        self._unlisten: Callable[[], None] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._send: MemoryObjectSendStream[str] | None = None
        self._receive: MemoryObjectReceiveStream[str] | None = None

    def add(self, uri: str) -> None:
        self.uris.add(uri)
        if self._unlisten is None:
            self._send, self._receive = anyio.create_memory_object_stream[str](MAX_PENDING)
            self._pump = asyncio.get_running_loop().create_task(self._forward(self._receive))
            self._unlisten = self._bus.subscribe(self.hear)

    def discard(self, uri: str) -> None:
        self.uris.discard(uri)
        if not self.uris:
            self.close()

    def hear(self, event: ServerEvent) -> None:
        if not isinstance(event, ResourceUpdated) or event.uri not in self.uris or self._send is None:
            return
        try:
            self._send.send_nowait(event.uri)
        except anyio.WouldBlock:
            logger.debug("session %s is behind: dropped an update of %s", self._connection.session_id, event.uri)

    async def _forward(self, receive: MemoryObjectReceiveStream[str]) -> None:
        async for uri in receive:
            await self._connection.send_resource_updated(uri)  # never raises: best-effort

    def close(self) -> None:
        """Stop listening (the last URI went, or the session ended)."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._send is not None and self._receive is not None:
            self._send.close()
            self._receive.close()
            self._send = self._receive = None
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None


def serve_resource_subscriptions(server: Server[Any], bus: RedisSubscriptionBus, role: Role) -> None:
    """Serve resources/subscribe and resources/unsubscribe on ``server`` from ``bus``.

    Registering the handler is what makes the SDK declare ``resources.subscribe: true`` on the
    handshake revisions. A session's subscriptions live in its connection and end with it.
    """

    def uri_of(params: types.SubscribeRequestParams | types.UnsubscribeRequestParams) -> str:
        try:
            return check_subscribable(str(params.uri), role)
        except InvalidInput as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None

    async def subscribe(ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
        uri = uri_of(params)
        connection = request_connection(ctx)
        if not connection.has_standalone_channel:
            raise MCPError(INVALID_REQUEST, "this connection cannot carry notifications: open an MCP session")
        subscriptions = connection.state.get(_STATE_KEY)
        if not isinstance(subscriptions, SessionSubscriptions):
            subscriptions = connection.state[_STATE_KEY] = SessionSubscriptions(bus, connection)
            connection.exit_stack.callback(subscriptions.close)
        subscriptions.add(uri)
        return types.EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        uri = uri_of(params)
        subscriptions = request_connection(ctx).state.get(_STATE_KEY)
        if isinstance(subscriptions, SessionSubscriptions):
            subscriptions.discard(uri)
        return types.EmptyResult()

    server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)
