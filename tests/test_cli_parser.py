"""The one command line: ``mcp-queue-server [serve] [flags]`` or ``mcp-queue-server COMMAND [flags]``."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_queue_server.cli.main import load_settings, main

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "mcp_queue_server" / "cli"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_queue_server", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
        timeout=60,
    )


def test_version_prints_the_installed_version_and_exits_0() -> None:
    done = run_cli("--version")

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"mcp-queue-server {importlib.metadata.version('mcp-queue-server')}\n"


def test_a_mistyped_command_exits_2_suggesting_the_closest_command() -> None:
    done = run_cli("stat")

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "mcp-queue-server: error: unknown command 'stat': did you mean stats?\n"


def test_a_bare_word_after_server_flags_is_refused_rather_than_starting_the_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--lease-ms", "5000", "sevre"])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["mcp-queue-server: error: unknown command 'sevre': did you mean serve?"]


@pytest.mark.parametrize(
    ("word", "hint"),
    [
        ("replay", "did you mean dlq replay?"),  # an action typed without its command
        ("workers", "did you mean worker?"),
        (
            "frobnicate",
            "(commands: serve, stats, top, queues, tasks, dlq, recover, enqueue, limits, schedules, worker, demo;",
        ),
    ],
)
def test_an_unknown_command_names_what_was_probably_meant(
    word: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([word])

    assert exited.value.code == 2
    assert hint in capsys.readouterr().err


def test_an_unknown_flag_before_the_command_is_named_with_the_closest_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--redis", "redis://localhost/0", "stats"])

    assert exited.value.code == 2
    assert capsys.readouterr().err == "mcp-queue-server: error: unknown flag --redis: did you mean --redis-url?\n"


def test_server_flags_work_with_and_without_the_word_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCP_QUEUE_LEASE_MS", raising=False)
    flags = ["--lease-ms", "2500", "--role", "worker", "--allowed-host", "a.example", "--consumer", "c1"]

    without = load_settings(flags)
    after = load_settings(["serve", *flags])
    before = load_settings([*flags[:2], "serve", *flags[2:]])

    assert without == after == before  # (--consumer: the default is unique to each Settings)
    assert (without.lease_ms, without.role, without.allowed_hosts) == (2500, "worker", ["a.example"])


def test_http_on_a_public_address_without_a_token_is_refused_with_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MCP_QUEUE_AUTH_TOKEN", raising=False)

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--transport", "streamable-http", "--host", "0.0.0.0"])

    assert exited.value.code == 2
    assert "refusing to serve HTTP on non-loopback address '0.0.0.0'" in capsys.readouterr().err


def test_a_server_only_flag_before_another_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--transport", "sse", "stats"])

    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "mcp-queue-server: error: stats takes the queue store flags, not the server's --transport\n"
    )


def test_the_commands_start_without_importing_the_mcp_sdk() -> None:
    code = (
        "import sys\n"
        "from mcp_queue_server.cli import main\n"
        "main.settings_for(main.parse_args(['stats']))\n"
        "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)

    assert done.stdout.strip() == "[]"


def test_the_command_modules_import_nothing_of_the_cli_but_common() -> None:
    # main imports the command modules; they must not import main (or each other) back.
    for name in ("common", "ops", "top", "worker", "demo", "flags", "limits"):
        tree = ast.parse((CLI / f"{name}.py").read_text())
        imported = {
            node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module is not None
        } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        from_cli = {m for m in imported if m.startswith("mcp_queue_server.cli")}
        assert from_cli <= {"mcp_queue_server.cli.common"}, (name, from_cli)
