"""Resumable Streamable HTTP streams: event ids, and the missed events replayed from Redis.

Raw HTTP (httpx) against the real server process on the 2025-11-25 protocol (the first with
priming events), so every byte of the streams is visible. Waits are bounded: the test blocks on
the Redis stream (XREAD BLOCK) until the server has stored an event, never on a sleep.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import redis.asyncio as aioredis

from mcp_queue_server import Settings
from mcp_queue_server.server.event_store import EVENT_TTL_S, RedisEventStore, events_key, stream_digest
from tests.test_http import http_server

VERSION = "2025-11-25"
WAIT_S = 20
GET_STREAM = "_GET_stream"  # the SDK's stream id for a session's GET stream


class Session:
    """One MCP session spoken by hand: POSTs, the GET stream, each SSE event as a dict."""

    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self.http, self.url = http, url
        self.headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": VERSION}
        self._next_id = 0

    async def open(self) -> None:
        params = {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        async with self.http.stream(
            "POST", self.url, json=self._request("initialize", params), headers=self.headers
        ) as r:
            self.headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
            await _until_answer(r)
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await self.http.post(self.url, json=note, headers=self.headers)).status_code == 202

    @property
    def session_id(self) -> str:
        return self.headers["Mcp-Session-Id"]

    def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        return {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}

    async def call(self, method: str, params: dict[str, Any]) -> list[dict[str, str]]:
        """POST a request and read its stream to the answer: every event."""
        async with self.http.stream("POST", self.url, json=self._request(method, params), headers=self.headers) as r:
            return await _until_answer(r)

    def post(self, method: str, params: dict[str, Any]) -> Any:
        """POST a request, its stream left to the caller (``async with``)."""
        return self.http.stream("POST", self.url, json=self._request(method, params), headers=self.headers)

    def get(self, last_event_id: str | None = None) -> Any:
        headers = {**self.headers, "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        return self.http.stream("GET", self.url, headers=headers)


async def events(response: httpx2.Response) -> AsyncIterator[dict[str, str]]:
    """The SSE events of ``response`` as they arrive: ``{"id": ..., "data": ..., "retry": ...}``."""
    event: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if event:
                yield event
            event = {}
            continue
        name, _, value = line.partition(":")
        event[name] = value.removeprefix(" ")


async def _until_answer(response: httpx2.Response) -> list[dict[str, str]]:
    seen = []
    with anyio.fail_after(WAIT_S):
        async for event in events(response):
            seen.append(event)
            if event.get("data") and "id" in json.loads(event["data"]):
                return seen
    raise AssertionError(f"the stream ended without an answer: {seen}")


async def _next_message(stream: AsyncIterator[dict[str, str]], text: str) -> dict[str, str]:
    with anyio.fail_after(WAIT_S):
        async for event in stream:
            if text in event.get("data", ""):
                return event
    raise AssertionError(f"the stream ended before {text!r}")


async def _stored_after(redis: aioredis.Redis, key: str, entry: str) -> None:
    """Block (bounded) until the server has stored an event after ``entry`` in ``key``."""
    got = await redis.xread({key: entry}, count=1, block=WAIT_S * 1000)
    assert got, f"nothing stored after {entry} in {key} within {WAIT_S} s"


async def test_every_stream_opens_with_a_priming_event_carrying_an_id_and_a_retry_interval(
    settings: Settings,
) -> None:
    async with http_server(settings, "streamable-http", token=None) as server, httpx2.AsyncClient(timeout=30) as http:
        session = Session(http, server.url)
        await session.open()
        seen = await session.call("tools/list", {})

    priming, *rest = seen
    assert priming["data"] == ""
    assert priming["id"]
    assert int(priming["retry"]) > 0
    assert all(event["id"] for event in rest)


async def test_a_dropped_get_stream_resumes_with_the_messages_it_missed(settings: Settings) -> None:
    async with (
        http_server(settings, "streamable-http", token=None) as server,
        httpx2.AsyncClient(timeout=30) as http,
        aioredis.from_url(settings.redis_url_value() or "") as redis,
    ):
        session = Session(http, server.url)
        await session.open()
        await session.call("logging/setLevel", {"level": "info"})
        async with session.get() as first:
            await session.call("tools/call", {"name": "recover_tasks", "arguments": {}})
            seen = await _next_message(events(first), "tool recover_tasks called")
        # The stream is gone; the server logs on, and stores what it cannot send.
        key = events_key(settings.key_prefix, session.session_id, stream_digest(GET_STREAM))
        last = seen["id"].partition(":")[2]
        await session.call("tools/call", {"name": "purge_dlq", "arguments": {"all": True}})
        await _stored_after(redis, key, last)
        async with session.get(last_event_id=seen["id"]) as resumed:
            replayed = await _next_message(events(resumed), "tool purge_dlq called")
        ttl = await redis.ttl(key)

    assert json.loads(replayed["data"])["params"]["level"] == "info"
    assert replayed["id"] > seen["id"]
    assert 0 < ttl <= EVENT_TTL_S


async def test_a_post_stream_dropped_before_its_answer_was_read_gets_the_answer_on_resuming(
    settings: Settings,
) -> None:
    async with (
        http_server(settings, "streamable-http", token=None) as server,
        httpx2.AsyncClient(timeout=30) as http,
        aioredis.from_url(settings.redis_url_value() or "") as redis,
    ):
        session = Session(http, server.url)
        await session.open()
        arguments = {"task_type": "t", "payload": {"n": 1}, "task_id": "resumed-task"}
        async with session.post("tools/call", {"name": "enqueue_task", "arguments": arguments}) as dropped:
            stream = events(dropped)
            with anyio.fail_after(WAIT_S):
                priming = await anext(stream)
            digest, _, entry = priming["id"].partition(":")
            await _stored_after(redis, events_key(settings.key_prefix, session.session_id, digest), entry)
        # The POST's stream closed with its answer unread.
        async with session.get(last_event_id=priming["id"]) as resumed:
            answer = await _next_message(events(resumed), '"result"')

    assert priming["data"] == ""
    assert json.loads(answer["data"])["result"]["structuredContent"]["task_id"] == "resumed-task"


async def test_a_session_cannot_replay_another_sessions_events(settings: Settings) -> None:
    async with http_server(settings, "streamable-http", token=None) as server, httpx2.AsyncClient(timeout=30) as http:
        owner, other = Session(http, server.url), Session(http, server.url)
        await owner.open()
        await other.open()
        # Both sessions number their requests alike: the same stream id, request 2, in each.
        [owner_priming, *_, owner_answer] = await owner.call("tools/call", {"name": "queue_stats", "arguments": {}})
        await other.call("tools/call", {"name": "queue_stats", "arguments": {}})

    async with aioredis.from_url(settings.redis_url_value() or "") as redis:
        as_owner = await _replay(redis, settings, owner.session_id, owner_priming["id"])
        as_other = await _replay(redis, settings, other.session_id, owner_priming["id"])

    assert [e.event_id for e in as_owner] == [owner_answer["id"]]
    assert as_other == []


async def _replay(redis: aioredis.Redis, settings: Settings, session_id: str, last_event_id: str) -> list[Any]:
    """What the session's event store replays after ``last_event_id`` (as any server process would)."""

    async def client() -> Any:
        return redis

    replayed: list[Any] = []

    async def collect(event: Any) -> None:
        replayed.append(event)

    await RedisEventStore(client, settings.key_prefix, session_id).replay_events_after(last_event_id, collect)
    return replayed


async def test_another_process_on_the_same_redis_can_replay_the_events_but_the_sdk_serves_a_session_only_where_it_began(
    settings: Settings,
) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        async with http_server(settings, "streamable-http", token=None) as first:
            session = Session(http, first.url)
            await session.open()
            [priming, *_, answer] = await session.call("tools/call", {"name": "queue_stats", "arguments": {}})
        async with http_server(settings, "streamable-http", token=None) as second:
            session.url = second.url
            async with session.get(last_event_id=priming["id"]) as elsewhere:
                status = elsewhere.status_code

    # What another process holds: the store, reading the session's events from Redis after the
    # process that wrote them has exited.
    async with aioredis.from_url(settings.redis_url_value() or "") as redis:

        async def client() -> Any:
            return redis

        store = RedisEventStore(client, settings.key_prefix, session.session_id)
        replayed: list[Any] = []

        async def collect(event: Any) -> None:
            replayed.append(event)

        stream_id = await store.replay_events_after(priming["id"], collect)

    assert status == 404  # sessions live in the process that made them (the SDK's session manager)
    assert stream_id == "2"
    assert [e.event_id for e in replayed] == [answer["id"]]
    assert replayed[0].message.model_dump(by_alias=True, exclude_unset=True) == json.loads(answer["data"])
