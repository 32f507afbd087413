"""The fault-injection harness end to end: real Redis, workers over MCP stdio, a seeded nemesis.

Each test runs ``python -m chaos.run`` as a subprocess (it starts and cleans up its own
process groups) and reads the JSON report it writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from chaos.common import ROOT
from chaos.nemesis import KINDS

RUN_TIMEOUT_S = 240  # the harness has its own hard deadline; this one only guards the test


def run_chaos(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "chaos.run", "--workdir", str(tmp_path / "run"), "--json", str(report), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert report.exists(), done.stderr[-3000:]
    data = json.loads(report.read_text())
    assert "error" not in data, done.stderr[-3000:]
    return done.returncode, data


def test_a_short_seeded_run_with_every_fault_kind_loses_nothing_and_completes_each_task_once(tmp_path: Path) -> None:
    code, report = run_chaos(tmp_path, "--seed", "7", "--duration", "8")
    assert report["faults"].keys() == set(KINDS), report["faults"]
    assert all(n >= 1 for n in report["faults"].values())
    assert report["valid"], report["findings"]
    assert code == 0
    assert report["lost"] == report["unexpected"] == report["duplicated"] == 0
    assert report["healthy_dead_lettered"] == 0
    assert report["poison"]["total"] == report["poison"]["dead_lettered_at_max_attempts"]
    assert report["fanouts"]["ok"] == report["fanouts"]["total"] > 0
    assert report["pending"] == {"records": 0, "available": 0, "in_flight": 0, "delayed": 0}
    assert report["tasks"]["enqueued_ok"] > 50


def test_without_persistence_a_redis_kill_makes_the_checker_report_lost_tasks(tmp_path: Path) -> None:
    code, report = run_chaos(
        tmp_path, "--seed", "7", "--duration", "3", "--workers", "2", "--no-persistence", "--faults", "kill_redis"
    )
    assert report["faults"]["kill_redis"] >= 1
    assert report["lost"] > 0
    assert not report["valid"]
    assert code == 1
