"""The one logging setup: everything to stderr (on stdio, stdout carries only the protocol)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    """Log at ``level`` to stderr. ``force`` replaces any handler installed before (the MCP
    SDK's server constructor configures the root logger)."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
