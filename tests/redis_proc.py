"""Moved to :mod:`mcp_queue_server.testing` (kept until every test imports it from there)."""

from mcp_queue_server.testing import RedisProc, free_port

__all__ = ["RedisProc", "free_port"]
