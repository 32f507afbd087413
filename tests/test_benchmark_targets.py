"""The README's performance table is printed from a run's JSON, every target with met or missed."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from benchmarks.common import Report, Target, make_figure


def _run_json(tmp_path: Path) -> Path:
    report = Report(stream=io.StringIO())
    report.meta.update(mode="full", python="3.11.7", cpus=2, redis_server={"version": "7.0.15"})
    report.add(make_figure("fast thing", "tasks/s", [900, 1000, 1100], "floor", [1000], target=Target(ratio=0.8)))
    report.add(make_figure("slow thing", "ms", [3.0], "floor", [1.0], better="lower", target=Target(ratio=1.2)))
    report.add(make_figure("untargeted", "tasks/s", [5.0], "floor", [10.0]))
    path = tmp_path / "out.json"
    report.write_json(path)
    return path


def test_every_targeted_figure_gets_one_row_marked_met_or_missed(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.targets", str(_run_json(tmp_path))],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| fast thing", "| slow thing"]
    assert rows[0].endswith("| met |")
    assert rows[1].endswith("| **missed** |")
    assert "1 of 2 targets met; mode full, redis-server 7.0.15" in out


def test_an_unreadable_run_file_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "out.json"
    bad.write_text("{not json")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.targets", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"cannot read {bad}:")
    assert len(done.stderr.strip().splitlines()) == 1
