"""The Lua scripts: one file per state change in ``lua/``, each prefixed with ``_lib.lua``,
and the return codes they share with Python.

On a standalone Redis the lane (``lane.py``) sends EVALSHA and loads a script on NOSCRIPT;
in a cluster redis-py's script objects do the same per node, so scripts survive a Redis
restart or failover without extra code here.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum
from functools import cache
from importlib import resources
from typing import Any, Protocol

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
    "heartbeat",
    "cancel",
    "list_tasks",
    "schedule",
    "unschedule",
    "fire_schedule",
    "set_limit",
)


class Code(IntEnum):
    """The first element of a script's reply (mirrored in ``lua/_lib.lua``; a test compares them)."""

    OK = 1
    DUPLICATE = 2  #: the id exists already; nothing changed
    ALREADY = 3  #: the task is completed already
    NOT_FOUND = -1
    NOT_HOLDER = -2  #: the caller does not hold the task's lease
    BAD_STATE = -3  #: the task's state does not allow the operation
    CONFLICT = -4  #: a new task's id is already in use
    FULL = -5  #: the queue holds MCP_QUEUE_MAX_QUEUE_LENGTH tasks; nothing was enqueued


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
