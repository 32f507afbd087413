"""Fault-injection harness: real processes, a seeded nemesis and a Jepsen-style checker.

Run ``python -m chaos.run --seed 7 --duration 20``. Modules: ``common`` (config, logs),
``procs`` (process groups, the worker supervisor), ``producer`` and ``worker`` (child
processes), ``nemesis`` (the fault schedule), ``checker`` (reconciliation), ``run`` (CLI).
"""
