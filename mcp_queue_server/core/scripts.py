"""The Lua scripts: one file per state change in ``lua/``, each prefixed with the parts of
``_lib.lua`` it uses, and the return codes they share with Python.

``_lib.lua`` stays the one source of the shared helpers, but a script carries only the
definitions it reaches (the dependency closure of the names its body uses): Redis runs the
prelude on every call, and defining all of it cost each call about as much as its own work
(issue 17; ``benchmarks/script_floor.py`` measures it).

On a standalone Redis the lane (``lane.py``) sends EVALSHA and loads a script on NOSCRIPT;
in a cluster redis-py's script objects do the same per node, so scripts survive a Redis
restart or failover without extra code here.
"""

from __future__ import annotations

import hashlib
import re
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
    "start_saga",
    "queue_stats",
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


#: A top-level definition of _lib.lua: a line at column 0 opening with ``local``.
_DEFINITION = re.compile(r"^local\b", re.MULTILINE)
_DEFINES = re.compile(r"^local\s+(?:function\s+(\w+)|([\w\s,]+?)\s*(?:=|$))", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z_]\w*")
_COMMENT = re.compile(r"--[^\n]*")
#: Always kept: the keys, the common arguments and ``now`` (its TIME check refuses a user without it).
_ALWAYS = frozenset({"K", "base", "now"})


def _lua_text(name: str) -> str:
    return (resources.files("mcp_queue_server.core") / "lua" / f"{name}.lua").read_text()


def _blocks(lib: str) -> list[tuple[str, frozenset[str], frozenset[str]]]:
    """_lib.lua cut at its top-level definitions: (text, names defined, words used)."""
    starts = [m.start() for m in _DEFINITION.finditer(lib)]
    out = [(lib[: starts[0]], frozenset[str](), frozenset[str]())]  # the header comment
    for a, b in zip(starts, [*starts[1:], len(lib)], strict=True):
        text = lib[a:b]
        m = _DEFINES.match(text)
        assert m, text[:80]
        names = frozenset([m[1]] if m[1] else (n.strip() for n in m[2].split(",")))
        out.append((text, names, frozenset(_WORD.findall(_COMMENT.sub("", text))) - names))
    return out


def prelude(body: str) -> str:
    """The definitions of _lib.lua that ``body`` reaches, in their order (Lua defines before use)."""
    blocks = _blocks(_lua_text("_lib"))
    want = set(_WORD.findall(_COMMENT.sub("", body))) | _ALWAYS
    keep = [True] + [False] * (len(blocks) - 1)  # the header comment documents the KEYS and ARGV
    changed = True
    while changed:  # the closure: a kept definition's own words are wanted too
        changed = False
        for i, (_, names, uses) in enumerate(blocks):
            if not keep[i] and names & want:
                keep[i], changed = True, True
                want |= uses
    return "".join(text for (text, _, _), k in zip(blocks, keep, strict=True) if k)


#: The scripts that may end a task a saga waits on (directly or through _lib.lua's dead_letter,
#: cancel_now and child_finished), and start_saga: only these carry _saga.lua. Every script's text
#: lives in Redis's script cache, which counts against maxmemory: the others stay as small as before.
SAGA_SCRIPTS = frozenset({"ack", "fail", "read", "recover", "release", "cancel", "start_saga"})


@cache
def script_source(name: str) -> str:
    """The full text of one script: the shared helpers it uses (with, for the scripts that may end a
    saga's task, the saga transitions of ``_saga.lua``) followed by its body."""
    body = _lua_text(name)
    saga = _lua_text("_saga") + "\n" if name in SAGA_SCRIPTS else ""
    return prelude(saga + body) + "\n" + saga + body


@cache
def script_sha(name: str) -> str:
    """The SHA1 that EVALSHA names the script by."""
    return hashlib.sha1(script_source(name).encode(), usedforsecurity=False).hexdigest()


def register_all(client: ScriptHost) -> dict[str, AsyncScript]:
    """Register every script on ``client``; returns name -> callable script."""
    return {name: client.register_script(script_source(name)) for name in SCRIPT_NAMES}
