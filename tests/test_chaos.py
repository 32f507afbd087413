"""The fault-injection harness end to end: real Redis, workers over MCP stdio and HTTP agents
(each an MCP session on one shared Streamable HTTP server), a seeded nemesis.

Each test runs ``python -m chaos.run`` as a subprocess (it starts and cleans up its own
process groups) and reads the JSON report it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos.common import ROOT, faketime_lib
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


def require_faketime() -> None:
    if faketime_lib() is None and os.environ.get("MCP_QUEUE_TEST_REQUIRE_FAKETIME") == "1":
        pytest.fail("libfaketime is required (MCP_QUEUE_TEST_REQUIRE_FAKETIME=1): apt-get install faketime")


def test_a_short_seeded_run_with_every_fault_kind_loses_nothing_and_completes_each_task_once(tmp_path: Path) -> None:
    require_faketime()
    # A rate limit the short run does not reach: one it reached would hold tasks for the rest of a minute.
    # Keyed tasks work 150..300 ms, so the key's 2 slots take fewer tasks a second than the producers
    # send: some wait for a slot however fast the workers are (the limits checks below need waits).
    code, report = run_chaos(
        tmp_path, "--seed", "7", "--duration", "8", "--max-per-minute", "60", "--limited-work-ms", "300"
    )
    # clock_skew (a worker's MCP server two minutes ahead) needs libfaketime.
    assert report["faults"].keys() == set(KINDS) - set(report["faults_unavailable"]), report["faults"]
    assert report["findings"]["stolen_leases"] == 0
    assert all(n >= 1 for n in report["faults"].values())
    assert report["valid"], report["findings"]
    assert code == 0
    assert report["lost"] == report["unexpected"] == report["duplicated"] == 0
    assert report["healthy_dead_lettered"] == 0
    assert report["poison"]["total"] == report["poison"]["dead_lettered_at_max_attempts"]
    assert report["fanouts"]["ok"] == report["fanouts"]["total"] > 0
    # Sagas ran through the faults: each completed, or compensated (a poison step, or cancelled)
    # with every completed step undone once, in reverse order, with its result (chaos/sagas.py).
    sagas = report["sagas"]
    assert report["findings"]["sagas_bad"] == 0, report["samples"]["sagas_bad"]
    assert sagas["completed"] > 0
    assert sagas["compensated"] > 0
    assert sagas["compensations"] > 0
    assert report["pending"] == {"records": 0, "available": 0, "in_flight": 0, "delayed": 0}
    assert report["tasks"]["enqueued_ok"] > 50
    # Producers cancelled some tasks: those ended cancelled (not lost, not pending), and none was
    # delivered after its cancel's reply nor completed after it was reported cancelled.
    assert report["findings"]["delivered_after_cancel"] == report["findings"]["completed_after_cancel"] == 0
    assert report["tasks"]["cancelled"] > 0, report["cancels"]
    # HTTP agents worked beside the stdio workers, each session a holder of its own; the shared
    # server's restart cost them their sessions and they came back on new ones.
    http = report["http_agents"]
    assert report["http_workers"] == 2
    assert http["acked"] > 0
    assert http["sessions"] >= 4  # two agents, then two new sessions after restart_http (and one after a kill)
    assert http["holders_seen"] >= 3
    assert report["findings"]["holders_shared"] == report["findings"]["holders_malformed"] == 0
    assert report["http_server_starts"] >= 2
    # Limits: reconstructed from the workers' logs, the working key never held more than its
    # max_working and the rate key never started more than its max_per_minute in a minute; tasks
    # of the working key waited, and unkeyed tasks enqueued meanwhile were delivered within the bound.
    limits = report["limits"]
    assert report["findings"]["limit_working_exceeded"] == report["findings"]["limit_rate_exceeded"] == 0
    assert 1 <= limits["most_held_at_once"] <= limits["max_working"] == 2
    assert limits["most_started_in_a_minute"] <= limits["max_per_minute"]
    assert limits["limited_tasks_that_waited_over_0_5_s"] > 0, limits
    assert report["findings"]["unkeyed_stalled"] == 0
    assert limits["unkeyed_tasks_enqueued_meanwhile"] > 0


def test_negative_controls_a_redis_kill_without_persistence_loses_tasks_and_a_skewed_client_clock_steals_leases(
    tmp_path: Path,
) -> None:
    """Two broken setups in one run (the harness costs seconds to start): Redis without AOF,
    and MCP servers deciding by their own clock with one of them two minutes behind (its
    leases are born expired, so the others take them while they are valid by Redis's clock)."""
    faults = "kill_redis,clock_skew" if faketime_lib() else "kill_redis"
    code, report = run_chaos(
        tmp_path, "--seed", "7", "--duration", "4", "--workers", "3", "--no-persistence", "--faults", faults,
        "--client-clock", "--skew-s", "-120",
    )  # fmt: skip
    require_faketime()
    assert report["faults"]["kill_redis"] >= 1
    assert report["lost"] > 0
    if faketime_lib():
        assert report["faults"]["clock_skew"] >= 1
        assert report["findings"]["stolen_leases"] > 0, report["samples"]
    assert not report["valid"]
    assert code == 1


def test_negative_control_limits_counted_outside_the_read_script_take_a_key_past_its_limit(tmp_path: Path) -> None:
    """MCP servers count each key's room when a read call starts (read, then check, in Python)
    and the script trusts the count: concurrent readers take the key past max_working 1, and the
    checker, from the workers' logs alone, must say so."""
    code, report = run_chaos(
        tmp_path, "--seed", "7", "--duration", "6", "--faults", "pause_worker", "--client-limits", "--max-working", "1",
        "--max-per-minute", "60", "--limited-work-ms", "300",
    )  # fmt: skip
    assert report["client_limits"] is True
    assert report["findings"]["limit_working_exceeded"] > 0, report["limits"]
    assert report["limits"]["most_held_at_once"] > 1
    assert not report["valid"]
    assert code == 1


def test_negative_control_a_saga_transition_split_in_two_calls_leaves_sagas_stuck(tmp_path: Path) -> None:
    """--split-sagas: a completed step's transition stops after its bookkeeping and the worker makes
    the second call, crashing between the two now and then: those sagas never move on."""
    code, report = run_chaos(
        tmp_path, "--seed", "7", "--duration", "4", "--workers", "2", "--http-workers", "0",
        "--faults", "kill_worker", "--split-sagas",
    )  # fmt: skip
    assert report["findings"]["sagas_bad"] > 0, report["sagas"]
    assert all("working waiting on" in why for why in report["samples"]["sagas_bad"])
    assert report["lost"] == report["duplicated"] == 0  # only the sagas are wrong
    assert not report["valid"]
    assert code == 1
