"""The core is a library: it imports nothing from mcp."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "mcp_queue_server",
    "mcp_queue_server.queue",
    "mcp_queue_server.admin",
    "mcp_queue_server.base",
    "mcp_queue_server.scripts",
    "mcp_queue_server.records",
    "mcp_queue_server.keys",
    "mcp_queue_server.models",
    "mcp_queue_server.settings",
    "mcp_queue_server.errors",
    "mcp_queue_server.validation",
    "mcp_queue_server.binaries",
    "mcp_queue_server.embedded",
    "mcp_queue_server.worker",
    "mcp_queue_server.worker_pool",
]


def test_the_core_modules_import_no_mcp() -> None:
    code = (
        "import sys\n"
        f"for name in {CORE!r}: __import__(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.'))\n"
        "print(','.join(leaked))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_lua_script_opens_with_its_contract() -> None:
    from importlib import resources

    from mcp_queue_server.scripts import SCRIPT_NAMES

    lua = resources.files("mcp_queue_server") / "lua"
    for name in SCRIPT_NAMES:
        head = (lua / f"{name}.lua").read_text().split("\n", 12)[:12]
        text = "\n".join(head)
        assert text.startswith(f"-- {name}:"), name
        for part in ("KEYS", "ARGV", "Returns"):
            assert f"-- {part}" in text, (name, part)
