"""The core is a library: it imports nothing from mcp."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "mcp_queue_server",
    "mcp_queue_server.core.queue",
    "mcp_queue_server.core.inspect",
    "mcp_queue_server.core.connection",
    "mcp_queue_server.core.scripts",
    "mcp_queue_server.core.codec",
    "mcp_queue_server.core.keys",
    "mcp_queue_server.core.models",
    "mcp_queue_server.settings",
    "mcp_queue_server.errors",
    "mcp_queue_server.limits",
    "mcp_queue_server.store.binaries",
    "mcp_queue_server.store.embedded",
    "mcp_queue_server.worker.runtime",
    "mcp_queue_server.worker.pool",
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

    from mcp_queue_server.core.scripts import SCRIPT_NAMES

    lua = resources.files("mcp_queue_server.core") / "lua"
    for name in SCRIPT_NAMES:
        head = (lua / f"{name}.lua").read_text().split("\n", 12)[:12]
        text = "\n".join(head)
        assert text.startswith(f"-- {name}:"), name
        for part in ("KEYS", "ARGV", "Returns"):
            assert f"-- {part}" in text, (name, part)
