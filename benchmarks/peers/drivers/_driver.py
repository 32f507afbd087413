"""Shared by the peer drivers, which run inside each peer's own venv (stdlib only here).

Every driver is ``python DRIVER.py MODE --url URL --n N [--concurrency C]`` with MODE one of
``enqueue_one``, ``enqueue_batch``, ``process`` (prefill untimed, then one worker in this
process until all N are done) and ``drain`` (prefill untimed, then the peer's lowest-level
consume API below its worker, one job at a time where that is all it offers; ``rate`` None
with ``unsupported`` saying why where it has none). It prints one JSON line: ``{"rate": tasks_per_s, ...}``.
``fill`` (BullMQ only: issue 17's memory figure) adds N waiting jobs in batches of 100, untimed,
and exits; the harness reads Redis's memory before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def payload(i: int = 0) -> dict[str, Any]:
    """The same ~200-byte no-op payload as benchmarks.common.payload."""
    return {"doc": f"doc-{i:08d}", "op": "noop", "step": i, "text": "lorem ipsum dolor sit amet " * 5, "tags": ["a"]}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["enqueue_one", "enqueue_batch", "process", "drain", "fill"])
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=0, help="0: the driver's chosen best setting")
    return p.parse_args()


def emit(**result: Any) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


class Finish:
    """Counts completions; records the first start and the moment the n-th completed."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.ran = 0  #: task function calls (a failing task would complete without one)
        self.t0 = 0.0
        self.t1 = 0.0

    def started(self) -> None:
        self.ran += 1
        if not self.t0:
            self.t0 = time.perf_counter()

    def done(self) -> bool:
        self.count += 1
        if self.count == self.n:
            self.t1 = time.perf_counter()
            return True
        return False

    @property
    def rate(self) -> float:
        return self.n / (self.t1 - self.t0)
