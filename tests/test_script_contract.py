"""The Lua scripts and the Python core name the same return codes and key prefixes.

Both sides spell them (Lua cannot import Python), so these tests read the Lua source and
compare: a code or prefix changed on one side only fails here, not in production.
"""

from __future__ import annotations

import re
from importlib import resources

from mcp_queue_server.core import keys
from mcp_queue_server.core.keys import QueueKeys
from mcp_queue_server.core.scripts import SAGA_SCRIPTS, SCRIPT_NAMES, Code, prelude, script_source

_LUA = resources.files("mcp_queue_server.core") / "lua"
# `local OK, DUPLICATE, ALREADY = 1, 2, 3`: upper-case names assigned integer literals.
_CODE_LINE = re.compile(r"^local\s+([A-Z_]+(?:\s*,\s*[A-Z_]+)*)\s*=\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*$", re.MULTILINE)
# `base .. 'fo:' .. parent`: a key derived from the queue's base.
_DERIVED = re.compile(r"""\bbase\s*\.\.\s*['"]([a-z]+:)['"]""")
# `{NOT_HOLDER, state, ...}` or `{OK}`: a reply that opens with a code.
_REPLY_CODE = re.compile(r"\{\s*([A-Z][A-Z_]+)\s*[,}]")


def _lua(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text()


def _lua_codes() -> dict[str, int]:
    found: dict[str, int] = {}
    for names, values in _CODE_LINE.findall(_lua("_lib")):
        name_list = [n.strip() for n in names.split(",")]
        value_list = [int(v) for v in values.split(",")]
        assert len(name_list) == len(value_list), names
        found.update(zip(name_list, value_list, strict=True))
    return found


def _lua_prefixes() -> dict[str, set[str]]:
    """Prefix -> the lua files that derive a key with it."""
    found: dict[str, set[str]] = {}
    for name in ("_lib", "_saga", *SCRIPT_NAMES):
        for prefix in _DERIVED.findall(_lua(name)):
            found.setdefault(prefix, set()).add(name)
    return found


def test_lua_and_python_define_the_same_return_codes() -> None:
    lua = _lua_codes()
    assert len(lua) == len(Code) == 8  # the parser found every code: this test cannot pass on nothing
    assert lua == {code.name: code.value for code in Code}


def test_every_code_a_script_replies_with_is_a_defined_code() -> None:
    used = {name for script in SCRIPT_NAMES for name in _REPLY_CODE.findall(_lua(script))}
    used |= set(_REPLY_CODE.findall(_lua("_lib"))) | set(_REPLY_CODE.findall(_lua("_saga")))
    assert {"OK", "DUPLICATE", "NOT_HOLDER", "BAD_STATE", "CONFLICT"} <= used  # the parser sees replies
    assert used <= set(Code.__members__)


def test_every_key_prefix_lua_derives_is_named_in_keys_py_and_the_other_way_round() -> None:
    lua = _lua_prefixes()
    # The parser reads the scripts as well as _lib.lua.
    assert "fanout" in lua["fo:"]
    assert "_lib" in lua["t:"]
    assert "_saga" in lua["sg:"]
    assert set(lua) == set(keys.DERIVED_PREFIXES)


def test_each_derived_key_of_queue_keys_uses_its_named_prefix() -> None:
    k = QueueKeys.for_queue("p", "q")
    assert k.base == "p:{q}:"
    assert k.task("x") == k.base + keys.TASK + "x"
    assert k.checkpoint("x") == k.base + keys.CHECKPOINT + "x"
    assert k.fanout("x") == k.base + keys.FANOUT + "x"
    assert k.fanout_pending("x") == k.base + keys.FANOUT_PENDING + "x"
    assert k.fanout_results("x") == k.base + keys.FANOUT_RESULTS + "x"
    assert k.requests("c") == k.base + keys.REQUESTS + "c"
    assert k.saga("s") == k.base + keys.SAGA + "s"


def test_scripts_get_their_keys_in_the_order_lib_lua_reads_them() -> None:
    # _lib.lua's header: "KEYS[1] high stream   KEYS[2] low stream ..."
    documented = dict(re.findall(r"KEYS\[(\d)\] (\w+)", _lua("_lib")))
    assert len(documented) == 6
    k = QueueKeys.for_queue("p", "q")
    assert [k.base + documented[str(i)] for i in range(1, 7)] == list(k.script_keys)


def test_each_script_carries_the_lib_definitions_it_reaches_and_no_others() -> None:
    heartbeat, read = script_source("heartbeat"), script_source("read")
    # The clock (and its refusal without TIME) is in every script, whatever it uses.
    assert all("local now\n" in script_source(name) for name in SCRIPT_NAMES)
    # read reaches the limits helpers and, through dead_letter, the fanout ones: in order.
    assert read.index("local function limit_room") < read.index("local function child_finished")
    assert "local function dead_letter" in read
    assert "local function enqueue_continuation" in read
    # heartbeat uses none of them: they are not defined on its every call.
    assert "child_finished" not in heartbeat
    assert "limit_room" not in heartbeat
    assert len(heartbeat) < len(_lua("_lib")) // 2


def test_a_definition_is_kept_when_only_another_kept_definition_uses_it() -> None:
    body = "return requeue(ARGV[5], tkey(ARGV[5]))"
    src = prelude(body)
    # requeue -> unlink -> free_slot -> wake_readers, and push -> stream_key
    for name in ("requeue", "unlink", "free_slot", "wake_readers", "push", "stream_key"):
        assert f"local function {name}(" in src
    assert "local function child_finished(" not in src


def test_every_script_that_may_end_a_saga_s_task_carries_the_saga_transitions() -> None:
    # Only SAGA_SCRIPTS get _saga.lua (script-cache memory); a script ending tasks without it would
    # leave saga_ended nil and fail at the first saga task it ends.
    ends = re.compile(r"\b(dead_letter|cancel_now|child_finished|saga_\w+)\(")
    needing = {name for name in SCRIPT_NAMES if ends.search(_lua(name))}
    assert {"ack", "fail", "cancel"} <= needing
    assert needing <= SAGA_SCRIPTS
