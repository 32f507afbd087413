"""The queue core: a plain library on Redis Streams. Imports nothing above it and nothing from mcp."""
