"""Argument errors as one line the model can act on, built from pydantic's structured errors.

The SDK reports a call whose arguments fail the tool's argument model with ``str()`` of the
``ValidationError``: several lines, ``[type=...]`` tags, input dumps and links. A model reads
every error to decide its next call, so each error becomes what was wrong (the argument, the
kind of value, the limit) and what to do, e.g. ``block_ms is 60000, at most 20000: wait in
several calls`` or ``unknown argument lease: did you mean lease_ms?``. Values are echoed only
when short, and always as JSON (one line).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from mcp_queue_server.limits import CURSOR_PATTERN, NAME_PATTERN, TASK_ID_PATTERN, TASK_TYPE_PATTERN

#: What each pattern allows, in words.
PATTERN_RULES: dict[str, str] = {
    NAME_PATTERN: "use 1-64 characters from A-Z a-z 0-9 _ . -",
    TASK_ID_PATTERN: "use 1-128 characters from A-Z a-z 0-9 _ . -",
    TASK_TYPE_PATTERN: "use 1-128 characters from A-Z a-z 0-9 _ . : / -",
    CURSOR_PATTERN: "pass the next_cursor of the previous page unchanged",
}

#: What to do when an argument is above its maximum: (tool, argument) or (None, argument).
ABOVE_MAXIMUM: dict[tuple[str | None, str], str] = {
    (None, "block_ms"): "wait in several calls",
    ("read_tasks", "count"): "read in several calls",
    ("inspect_dlq", "count"): "page on with next_cursor",
    (None, "lease_ms"): "renew it before it runs out with extend_lease or checkpoint",
}

#: pydantic's error types for a value of the wrong kind -> the kind wanted.
MUST_BE: dict[str, str] = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
    "tuple_type": "an array",
    "finite_number": "a finite number",
    "float_type": "a number",
    "float_parsing": "a number",
}

#: Errors shown in full; the rest are counted.
SHOWN = 3
_SHORT = 40


def explain(exc: ValidationError, schema: Mapping[str, Any], tool: str = "") -> str:
    """One line for every problem of ``exc`` (the first few, then a count), against ``schema``."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        line = describe(error, schema, tool)
        if line not in lines:
            lines.append(line)
    text = "; ".join(lines[:SHOWN])
    if len(lines) > SHOWN:
        text += f" (and {len(lines) - SHOWN} more)"
    return text


def describe(error: ErrorDetails, schema: Mapping[str, Any], tool: str = "") -> str:
    """One problem in words: the argument, what it got, the limit and what to do."""
    loc = list(error["loc"])  # the schemas have no unions beyond nullable: names and indexes only
    path = path_of(loc)
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    noun = "argument" if len(loc) == 1 else "field"
    if kind == "extra_forbidden":
        valid = list(_node_at(schema, loc[:-1]).get("properties", {}))
        return f"unknown {noun} {path}: {suggest(str(loc[-1]), valid)}"
    if kind == "missing":
        return f"missing {noun} {path}: pass {_expects(_node_at(schema, loc))}"
    if kind in MUST_BE:
        return f"{path} must be {MUST_BE[kind]}, got {kind_of(value)}"
    if kind == "string_pattern_mismatch":
        rule = PATTERN_RULES.get(str(ctx.get("pattern")), f"match {ctx.get('pattern')}")
        return f"{path} {_shown(value)} is not allowed: {rule}"
    if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
        return _length(path, kind, value, ctx)
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return _bound(tool, loc, path, kind, value, ctx)
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"{path} is {_shown(value)}: use {expected}"
    # Anything else (a custom validator's ValueError, ...): pydantic's own sentence, one line.
    message = " ".join(str(error.get("msg", "is invalid")).split())
    return f"{path}: {message}"


def _length(path: str, kind: str, value: Any, ctx: Mapping[str, Any]) -> str:
    text = kind.startswith("string")
    if not value:
        return f"{path} is empty: pass some text" if text else f"{path} is empty: pass at least {ctx['min_length']}"
    size = f"is {_len(value)} characters" if text else f"has {_len(value)} items"
    if kind.endswith("long"):
        return f"{path} {size}, at most {ctx['max_length']}: " + (
            "shorten it" if text else "split it into several calls"
        )
    return f"{path} {size}, at least {ctx['min_length']}"


def _bound(tool: str, loc: Sequence[str | int], path: str, kind: str, value: Any, ctx: Mapping[str, Any]) -> str:
    words = {"greater_than_equal": "at least", "greater_than": "more than"}
    words |= {"less_than_equal": "at most", "less_than": "less than"}
    limit = next(iter(ctx.values()), "?")
    line = f"{path} is {_shown(value)}, {words[kind]} {limit}"
    name = str(loc[-1])
    hint = ABOVE_MAXIMUM.get((tool, name)) or ABOVE_MAXIMUM.get((None, name))
    return f"{line}: {hint}" if hint and kind.startswith("less") else line


def path_of(loc: Sequence[str | int]) -> str:
    """``("tasks", 0, "payload")`` as ``tasks[0].payload``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "arguments"


def kind_of(value: Any) -> str:
    """The JSON kind of ``value``, with an article: "a string", "an array", "NaN"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return "an infinite number" if math.isinf(value) else "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return "an object" if isinstance(value, dict) else "a value of another kind"


def _node_at(schema: Mapping[str, Any], loc: Sequence[str | int]) -> Mapping[str, Any]:
    """The schema of the value at ``loc`` (an empty schema where it cannot be followed)."""
    node: Mapping[str, Any] = schema
    for part in loc:
        node = _object_or_array(node, schema)
        child = node.get("items") if isinstance(part, int) else node.get("properties", {}).get(part)
        if not isinstance(child, Mapping):
            return {}
        node = child
    return _object_or_array(node, schema)


def _object_or_array(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        node = root.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
    for option in node.get("anyOf", ()):
        if isinstance(option, Mapping) and ("$ref" in option or option.get("type") in ("object", "array")):
            return _object_or_array(option, root)
    return node


def _expects(node: Mapping[str, Any]) -> str:
    kinds = node.get("type", "a value")
    kind = next((k for k in kinds if k != "null"), "value") if isinstance(kinds, list) else kinds
    return {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer"}.get(
        kind, "true or false" if kind == "boolean" else "a value"
    )


def suggest(name: str, valid: Sequence[str]) -> str:
    """The closest valid name ("did you mean x?"), or them all when none is close."""
    close = [v for v in valid if name and (v.startswith(name) or name.startswith(v))]
    close = close or difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    return f"the valid ones are {', '.join(valid)}" if valid else "this takes none"


def _shown(value: Any) -> str:
    """Short values as JSON; long strings by their length only (they may be the caller's data)."""
    if isinstance(value, float) and not math.isfinite(value):
        return kind_of(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return kind_of(value)
    if len(text) <= _SHORT:
        return text
    return f"({_len(value)} characters)" if isinstance(value, str) else f"({kind_of(value)})"


def _len(value: Any) -> int:
    return len(value) if isinstance(value, str | list | dict | tuple) else 0
