"""The design doc's demo runs end to end and tells its story."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mcp_queue_server import Settings

ROOT = Path(__file__).resolve().parent.parent
DEMO_S = 90  # a few seconds normally; generous for a loaded 2-core machine

KEY_LINES = [
    "🚀 REDIS STREAMS PHASE 2 DEMO",
    "📍 STEP 1: Producer generates tasks",
    "✅ High priority enqueued: strategy_urgent_001",
    "✅ Normal priority batch: 3 tasks",
    "✅ Fanout: 3 variants",
    "📍 STEP 2: Multiple consumers process tasks",
    "killed mid-task: strategy_batch_1 held at step 2/3",
    "🔨 Processing: strategy_batch_1 (attempt 2)",
    "↩️  strategy_batch_1: resuming from checkpoint step 2/3",
    "✅ Done: strategy_batch_1",
    "📍 STEP 3: Recovery worker checks stuck tasks",
    "✅ No stuck tasks found",
    "✅ DLQ is empty",
    "📊 STATISTICS",
    "strategy_batch_1: completed on attempt 2",
    "strategy_multi_variant: fanout completed, 3/3 variants aggregated",
    "✅ DEMO COMPLETE",
]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(args, env=base | env, cwd=ROOT, capture_output=True, text=True, timeout=DEMO_S)


def assert_tells_the_story(out: str) -> None:
    positions = []
    for line in KEY_LINES:
        assert line in out, f"missing {line!r} in:\n{out}"
        positions.append(out.index(line))
    assert positions == sorted(positions), out
    # The fanout finishes in step 2, before or after the crashed task comes back.
    step_2 = out.split("📍 STEP 2")[1].split("📍 STEP 3")[0]
    assert "🏆 Tournament winner: moderate (strategy_multi_variant_sub_1, score 0.87)" in step_2
    # Three workers really ran in parallel before the crash.
    before_crash = out.split("killed mid-task")[0]
    assert {f"[Worker {n}] 🔨 Processing" in before_crash for n in (1, 2, 3)} == {True}


def test_the_demo_command_runs_on_a_temporary_embedded_redis_with_nothing_installed() -> None:
    done = run([sys.executable, "-m", "mcp_queue_server", "demo"], {})

    assert done.returncode == 0, done.stderr
    assert_tells_the_story(done.stdout)
    assert "queue store: embedded Redis in" in done.stdout
    data_dir = done.stdout.split("embedded Redis in ", 1)[1].split(",", 1)[0]
    assert not Path(data_dir).exists()  # the temporary Redis was stopped and its directory removed


def test_the_example_script_runs_the_demo_on_a_given_redis(settings: Settings) -> None:
    done = run([sys.executable, "examples/example_usage.py"], {"MCP_QUEUE_REDIS_URL": settings.redis_url_value() or ""})

    assert done.returncode == 0, done.stderr
    assert_tells_the_story(done.stdout)
    assert "queue store: the Redis at MCP_QUEUE_REDIS_URL" in done.stdout
