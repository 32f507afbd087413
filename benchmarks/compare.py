"""``python -m benchmarks.run --compare REF [--only ...]``: this tree against another git ref, one run.

REF is checked out as a ``git worktree`` at a temporary path; each round runs the chosen
sections once in a child process per tree, alternating which goes first (this tree's
``python -m benchmarks.run`` with its own package, then REF's with REF's package, each on its
own redis-server), so load drift hits both. Each tree is measured by its own suite, so a figure
REF's suite does not have is shown without a REF value. The table gives, per figure, the median
over rounds of each tree's median and ours ÷ REF (above 1: ours is higher, which for a rate is
faster and for a latency or memory is slower).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import log

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def _run_tree(tree: Path, args: list[str], out: Path) -> list[dict[str, Any]]:
    """One ``benchmarks.run`` in ``tree`` (its own package: the child's cwd is first on sys.path)."""
    subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args, "--json", str(out)],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    figures: list[dict[str, Any]] = json.loads(out.read_text())["figures"]
    return figures


def compare(ref: str, args: list[str], rounds: int) -> str:
    """Run ``args`` (``benchmarks.run`` flags) ``rounds`` times in each tree; the table."""
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    ours: dict[str, list[float]] = {}
    theirs: dict[str, list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}  # (tree, figure) -> each round's ratio to its floor
    units: dict[str, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        ref_tree = Path(tmp) / "ref"
        _git("worktree", "add", "--detach", str(ref_tree), sha)
        try:
            for r in range(rounds):
                order = [("ours", ROOT), ("ref", ref_tree)]
                for name, tree in order if r % 2 == 0 else order[::-1]:
                    log(f"round {r + 1}/{rounds}: {name} ({'this tree' if tree == ROOT else ref + ' ' + sha[:10]})")
                    for f in _run_tree(tree, args, Path(tmp) / f"{name}{r}.json"):
                        (ours if name == "ours" else theirs).setdefault(f["name"], []).append(f["median"])
                        if f.get("ratio") is not None:
                            ratios.setdefault((name, f["name"]), []).append(f["ratio"])
                        units[f["name"]] = (f["unit"], f.get("better", "higher"))
        finally:
            _git("worktree", "remove", "--force", str(ref_tree))
    return table(ref, ours, theirs, units, ratios)


def table(
    ref: str,
    ours: dict[str, list[float]],
    theirs: dict[str, list[float]],
    units: dict[str, tuple[str, str]],
    ratios: dict[tuple[str, str], list[float]],
) -> str:
    """Per figure: each tree's median, ours ÷ REF, and each tree's ratio to its own same-run floor."""
    rows = [["figure", "unit", "ours", ref, f"ours / {ref}", "better", "ours / floor", f"{ref} / floor"]]
    for name, (unit, better) in units.items():
        a = statistics.median(ours[name]) if name in ours else None
        b = statistics.median(theirs[name]) if name in theirs else None
        ratio = a / b if a is not None and b else None
        verdict = "" if ratio is None or ratio == 1 else ("ours" if (ratio > 1) == (better == "higher") else ref)
        floors = [_fmt(_median(ratios.get((tree, name)))) for tree in ("ours", "ref")]
        rows.append([name, unit, _fmt(a), _fmt(b), "-" if ratio is None else f"{ratio:.3f}", verdict, *floors])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
