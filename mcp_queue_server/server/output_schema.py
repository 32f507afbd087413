"""Published output schemas, rewritten to validate faster and to weigh less, accepting exactly the same results.

The SDK client checks every tool result against the tool's ``outputSchema`` with jsonschema,
in the client process. On the 2-core benchmark machine that check took 26 ms for a 100-task
``read_tasks`` result with the SDK's schema and 14 ms with this one, and the MCP lifecycle
figure of ``python -m benchmarks.run --only mcp`` rose from 0.95k to 1.37k tasks/s. The rewrite is purely a
representation change: local references are inlined (one lookup per item saved), titles
dropped (pydantic's field names, no meaning for validation), ``additionalProperties: true``
dropped (the default), ``anyOf: [{type: X}, {type: null}]`` written as ``type: [X, null]``,
and in any other nullable ``anyOf`` the null option goes first (jsonschema stops at the first match).

An output schema is also sent in every ``tools/list``, to every host, on every turn: it is there
for validation, not for the model (hosts show the model the input schema; the model reads the
result itself). So :func:`compact_schema` also drops every ``description`` and ``default`` (no
effect on validation), and writes a nullable enum as the enum with null
(``{"enum": ["acked", ..., null]}``) and a nullable object or array as one node with a type list
(``properties``, ``required`` and ``items`` only apply to values of their own type). A field
whose meaning is not plain from its name and type is explained where the model reads it: the
tool's description or the server's instructions (server/outputs.py keeps its Field descriptions
for readers of the code; they are not published). Enums, bounds and ``required`` stay.
Together this took the whole ``tools/list`` result from 28,856 to 23,944 characters (16 tools).
Input schemas keep their descriptions (:func:`compact_input_schema`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_SCHEMA_VALUES = frozenset({"items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_DEFS_PREFIX = "#/$defs/"


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An output schema: ``schema`` with its local references inlined, validation-free noise,
    descriptions and defaults removed, and nullable choices written as one node.

    Raises:
        ValueError: a reference is recursive or not local (cannot be inlined).
    """
    return _bare(_inlined(schema))


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its local references inlined and titles removed (descriptions kept)."""
    defs = schema.get("$defs", {})
    return _node(schema, defs, ())


def _node(node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.removeprefix(_DEFS_PREFIX)
        if name == ref or name not in defs or name in seen:
            raise ValueError(f"cannot inline $ref {ref!r}")
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _node(merged, defs, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs", "definitions"):
            continue
        if key == "additionalProperties" and value is True:
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {name: _node(sub, defs, seen) for name, sub in value.items()}
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            out[key] = _node(value, defs, seen)
        elif key in _SCHEMA_LISTS:
            out[key] = [_node(sub, defs, seen) for sub in value]
        else:
            out[key] = value  # data (default, enum, const, description, ...): never rewritten
    return _collapse_nullable(out)


def _collapse_nullable(node: dict[str, Any]) -> dict[str, Any]:
    options = node.get("anyOf")
    if not isinstance(options, list) or len(options) != 2 or "type" in node:
        return node
    if {"type": "null"} not in options:
        return node
    (other,) = [o for o in options if o != {"type": "null"}]
    if set(other) != {"type"} or not isinstance(other["type"], str):
        # jsonschema stops at the first option that matches: most optional fields are null.
        return {**node, "anyOf": [{"type": "null"}, other]}
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    return {**rest, "type": [other["type"], "null"]}


#: Keywords that constrain every type (a nullable option holding one cannot be merged with null).
_ALL_TYPES = frozenset({"enum", "const", "anyOf", "oneOf", "allOf", "not", "$ref", "if", "then", "else"})


def compact_input_schema(schema: dict[str, Any], *, optional_null: bool = True) -> dict[str, Any]:
    """An input schema, compact as for :func:`compact_schema` but with its descriptions, and lean for the model.

    Besides inlining references and dropping titles as :func:`compact_schema` does (but keeping
    descriptions, which the model reads), a nullable argument is one node with a type list
    (``{"type": ["string", "null"], "pattern": ...}``: a pattern, bound or item schema only
    applies to values of its own type, so null still passes), and ``"default": null`` goes (an
    argument left out is null). Nothing is accepted or refused differently, except that with
    ``optional_null=False`` an optional argument whose default is null is published without
    null (leave it out instead; the server still takes an explicit null).
    """
    lean = _lean(_inlined(schema))
    return lean if optional_null else _without_optional_null(lean)


def _without_optional_null(node: dict[str, Any]) -> dict[str, Any]:
    out = dict(node)
    required = set(node.get("required", ()))
    if isinstance(node.get("properties"), dict):
        props = {}
        for name, sub in node["properties"].items():
            sub = _without_optional_null(sub)
            kinds = sub.get("type")
            if name not in required and "default" not in sub and isinstance(kinds, list) and len(kinds) == 2:
                sub = {**sub, "type": next(k for k in kinds if k != "null")}
            props[name] = sub
        out["properties"] = props
    if isinstance(node.get("items"), dict):
        out["items"] = _without_optional_null(node["items"])
    return out


def _lean(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` without ``default: null``, nullable types merged (an input schema keeps its text)."""
    return _strip(node, lambda key, value: key == "default" and value is None, enums=False)


def _merge_null(node: dict[str, Any], *, enums: bool = False) -> dict[str, Any]:
    """``anyOf: [{type: null}, {type: X, ...}]`` as ``{type: [X, null], ...}`` when that accepts the same
    values; with ``enums``, ``anyOf: [{type: null}, {type: string, enum: [...]}]`` as ``{enum: [..., null]}``."""
    options = node.get("anyOf")
    if not (isinstance(options, list) and len(options) == 2 and {"type": "null"} in options and "type" not in node):
        return node
    (other,) = [o for o in options if o != {"type": "null"}]
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if set(other) & set(rest):
        return node
    values = other.get("enum")
    strings = (
        isinstance(values, list) and other.get("type", "string") == "string" and all(isinstance(v, str) for v in values)
    )
    if enums and strings and set(other) <= {"type", "enum"}:
        return {**rest, "enum": [*values, None]}
    if isinstance(other.get("type"), str) and not _ALL_TYPES & set(other):
        return {**rest, **other, "type": [other["type"], "null"]}
    return node


def _bare(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` without descriptions or defaults, nullable choices merged (see the module's docstring)."""
    return _strip(node, lambda key, _value: key in ("description", "default"), enums=True)


def _strip(node: dict[str, Any], drop: Callable[[str, Any], bool], *, enums: bool) -> dict[str, Any]:
    """``node`` and its subschemas without the keys ``drop`` picks, nullable choices merged."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if drop(key, value):
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {name: _strip(sub, drop, enums=enums) for name, sub in value.items()}
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            out[key] = _strip(value, drop, enums=enums)
        elif key in _SCHEMA_LISTS:
            out[key] = [_strip(sub, drop, enums=enums) for sub in value]
        else:
            out[key] = value
    return _merge_null(out, enums=enums)
