"""Compact output schemas accept and reject exactly what the SDK's original schemas do."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from mcp.server.mcpserver.tools import Tool

from mcp_queue_server.server.app import TOOLS, build_server
from mcp_queue_server.server.output_schema import compact_schema
from mcp_queue_server.settings import Settings

SAMPLES: list[Any] = [None, 0, -3, 1.5, "s", "", True, False, [], [1], {}, {"k": "v"}]


def _original(name: str) -> dict[str, Any]:
    (spec,) = [s for s in TOOLS if s.fn.__name__ == name]
    schema = Tool.from_function(spec.fn, structured_output=True).output_schema
    assert schema is not None
    return schema


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _example(node: dict[str, Any], root: dict[str, Any]) -> Any:
    """One instance the schema accepts: every property present, the first option of each choice."""
    node = _resolve(node, root)
    if "anyOf" in node:
        return _example(node["anyOf"][0], root)
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {k: _example(v, root) for k, v in node.get("properties", {}).items()}
    if kind == "array":
        return [_example(node["items"], root)] if "items" in node else []
    return {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "null": None, None: {"any": 1}}[kind]


def _variants(value: Any) -> Iterator[Any]:
    """The value, then every single spoiling: each nested value swapped for each sample, each key dropped."""
    yield value
    if isinstance(value, dict):
        for key in value:
            for sample in SAMPLES:
                yield {**value, key: sample}
            yield {k: v for k, v in value.items() if k != key}
            for inner in _variants(value[key]):
                yield {**value, key: inner}
        yield {**value, "unknown_field": 1}
    elif isinstance(value, list) and value:
        for inner in _variants(value[0]):
            yield [inner, *value[1:]]


TOOL_NAMES = [spec.fn.__name__ for spec in TOOLS]


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_compact_schema_accepts_and_rejects_the_same_results_as_the_original(name: str) -> None:
    original = _original(name)
    compact = compact_schema(copy.deepcopy(original))
    Draft202012Validator.check_schema(compact)
    before, after = Draft202012Validator(original), Draft202012Validator(compact)
    instances = list(_variants(_example(original, original)))
    assert len(instances) >= 10
    verdicts = [(before.is_valid(i), after.is_valid(i)) for i in instances]
    disagreements = [json.dumps(i) for i, (a, b) in zip(instances, verdicts, strict=True) if a != b]
    assert disagreements == []
    assert any(a for a, _ in verdicts)
    assert not all(a for a, _ in verdicts)


async def test_every_published_output_schema_is_compact() -> None:
    server = build_server(Settings(redis_url="redis://127.0.0.1:1/0"))
    listed = await server.list_tools()
    assert {t.name for t in listed} == set(TOOL_NAMES)
    for tool in listed:
        text = json.dumps(tool.output_schema)
        assert '"$ref"' not in text
        assert '"title"' not in text
        assert not [k for node in _keyword_nodes(tool.output_schema) for k in ("description", "default") if k in node]


def _keyword_nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every subschema of ``node`` (the keys of ``properties`` are names, not keywords)."""
    if not isinstance(node, dict):
        return
    yield node
    for key, value in node.items():
        if key == "properties":
            for sub in value.values():
                yield from _keyword_nodes(sub)
        elif key in ("items", "additionalProperties"):
            yield from _keyword_nodes(value)
        elif key == "anyOf":
            for sub in value:
                yield from _keyword_nodes(sub)


def test_an_output_schema_drops_descriptions_and_defaults_and_merges_nullable_choices() -> None:
    row = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    schema = {
        "type": "object",
        "properties": {
            "status": {"anyOf": [{"enum": ["a", "b"], "type": "string"}, {"type": "null"}], "default": None},
            "row": {"anyOf": [row, {"type": "null"}], "description": "A row.", "default": None},
            "description": {"type": "string", "description": "A field named like a keyword."},
        },
        "required": ["description"],
    }
    assert compact_schema(schema) == {
        "type": "object",
        "properties": {
            "status": {"enum": ["a", "b", None]},
            "row": {**row, "type": ["object", "null"]},
            "description": {"type": "string"},
        },
        "required": ["description"],
    }


def test_a_property_named_like_a_keyword_is_kept() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string", "title": "Title"}}, "required": ["title"]}
    assert compact_schema(schema) == {
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "required": ["title"],
    }


def test_a_recursive_reference_is_refused() -> None:
    schema = {"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}}
    with pytest.raises(ValueError, match="cannot inline"):
        compact_schema({**schema, "$ref": "#/$defs/Node"})
