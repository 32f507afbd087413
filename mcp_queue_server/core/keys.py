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
    <prefix>:{<queue>}:holders          zset consumer -> last seen (ms, Redis clock): live workers/servers
    <prefix>:{<queue>}:events           stream, one entry per script call that finished tasks: task id -> state
                                        (completed, failed, cancelled), trimmed to ~10,000 entries (waits,
                                        subscriptions)
    <prefix>:{<queue>}:waiting          zset fanout parent id -> when it began waiting_children (list_tasks)
    <prefix>:{<queue>}:cancelled        zset cancelled task id -> when (list_tasks; trimmed past result_ttl_s)
    <prefix>:{<queue>}:deadlines        zset task id -> deadline_at (ms) of unfinished tasks with a deadline
    <prefix>:{<queue>}:schedules        zset schedule id -> next_run_at (ms): what falls due next (ended ones leave)
    <prefix>:{<queue>}:schedule_ids     zset schedule id, score 0: every schedule, listed by id
    <prefix>:{<queue>}:sc:<schedule_id> hash, a schedule: its definition, version, next and last run, counts
    <prefix>:{<queue>}:t:<task_id>      hash, the task record
    <prefix>:{<queue>}:ck:<task_id>     string, the latest checkpoint (own TTL)
    <prefix>:{<queue>}:fo:<parent_id>   hash, fanout bookkeeping of a parent
    <prefix>:{<queue>}:fp:<parent_id>   set, children not finished yet
    <prefix>:{<queue>}:fr:<parent_id>   hash, child id -> result JSON
    <prefix>:{<queue>}:rq:<consumer>    hash, script kind -> "<request_id> <first answer JSON>" (60 s)
    <prefix>:{<queue>}:limits           hash limit key -> "<max_working> <max_per_minute>" ("-": none)
    <prefix>:{<queue>}:lwait            zset limit key -> when its line of held-back tasks may move
                                        (>= 1e15: once a slot frees)
    <prefix>:{<queue>}:parked           zset held-back task id -> place in line (list_tasks)
    <prefix>:{<queue>}:lseq             counter: places in line, rate-log members
    <prefix>:{<queue>}:lw:<key>         set, ids of the key's tasks holding a slot (working)
    <prefix>:{<queue>}:lr:<key>         zset, the key's delivery starts of the last minute (seq -> ms)
    <prefix>:{<queue>}:lp:<key>         zset, the key's held-back task ids -> place in line
    <prefix>:{<queue>}:sg:<saga_id>     hash, a saga's steps and progress (its own record is t:<saga_id>;
                                        layout in lua/_saga.lua)
    <prefix>:{<queue>}:saga-split       string; set only by the chaos run's negative control, which splits a
                                        saga's transition into two calls

Two keys lie outside every queue's hash tag::

    <prefix>:queues                     set of queue names: the registry (see :func:`registry_key`)
    <prefix>:queues:byname              zset of the same names, score 0: pages in name order
                                        (see :func:`registry_index_key`)

Scripts receive the six fixed keys (:attr:`QueueKeys.script_keys`, high to stats) as KEYS
and the ``<prefix>:{<queue>}:`` base as an argument to derive the others; derived keys
carry the same hash tag, hence the same slot. Only this module and the Lua scripts spell
key names (``tests/test_script_contract.py`` checks that both name the same prefixes).
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_queue_server.limits import check_queue_name

DEFAULT_QUEUE = "default"

#: Kinds of derived key, appended to :attr:`QueueKeys.base` (spelled again in the Lua scripts).
TASK = "t:"
CHECKPOINT = "ck:"
FANOUT = "fo:"
FANOUT_PENDING = "fp:"
FANOUT_RESULTS = "fr:"
REQUESTS = "rq:"
SCHEDULE = "sc:"
LIMIT_WORKING = "lw:"
LIMIT_STARTS = "lr:"
LIMIT_LINE = "lp:"
SAGA = "sg:"
DERIVED_PREFIXES = (
    TASK,
    CHECKPOINT,
    FANOUT,
    FANOUT_PENDING,
    FANOUT_RESULTS,
    REQUESTS,
    SCHEDULE,
    LIMIT_WORKING,
    LIMIT_STARTS,
    LIMIT_LINE,
    SAGA,
)
#: The consumer whose pending list holds the entries of held-back tasks (no worker's lease).
HELD_CONSUMER = "(held)"


def registry_key(prefix: str) -> str:
    """The set of every known queue of ``prefix``. It has no queue's hash tag, so on a Redis
    Cluster it lives in its own slot: a queue's script cannot write it (a script may only touch
    keys of one slot). Clients add a queue with an idempotent SADD next to its first enqueue
    instead (see :meth:`~mcp_queue_server.core.connection.Connection.script`). One set, rather
    than one per slot, keeps listing the queues a single SMEMBERS on any deployment."""
    return f"{prefix}:queues"


def registry_index_key(prefix: str) -> str:
    """The registry's names again, as a zset (score 0) ordered by name: a page of queues after a
    name is a ZRANGEBYLEX, at a cost that does not grow with the number of queues (issue 17), where
    the set would need an SMEMBERS of all of them. The set stays the record (older versions write
    only it); written and trimmed next to it, and rebuilt from it when their sizes differ."""
    return f"{prefix}:queues:byname"


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
    holders: str
    events: str
    waiting: str
    cancelled: str
    deadlines: str
    schedules: str
    schedule_ids: str
    limits: str
    limit_wait: str
    parked: str
    #: KEYS of every script, in the order ``lua/_lib.lua`` reads them (built once per queue).
    script_keys: tuple[str, str, str, str, str, str]

    @classmethod
    def for_queue(cls, prefix: str, queue: str) -> QueueKeys:
        base = f"{prefix}:{{{check_queue_name(queue)}}}:"
        high, low, delayed, leases, dlq, stats = (
            base + name for name in ("high", "low", "delayed", "leases", "dlq", "stats")
        )
        return cls(
            queue=queue,
            base=base,
            high=high,
            low=low,
            delayed=delayed,
            leases=leases,
            dlq=dlq,
            stats=stats,
            sync=base + "sync",
            holders=base + "holders",
            events=base + "events",
            waiting=base + "waiting",
            cancelled=base + "cancelled",
            deadlines=base + "deadlines",
            schedules=base + "schedules",
            schedule_ids=base + "schedule_ids",
            limits=base + "limits",
            limit_wait=base + "lwait",
            parked=base + "parked",
            script_keys=(high, low, delayed, leases, dlq, stats),
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

    def fanout_pending(self, parent_id: str) -> str:
        return self.base + FANOUT_PENDING + parent_id

    def fanout_results(self, parent_id: str) -> str:
        return self.base + FANOUT_RESULTS + parent_id

    def requests(self, consumer: str) -> str:
        return self.base + REQUESTS + consumer

    def schedule(self, schedule_id: str) -> str:
        return self.base + SCHEDULE + schedule_id

    def limit_working(self, key: str) -> str:
        return self.base + LIMIT_WORKING + key

    def limit_starts(self, key: str) -> str:
        return self.base + LIMIT_STARTS + key

    def limit_line(self, key: str) -> str:
        return self.base + LIMIT_LINE + key

    def saga(self, saga_id: str) -> str:
        return self.base + SAGA + saga_id

    @property
    def saga_split(self) -> str:
        """Negative control only (chaos): while it exists, a saga's step transition stops half-way."""
        return self.base + "saga-split"
