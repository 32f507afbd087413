"""Resumable Streamable HTTP streams: every SSE event gets an id, and its message is kept in Redis.

A client whose stream drops reconnects with ``Last-Event-ID`` (a GET on the same session) and
gets what it missed, then the rest of the stream. Each MCP stream of a session (the SSE answer
to one POST, keyed by its request id, or the session's GET stream) is one Redis stream::

    <prefix>:mcp:events:<session scope>:<stream digest>   XADD ... MAXLEN ~ 1000, EXPIRE 300 s

The session scope is a digest of the session id, so one session can never replay another's
events (request ids repeat across sessions; the session id itself is never stored), and any
process sharing the store can find a session's events from its id alone. An event id is
``<stream digest>:<Redis entry id>``; the priming event that opens a stream stores no message.

The SDK keeps sessions in the process that created them: a resuming GET that reaches another
process is answered 404 before any event store is asked, so resumption works on the process
(or behind the sticky routing) that holds the session; the events themselves outlive it in Redis.

If Redis is unreachable, messages still go out live, with ids that replay nothing; the outage
is logged once, and its end once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage, jsonrpc_message_adapter
from redis.exceptions import RedisError

from mcp_queue_server.core.connection import Client
from mcp_queue_server.errors import QueueError
from mcp_queue_server.server.sdk_compat import around_lifespan, give_sessions_event_stores

logger = logging.getLogger(__name__)

#: A stream's events are kept this long after its last one (a dropped stream resumes within seconds).
EVENT_TTL_S = 300
#: At most about this many events per stream (older ones are trimmed).
EVENT_MAXLEN = 1000
#: Clients are asked to wait this long before reconnecting a dropped stream (the SSE retry field).
RETRY_INTERVAL_MS = 2000
#: Longest one Redis call of the store may take; a message is never held up longer.
STORE_TIMEOUT_S = 2.0

_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_DIGEST = re.compile(r"^[0-9a-f]{16}$")
_UNAVAILABLE = (QueueError, RedisError, OSError, TimeoutError)


def session_scope(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()[:16]


def stream_digest(stream_id: str) -> str:
    return hashlib.blake2b(stream_id.encode(), digest_size=8).hexdigest()


def events_key(key_prefix: str, session_id: str, digest: str) -> str:
    return f"{key_prefix}:mcp:events:{session_scope(session_id)}:{digest}"


class _Health:
    """Logs the store's outage once when it starts and once when it ends (not per message:
    the log bridge forwards records as messages, which are stored too)."""

    down = False

    @classmethod
    def failed(cls, exc: BaseException) -> None:
        if not cls.down:
            cls.down = True
            logger.warning("stream events cannot be stored (%s): dropped streams will not resume", type(exc).__name__)

    @classmethod
    def worked(cls) -> None:
        if cls.down:
            cls.down = False
            logger.info("stream events are stored again")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisEventStore(EventStore):
    """The SDK's ``EventStore`` for one MCP session, kept in Redis under the queue's key prefix."""

    def __init__(self, redis: Callable[[], Awaitable[Client]], key_prefix: str, session_id: str) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._session_id = session_id

    def _key(self, digest: str) -> str:
        return events_key(self._prefix, self._session_id, digest)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        digest = stream_digest(stream_id)
        data = "" if message is None else message.model_dump_json(by_alias=True, exclude_unset=True)
        try:
            with anyio.fail_after(STORE_TIMEOUT_S):
                redis = await self._redis()
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(self._key(digest), {"s": stream_id, "m": data}, maxlen=EVENT_MAXLEN, approximate=True)
                    pipe.expire(self._key(digest), EVENT_TTL_S)
                    entry, _ = await pipe.execute()
        except _UNAVAILABLE as exc:
            _Health.failed(exc)
            return f"{digest}:-"  # sent live all the same; replays nothing
        _Health.worked()
        return f"{digest}:{_text(entry)}"

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        digest, _, entry = last_event_id.partition(":")
        if not (_DIGEST.match(digest) and _ENTRY_ID.match(entry)):
            return None  # not an id this store gave out (or one given out while Redis was down)
        try:
            with anyio.fail_after(STORE_TIMEOUT_S):
                redis = await self._redis()
                events = await redis.xrange(self._key(digest), min=entry, max="+")
        except _UNAVAILABLE as exc:
            _Health.failed(exc)
            return None
        if not events or _text(events[0][0]) != entry:
            return None  # not this session's event, or trimmed or expired: what followed it is unknown
        stream_id: str | None = None
        for event_id, fields in events:
            values = {_text(k): _text(v) for k, v in (fields or {}).items()}
            stream_id = stream_id or values.get("s")
            if _text(event_id) == entry or not values.get("m"):
                continue  # the event the client already has, or a priming event
            message = jsonrpc_message_adapter.validate_json(values["m"])
            await send_callback(EventMessage(message, f"{digest}:{_text(event_id)}"))
        return stream_id


class SessionEventStores:
    """One :class:`RedisEventStore` per Streamable HTTP session, on the queue's Redis connection."""

    def __init__(self) -> None:
        self._state: Any = None

    def install(self, server: MCPServer[Any]) -> None:
        """Learn the queue from the server's lifespan (its state's ``queue()`` and settings)."""
        around_lifespan(server, self._running)

    @asynccontextmanager
    async def _running(self, state: Any) -> AsyncIterator[None]:
        self._state = state
        yield

    async def _client(self) -> Client:
        if self._state is None:
            raise QueueError("the server is not running")
        queue = await self._state.queue()
        client: Client = queue.redis
        return client

    def for_session(self, session_id: str) -> RedisEventStore:
        if self._state is None:
            raise RuntimeError("the event stores are installed in a server that has not started")
        return RedisEventStore(self._client, self._state.settings.key_prefix, session_id)

    def serve(self, server: MCPServer[Any]) -> None:
        """Give every new session of ``server``'s Streamable HTTP app its store (after ``streamable_http_app``)."""
        give_sessions_event_stores(server.session_manager, self.for_session)
