"""Where the queue lives: the embedded Redis, its binaries, and opening a queue on it or on a URL."""
