"""The Lua scripts: one file per state change in ``lua/``, each prefixed with ``_lib.lua``.

Registered with redis-py, which calls EVALSHA and falls back to EVAL on NOSCRIPT, so
scripts survive a Redis restart or failover without extra code here.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any, Protocol

from mcp_queue_server.errors import InvalidState, NotLeaseHolder, TaskNotFound

SCRIPT_NAMES = (
    "enqueue",
    "read",
    "ack",
    "fail",
    "extend",
    "checkpoint",
    "release",
    "recover",
    "fanout",
    "replay",
    "purge",
    "inspect_dlq",
)

# Return codes (mirrored in lua/_lib.lua).
OK, DUPLICATE, ALREADY = 1, 2, 3
NOT_FOUND, NOT_HOLDER, BAD_STATE, CONFLICT = -1, -2, -3, -4


class AsyncScript(Protocol):
    async def __call__(self, keys: list[str], args: list[Any]) -> Any: ...


class ScriptHost(Protocol):
    def register_script(self, script: str) -> Any: ...


@cache
def script_source(name: str) -> str:
    """The full text of one script: the shared helpers followed by its body."""
    lua = resources.files("mcp_queue_server.core") / "lua"
    return (lua / "_lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


@cache
def script_sha(name: str) -> str:
    """The SHA1 that EVALSHA names the script by."""
    return hashlib.sha1(script_source(name).encode(), usedforsecurity=False).hexdigest()


def register_all(client: ScriptHost) -> dict[str, AsyncScript]:
    """Register every script on ``client``; returns name -> callable script."""
    return {name: client.register_script(script_source(name)) for name in SCRIPT_NAMES}


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def raise_for(code: int, reply: list[Any], task_id: str) -> None:
    """Turn a refusal from a script (``not_held`` shape) into the matching error."""
    if code == NOT_FOUND:
        raise TaskNotFound(f"task {task_id} not found: check the id and queue (completed tasks expire after a while)")
    if code == NOT_HOLDER:
        state = text(reply[1])
        if state == "working":
            holder, until = text(reply[2]), text(reply[3])
            raise NotLeaseHolder(
                f"task {task_id} is leased by another worker ({holder}) until {until} ms; "
                "your lease expired or you never held it, so nothing was changed: drop this task and read again"
            )
        raise NotLeaseHolder(
            f"task {task_id} is {state}, not leased to you: only the worker that read it may do this; nothing changed"
        )
    if code == ALREADY:
        raise InvalidState(f"task {task_id} is already completed; there is nothing left to do with it")
    if code == BAD_STATE:
        raise InvalidState(f"task {task_id} is {text(reply[-1])}; this operation does not apply to it")
    raise InvalidState(f"task {task_id}: unexpected script reply {code}")
