"""The README documents what the server really exposes."""

from __future__ import annotations

import re
from pathlib import Path

from mcp_queue_server.server.app import tool_names
from mcp_queue_server.settings import Role, Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_the_readme_names_every_registered_tool() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", README, flags=re.MULTILINE))
    assert set(tool_names(Role.ALL)) <= documented


def test_the_readme_names_every_setting() -> None:
    for name in Settings.model_fields:
        assert f"MCP_QUEUE_{name.upper()}" in README, name


def test_the_quick_start_gives_the_run_and_test_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "mcp-queue-server" in quick
    assert "scripts/check" in quick
