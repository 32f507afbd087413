"""The Python worker runtime: handlers run over a queue, one process or a supervised pool."""
