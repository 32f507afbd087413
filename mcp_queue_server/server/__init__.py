"""The MCP server over the queue: the only layer that imports mcp."""
