"""``python -m mcp_queue_server``: the command line of :mod:`mcp_queue_server.cli.main`."""

from mcp_queue_server.cli.main import main

if __name__ == "__main__":
    main()
