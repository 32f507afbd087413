"""Every Redis key name, in one place.

All keys of one queue share the Cluster hash tag ``{<queue>}``, so a script that
touches several keys of one queue stays in one slot::

    <prefix>:{<queue>}:high             stream, priority >= threshold
    <prefix>:{<queue>}:low              stream, the rest
    <prefix>:{<queue>}:delayed          zset task_id -> run-at (ms)
    <prefix>:{<queue>}:leases           zset task_id -> lease deadline (ms)
    <prefix>:{<queue>}:dlq              stream of dead-lettered task ids
    <prefix>:{<queue>}:stats            hash of running totals
    <prefix>:{<queue>}:sync             string written before WAIT (replica confirmation)
    <prefix>:{<queue>}:t:<task_id>      hash, the task record
    <prefix>:{<queue>}:ck:<task_id>     string, the latest checkpoint (own TTL)
    <prefix>:{<queue>}:fo:<parent_id>   hash, fanout bookkeeping of a parent
    <prefix>:{<queue>}:fp:<parent_id>   set, children not finished yet
    <prefix>:{<queue>}:fr:<parent_id>   hash, child id -> result JSON

Scripts receive the fixed keys as KEYS and the ``<prefix>:{<queue>}:`` base as an
argument to derive per-task keys; derived keys carry the same hash tag, hence the
same slot. Only this module and the Lua scripts spell key names.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_queue_server.limits import check_queue_name

#: Per-task key kinds, appended to :attr:`QueueKeys.base` (mirrored in lua/_lib.lua).
TASK = "t:"
CHECKPOINT = "ck:"
FANOUT = "fo:"
FANOUT_PENDING = "fp:"
FANOUT_RESULTS = "fr:"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Key names of one queue."""

    queue: str
    base: str
    high: str
    low: str
    delayed: str
    leases: str
    dlq: str
    stats: str
    sync: str

    @classmethod
    def for_queue(cls, prefix: str, queue: str) -> QueueKeys:
        base = f"{prefix}:{{{check_queue_name(queue)}}}:"
        return cls(
            queue=queue,
            base=base,
            high=base + "high",
            low=base + "low",
            delayed=base + "delayed",
            leases=base + "leases",
            dlq=base + "dlq",
            stats=base + "stats",
            sync=base + "sync",
        )

    @property
    def streams(self) -> tuple[str, str]:
        return (self.high, self.low)

    def task(self, task_id: str) -> str:
        return self.base + TASK + task_id

    def checkpoint(self, task_id: str) -> str:
        return self.base + CHECKPOINT + task_id

    def fanout(self, parent_id: str) -> str:
        return self.base + FANOUT + parent_id

    def fanout_results(self, parent_id: str) -> str:
        return self.base + FANOUT_RESULTS + parent_id
