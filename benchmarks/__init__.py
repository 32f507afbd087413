"""The benchmark suite: ``python -m benchmarks.run [--quick] [--json out.json]``.

Every figure is measured beside a raw redis-py floor doing the same Redis work in the
same run, and reported as a ratio to it (see README.md).
"""
