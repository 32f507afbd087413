"""Limits per key: how many tasks of one ``limit_key`` run at once, and how many deliveries of
it start per rolling minute, enforced by ``lua/read.lua`` atomically with each delivery.

A mixin of :class:`~mcp_queue_server.core.queue.TaskQueue`, like
:mod:`~mcp_queue_server.core.inspect`: it needs only the queue's
:class:`~mcp_queue_server.core.connection.Connection` (``_conn``). Also the limits negative
control of the chaos harness (:func:`enforce_limits_in_client_for_negative_control`): the
room counted by the client before the read, which the checker must catch overshooting.
"""

from __future__ import annotations

from mcp_queue_server.core import codec_admin
from mcp_queue_server.core.connection import Connection, guard
from mcp_queue_server.core.keys import DEFAULT_QUEUE
from mcp_queue_server.core.models import LimitInfo, QueueStats
from mcp_queue_server.core.replies import text
from mcp_queue_server.limits import MAX_LIMIT, check_int, check_limit_key, check_queue_name


class LimitOps:
    """Setting and reading limits; see :class:`~mcp_queue_server.core.queue.TaskQueue`."""

    _conn: Connection

    async def set_limit(
        self,
        limit_key: str,
        max_working: int | None = None,
        max_per_minute: int | None = None,
        *,
        queue: str = DEFAULT_QUEUE,
    ) -> bool:
        """Limit the tasks of ``limit_key`` in ``queue``: at most ``max_working`` held at once
        (across every worker and process) and at most ``max_per_minute`` deliveries started in any
        60 s (the queue's clock). Both None remove the limit. A task of a key at its limit is held
        back (still ``queued``, no attempt counted, no lease) while others are delivered, and held
        tasks go in order as room frees. Returns whether the key had a limit before."""
        key = check_limit_key(limit_key)
        check_queue_name(queue)
        for name, value in (("max_working", max_working), ("max_per_minute", max_per_minute)):
            if value is not None:
                check_int(name, value, 1, MAX_LIMIT)
        args = codec_admin.set_limit_args(key, max_working, max_per_minute)
        return codec_admin.set_limit_reply(await self._conn.script("set_limit", queue, args, register=True))

    async def remove_limit(self, limit_key: str, *, queue: str = DEFAULT_QUEUE) -> bool:
        """Remove ``limit_key``'s limit (its held-back tasks go at once); False: it had none."""
        return await self.set_limit(limit_key, None, None, queue=queue)

    async def get_limits(self, queue: str = DEFAULT_QUEUE) -> list[LimitInfo]:
        """Every limit key of ``queue`` with a limit or held-back tasks: the limit, how many of its
        tasks are held now, how many wait for it, and the deliveries started in the last minute."""
        return (await self.get_queue_stats(check_queue_name(queue))).limits

    async def get_queue_stats(self, queue: str = DEFAULT_QUEUE) -> QueueStats:  # from AdminOps
        raise NotImplementedError


#: The limits negative control only: when set (in code, by :func:`enforce_limits_in_client_for_negative_control`),
#: every read first counts each key's room here and the script trusts that count.
_client_counts = False


def enforce_limits_in_client_for_negative_control() -> None:
    """Make every read call of this process count each key's room itself when it starts (read the
    counts, then check them in Python: other processes deliver before the script runs, and a
    blocking read keeps its count while it waits), the script trusting that count instead of
    counting atomically. For the chaos harness's negative control only; nothing in the package
    calls it."""
    global _client_counts
    _client_counts = True


async def client_room(conn: Connection, queue: str) -> str:
    """ "" (the script counts), or in the negative control "key room ..." as this client counted."""
    if not _client_counts:
        return ""
    k = conn.keys(queue)
    with guard():
        raw = await conn.redis.hgetall(k.limits)
        parsed = [(text(key), text(value).split(" ")[0]) for key, value in raw.items()]
        keys = [(key, int(mw)) for key, mw in parsed if mw != "-"]
        async with conn.redis.pipeline(transaction=False) as pipe:
            for key, _ in keys:
                pipe.scard(k.limit_working(key))
            working = await pipe.execute()
    return " ".join(f"{key} {max(mw - int(w), 0)}" for (key, mw), w in zip(keys, working, strict=True))
