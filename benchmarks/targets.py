"""Every target of a run, met or missed, as the README's Markdown table.

``python -m benchmarks.targets out.json`` reads the ``--json`` file of one
``python -m benchmarks.run`` and prints one row per figure that has a target (the figure,
ours, the same run's floor, the ratio, the target and whether it was met), then the run's
machine line, so the README's table is this output pasted, not typed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def row(figure: dict[str, Any]) -> str:
    unit = figure["unit"]
    floor = figure.get("baseline_name")
    base = f"{floor}: {_num(figure.get('baseline_median'))} {unit}" if floor else "-"
    met = "met" if figure.get("met") else "**missed**"
    cells = [
        figure["name"],
        f"{_num(figure['median'])} {unit}",
        base,
        _num(figure.get("ratio")),
        figure.get("target") or "-",
        met,
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def table(doc: dict[str, Any]) -> str:
    figures = [f for f in doc["figures"] if f.get("met") is not None]
    lines = ["| figure | ours | floor (same run) | ratio | target | |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [row(f) for f in figures]
    met = sum(1 for f in figures if f.get("met"))
    meta = doc.get("meta", {})
    server = meta.get("redis_server", {}).get("version", "?")
    lines.append("")
    lines.append(
        f"{met} of {len(figures)} targets met; mode {meta.get('mode', '?')}, redis-server {server}, "
        f"Python {meta.get('python', '?')}, {meta.get('cpus', '?')} CPUs, load at start "
        f"{meta.get('load_at_start', '?')}, {meta.get('seconds', '?')} s."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.targets", description=__doc__)
    p.add_argument("json", type=Path, help="the file written by python -m benchmarks.run --json")
    args = p.parse_args(argv)
    try:
        doc = json.loads(args.json.read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"cannot read {args.json}: {exc}")
    print(table(doc))


if __name__ == "__main__":
    main()
