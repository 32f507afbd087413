"""Moved to :mod:`mcp_queue_server.testing` (kept until every test imports it from there)."""

from mcp_queue_server.testing import ClusterProc

__all__ = ["ClusterProc"]
