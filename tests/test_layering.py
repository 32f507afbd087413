"""The tree shows the architecture: layers import only downward, nothing imports in a cycle,
and only the MCP server layer imports ``mcp``.

Every import statement of every module is read with ``ast`` (function-level imports
included), so a lazy import cannot hide an upward arrow or a loop.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "mcp_queue_server"

#: Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS: dict[str, int] = {
    "errors": 0,
    "limits": 0,
    "settings": 0,
    "logs": 0,
    "tracing": 0,  # the one module that imports opentelemetry; spans for core, worker and server
    "core": 1,
    "store": 2,
    "testing": 3,  # the test launcher: beside the store, used only from outside the package
    "worker": 3,
    "__init__": 4,  # the public facade: core, store and worker
    "observe": 5,
    "server": 6,
    "cli": 7,
    "__main__": 8,
}

#: Third-party packages that belong to one layer only.
ONLY_IN: dict[str, frozenset[str]] = {
    "mcp": frozenset({"server"}),
    "argparse": frozenset({"cli"}),
    "starlette": frozenset({"observe", "server"}),
    "uvicorn": frozenset({"observe", "server"}),
    "prometheus_client": frozenset({"observe"}),
    "opentelemetry": frozenset({"tracing"}),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(source: str, module: str, known: Iterable[str]) -> set[str]:
    """Every module ``source`` imports (absolute names; ``from pkg import submodule`` resolved)."""
    known = set(known)
    found: set[str] = set()
    package = module if module in known and not module.count(".") else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return found


def package_modules() -> dict[str, str]:
    return {module_name(p): p.read_text() for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def upward_arrows(sources: dict[str, str]) -> list[str]:
    """``importer -> imported`` for every import that points to a higher layer, into the
    facade from inside the package, or to a third-party package outside its layer."""
    problems = []
    for module, source in sources.items():
        mine = layer_of(module)
        for imported in sorted(imports_of(source, module, sources)):
            top = imported.split(".")[0]
            if top == PACKAGE:
                if imported == PACKAGE and mine != "__main__":
                    problems.append(f"{module} -> {imported} (import from the defining module, not the facade)")
                elif imported != PACKAGE and LAYERS[layer_of(imported)] > LAYERS[mine]:
                    problems.append(f"{module} -> {imported}")
            elif top in ONLY_IN and mine not in ONLY_IN[top]:
                problems.append(f"{module} -> {imported} (only {', '.join(sorted(ONLY_IN[top]))} may)")
    return problems


def cycles(sources: dict[str, str]) -> list[list[str]]:
    """Strongly connected groups of two or more package modules (Tarjan)."""
    graph = {m: sorted(i for i in imports_of(s, m, sources) if i in sources and i != m) for m, s in sources.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_every_package_module_belongs_to_a_known_layer() -> None:
    unknown = sorted({layer_of(m) for m in package_modules()} - set(LAYERS))
    assert unknown == []


def test_layers_import_only_downward_and_only_the_server_imports_mcp() -> None:
    assert upward_arrows(package_modules()) == []


def test_no_two_package_modules_import_each_other_even_lazily() -> None:
    assert cycles(package_modules()) == []


def test_the_checks_catch_an_upward_arrow_a_cycle_and_mcp_in_the_core() -> None:
    # Negative control: the same checks must fail on a tree that breaks each rule.
    bad = {
        f"{PACKAGE}.core.queue": f"from {PACKAGE}.server.app import build_server\nimport mcp\n",
        f"{PACKAGE}.server.app": "",
        f"{PACKAGE}.cli.ops": f"def f():\n    from {PACKAGE}.cli import main\n",
        f"{PACKAGE}.cli.main": f"from {PACKAGE}.cli import ops\n",
    }
    assert sorted(upward_arrows(bad)) == [
        f"{PACKAGE}.core.queue -> mcp (only server may)",
        f"{PACKAGE}.core.queue -> {PACKAGE}.server.app",
    ]
    assert cycles(bad) == [[f"{PACKAGE}.cli.main", f"{PACKAGE}.cli.ops"]]


@pytest.mark.parametrize("folder", ["benchmarks", "chaos", "examples"])
def test_tools_beside_the_package_import_nothing_from_the_tests(folder: str) -> None:
    leaks = [
        f"{path.relative_to(ROOT)} -> {name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)  # installed peers, caches
        for name in imports_of(path.read_text(), module_name(path), ())
        if name.split(".")[0] == "tests"
    ]
    assert leaks == []


def test_importing_the_core_and_the_workers_loads_no_mcp() -> None:
    # The runtime view of the same rule: the facade (core, store, worker) pulls in no mcp.
    code = (
        f"import sys, {PACKAGE}, {PACKAGE}.worker.pool, {PACKAGE}.observe.metrics\n"
        "print(','.join(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_lua_script_opens_with_its_contract() -> None:
    from importlib import resources

    from mcp_queue_server.core.scripts import SCRIPT_NAMES

    lua = resources.files("mcp_queue_server.core") / "lua"
    for name in SCRIPT_NAMES:
        head = (lua / f"{name}.lua").read_text().split("\n", 12)[:12]
        text = "\n".join(head)
        assert text.startswith(f"-- {name}:"), name
        for part in ("KEYS", "ARGV", "Returns"):
            assert f"-- {part}" in text, (name, part)
