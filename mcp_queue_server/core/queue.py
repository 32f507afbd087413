"""The queue core: a durable task queue on Redis Streams. Imports nothing from ``mcp``.

Every state change is one Lua script (see ``lua/``); this module validates input,
serialises JSON once, calls the script and turns its reply into codec.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
from redis import exceptions as redis_errors

from mcp_queue_server.core import codec
from mcp_queue_server.core.connection import DEFAULT_QUEUE, guard, request_id, unblocked
from mcp_queue_server.core.inspect import AdminOps
from mcp_queue_server.core.models import (
    AckResult,
    EnqueueResult,
    FailResult,
    FanoutResult,
    NewTask,
    Task,
    TaskStatus,
)
from mcp_queue_server.core.scripts import ALREADY, CONFLICT, DUPLICATE, OK, raise_for, text
from mcp_queue_server.errors import ConflictingRequest, InvalidInput, QueueError
from mcp_queue_server.limits import check_int, check_queue_name, check_task_id, check_task_type, dump_json


class TaskQueue(AdminOps):
    """A task queue on one Redis (or Redis Cluster), for one consumer name.

    Every method takes ``queue`` (an allowlisted name, default ``"default"``). Methods
    raise :class:`~mcp_queue_server.errors.QueueError` subclasses only.
    """

    # -- producing -------------------------------------------------------------------

    async def enqueue(
        self,
        task_type: str,
        payload: dict[str, Any],
        *,
        priority: int = 0,
        task_id: str | None = None,
        delay_ms: int = 0,
        max_attempts: int | None = None,
        queue: str = DEFAULT_QUEUE,
    ) -> EnqueueResult:
        """Enqueue one task. A ``task_id`` that exists already creates nothing (``duplicate``)."""
        new = NewTask(task_type, payload, priority, task_id, delay_ms, max_attempts)
        return (await self.enqueue_batch([new], queue=queue))[0]

    async def enqueue_batch(self, tasks: Sequence[NewTask], *, queue: str = DEFAULT_QUEUE) -> list[EnqueueResult]:
        """Enqueue many tasks in one round trip; each is routed by its priority."""
        if not tasks:
            raise InvalidInput("tasks must not be empty")
        args: list[Any] = [self.settings.priority_threshold, self.settings.max_attempts, len(tasks)]
        ids = []
        for t in tasks:
            task_id = self._new_id(t.task_id)
            ids.append(task_id)
            args += [task_id, *self._task_fields(t)]
            args += [
                check_int("delay_ms", t.delay_ms, 0, 365 * 86_400_000),
                "" if t.max_attempts is None else check_int("max_attempts", t.max_attempts, 1, 1000),
            ]
        if len(set(ids)) != len(ids):
            raise InvalidInput("task ids in one batch must be distinct")
        reply = await self._call("enqueue", queue, *args)
        replicas = await self.confirm_replicas(queue)
        return [
            EnqueueResult(task_id, code == DUPLICATE, TaskStatus(text(state)), queue, replicas)
            for task_id, (code, state) in zip(ids, reply, strict=True)
        ]

    def _new_id(self, task_id: str | None) -> str:
        # 128 random bits as 32 hex characters, like uuid4().hex at a fraction of its cost.
        return os.urandom(16).hex() if task_id is None else check_task_id(task_id)

    def _task_fields(self, t: NewTask) -> list[Any]:
        if not isinstance(t.payload, dict):
            raise InvalidInput("payload must be a JSON object")
        return [
            check_task_type(t.task_type),
            check_int("priority", t.priority, -1_000_000, 1_000_000),
            dump_json("payload", t.payload, self.settings.max_payload_bytes),
        ]

    def _child_fields(self, t: NewTask) -> list[Any]:
        """A subtask's or continuation's fields: no delay (they run when their turn comes)."""
        if t.delay_ms:
            raise InvalidInput("subtasks and on_complete run as soon as they can: delay_ms must be 0")
        limit = "" if t.max_attempts is None else check_int("max_attempts", t.max_attempts, 1, 1000)
        return [*self._task_fields(t), limit]

    async def fanout(
        self,
        parent_task_id: str,
        subtasks: Sequence[NewTask],
        parent_task_data: dict[str, Any] | None = None,
        *,
        on_complete: NewTask | None = None,
        fail_parent_on_child_failure: bool = True,
        queue: str = DEFAULT_QUEUE,
    ) -> FanoutResult:
        """Enqueue ``subtasks`` as children of ``parent_task_id``, all at once.

        The parent waits (``waiting_children``) until every child is acked; then its
        result is the map child id -> result, and ``on_complete`` (if given) is enqueued
        once with ``payload["fanout"] = {parent_task_id, results, parent_task_data}``.
        A dead-lettered child fails the parent unless ``fail_parent_on_child_failure``
        is false, in which case it counts as done with an error result. A parent held
        by the caller leaves its stream and waits. Repeating a fanout returns the first
        one's children.
        """
        parent = check_task_id(parent_task_id)
        if not 1 <= len(subtasks) <= 1000:
            raise InvalidInput(f"a fanout takes 1 to 1000 subtasks, got {len(subtasks)}")
        limit = self.settings.max_payload_bytes
        args: list[Any] = [
            self.settings.priority_threshold,
            self.settings.max_attempts,
            parent,
            "" if parent_task_data is None else dump_json("parent_task_data", parent_task_data, limit),
            "fail" if fail_parent_on_child_failure else "continue",
            self.settings.result_ttl_s,
        ]
        if on_complete is None:
            args += ["", "", "", 0, ""]
        else:
            if "fanout" in on_complete.payload:
                raise InvalidInput('on_complete.payload must not have a "fanout" key: the results go there')
            args += [self._new_id(on_complete.task_id), *self._child_fields(on_complete)]
        args.append(len(subtasks))
        for t in subtasks:
            args += [self._new_id(t.task_id), *self._child_fields(t)]
        reply = await self._call("fanout", queue, *args)
        code = reply[0]
        if code == CONFLICT:
            raise ConflictingRequest(f"task id {text(reply[1])} is already in use: pick new subtask ids")
        if code not in (OK, DUPLICATE):
            raise_for(code, reply, parent)
        replicas = await self.confirm_replicas(queue)
        continuation = text(reply[2]) if reply[2] else None
        return FanoutResult(parent, [text(i) for i in reply[1]], code == DUPLICATE, continuation, replicas)

    # -- consuming -------------------------------------------------------------------

    async def read_messages(
        self,
        count: int | None = None,
        block_ms: int = 0,
        prefer_high_priority: bool = True,
        *,
        lease_ms: int | None = None,
        queue: str = DEFAULT_QUEUE,
    ) -> list[Task]:
        """Lease up to ``count`` tasks to this consumer (re-delivered expired ones first).

        ``block_ms`` = 0 returns at once; otherwise waits up to ``block_ms`` for a task.
        A read cancelled after tasks were leased hands them back before it unwinds.
        """
        s = self.settings
        count = check_int("count", s.read_batch_size if count is None else count, 1, s.max_read_count)
        block_ms = check_int("block_ms", block_ms, 0, s.max_block_ms)
        lease_ms = check_int("lease_ms", s.lease_ms if lease_ms is None else lease_ms, 1, s.max_lease_ms)
        check_queue_name(queue)
        self._touched.add(queue)
        deadline = time.monotonic() + block_ms / 1000
        args = (count, lease_ms, int(prefer_high_priority), s.pending_batch_size)
        reply = await self._fresh_read(queue, args)
        while True:
            tasks = [codec.task(row, queue) for row in reply[6:]]
            if tasks:
                await self._checkpoint_or_release(queue, tasks)
                return tasks
            wait_s = deadline - time.monotonic()
            if wait_s <= 0:
                return []
            if reply[0] != -1:  # a delayed task falls due or a lease expires first
                wait_s = min(wait_s, max(int(reply[0]) - int(reply[4]), 1) / 1000)
            reply = await self._wait_then_read(queue, args, reply, wait_s)

    read_tasks = read_messages

    async def _wait_then_read(self, queue: str, args: tuple[Any, ...], last: list[Any], wait_s: float) -> Any:
        """Wait for an entry added after the ``last`` read (XREAD BLOCK), then read again.

        Through the lane the read is sent behind the XREAD, so Redis runs it the moment the
        XREAD returns, with no round trip in between; its clock is the last read's, moved on
        by the Redis time passed since. A read cancelled while waiting hands back whatever
        that read may have leased. Waits are cut below the socket timeout, so one client
        serves blocking and plain calls.
        """
        k = self.keys(queue)
        block_ms = max(int(min(wait_s, self.settings.socket_timeout_s * 0.8) * 1000), 1)
        xread = ("XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", k.high, k.low, last[2], last[3])
        lane = self._lane
        if lane is None or int(last[5]) < 0:  # a cluster, or an ACL without TIME: two round trips
            await self._block(xread)
            return await self._fresh_read(queue, args)
        req = request_id()
        read = self._script_command("read", queue, *args, req, int(last[5]), 0, now=int(last[4]))
        try:
            with guard():
                woke, reply = await lane.execute(
                    xread, read, timeout_s=block_ms / 1000 + self.settings.socket_timeout_s
                )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._hand_back(queue, args, req)
            raise
        if isinstance(reply, redis_errors.NoScriptError) or (
            unblocked(woke) and isinstance(reply, redis_errors.ResponseError)
        ):
            return await self._fresh_read(queue, args)  # Redis restarted or changed role: read afresh
        for answer in (woke, reply):
            if isinstance(answer, redis_errors.ResponseError) and not unblocked(answer):
                with guard():
                    raise answer
        return reply

    async def _fresh_read(self, queue: str, args: tuple[Any, ...]) -> Any:
        # Shielded: once sent, its reply (and the tasks it leased) must reach the caller.
        with anyio.CancelScope(shield=True):
            return await self._call("read", queue, *args, request_id(), "", 0)

    async def _hand_back(self, queue: str, args: tuple[Any, ...], req: str) -> None:
        """Release the tasks a read with request id ``req`` leased, if it ran at all."""
        try:
            reply = await self._call("read", queue, *args, req, "", 1)
            ids = [text(row[0]) for row in reply[6:]]
            if ids:
                await self._call("release", queue, len(ids), 0, *ids)
        except QueueError:
            pass  # Redis is gone: the leases expire and the tasks are delivered again

    async def _checkpoint_or_release(self, queue: str, tasks: list[Task]) -> None:
        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._call("release", queue, len(tasks), 0, *(t.task_id for t in tasks))
            raise

    async def acknowledge(self, task_id: str, result: Any = None, *, queue: str = DEFAULT_QUEUE) -> AckResult:
        """Complete a task this consumer holds, storing ``result``. Acking twice reports
        ``already_completed``; acking a task leased to another raises NotLeaseHolder."""
        outcome = (await self.ack_many([(task_id, result)], queue=queue))[0]
        if isinstance(outcome, QueueError):
            raise outcome
        return outcome

    ack = acknowledge

    async def ack_many(
        self, items: Iterable[str | tuple[str, Any]], *, queue: str = DEFAULT_QUEUE
    ) -> list[AckResult | QueueError]:
        """Ack many tasks in one round trip; each gets its own outcome (result or error)."""
        args: list[Any] = []
        ids: list[str] = []
        for item in items:
            task_id, result = (item, None) if isinstance(item, str) else item
            ids.append(check_task_id(task_id))
            args += [
                task_id,
                "null" if result is None else dump_json("result", result, self.settings.max_payload_bytes),
            ]
        if not ids:
            raise InvalidInput("no task ids to ack")
        reply = await self._call("ack", queue, self.settings.result_ttl_s, len(ids), *args)
        out: list[AckResult | QueueError] = []
        for task_id, row in zip(ids, reply, strict=True):
            code = row[0]
            if code == OK:
                out.append(AckResult(task_id, "acked", codec.fanout_progress(row[3])))
            elif code == ALREADY:
                out.append(AckResult(task_id, "already_completed"))
            else:
                try:
                    raise_for(code, row, task_id)
                except QueueError as exc:
                    out.append(exc)
        return out

    async def fail(self, task_id: str, error: str, *, retry: bool = True, queue: str = DEFAULT_QUEUE) -> FailResult:
        """Give up a held task with ``error``: retried after a backoff until max attempts,
        then dead-lettered (or dead-lettered at once with ``retry=False``)."""
        if not isinstance(error, str) or not error or len(error) > 4096:
            raise InvalidInput("error must be a non-empty string of at most 4096 characters")
        s = self.settings
        reply = await self._call(
            "fail",
            queue,
            check_task_id(task_id),
            error,
            int(retry),
            s.retry_backoff_ms,
            s.max_backoff_ms,
            request_id(),
        )
        if reply[0] != OK:
            raise_for(reply[0], reply, task_id)
        status = TaskStatus(text(reply[1]))
        retry_at = int(reply[3]) if status != TaskStatus.FAILED else None
        return FailResult(task_id, status, int(reply[2]), retry_at, codec.fanout_progress(reply[4]))

    async def extend_lease(self, task_id: str, lease_ms: int | None = None, *, queue: str = DEFAULT_QUEUE) -> int:
        """Extend a held task's lease to now + ``lease_ms``; returns the new deadline (ms)."""
        lease = check_int(
            "lease_ms", self.settings.lease_ms if lease_ms is None else lease_ms, 1, self.settings.max_lease_ms
        )
        reply = await self._call("extend", queue, check_task_id(task_id), lease)
        if reply[0] != OK:
            raise_for(reply[0], reply, task_id)
        return int(reply[1])

    # -- checkpoints -----------------------------------------------------------------

    async def checkpoint(
        self, task_id: str, data: dict[str, Any], ttl_seconds: int | None = None, *, queue: str = DEFAULT_QUEUE
    ) -> int | None:
        """Save a task's progress (replacing the last checkpoint). When this consumer holds
        the task, its lease is renewed and the new deadline returned; else None."""
        if not isinstance(data, dict):
            raise InvalidInput("checkpoint data must be a JSON object")
        ttl = check_int(
            "ttl_seconds", self.settings.checkpoint_ttl_s if ttl_seconds is None else ttl_seconds, 1, 30 * 86_400
        )
        body = dump_json("checkpoint data", data, self.settings.max_payload_bytes)
        return await self._checkpoint(task_id, body, ttl, queue)

    async def delete_checkpoint(self, task_id: str, *, queue: str = DEFAULT_QUEUE) -> None:
        """Delete a task's checkpoint (refused while another worker holds the task)."""
        await self._checkpoint(task_id, "", 1, queue)

    async def _checkpoint(self, task_id: str, body: str, ttl: int, queue: str) -> int | None:
        reply = await self._call("checkpoint", queue, check_task_id(task_id), body, ttl)
        if reply[0] != OK:
            raise_for(reply[0], reply, task_id)
        return int(reply[1]) or None

    async def get_checkpoint(self, task_id: str, *, queue: str = DEFAULT_QUEUE) -> dict[str, Any] | None:
        """The latest checkpoint of a task, or None."""
        key = self.keys(queue).checkpoint(check_task_id(task_id))
        with guard():
            raw = await self.redis.get(key)
        return None if raw is None else dict(json.loads(raw))

    async def fanout_complete(
        self, parent_task_id: str, subtask_id: str, result: Any = None, *, queue: str = DEFAULT_QUEUE
    ) -> dict[str, Any] | None:
        """Ack a fanout child (the design doc's name); returns the parent's aggregated
        results (child id -> result) when this ack finished the parent, else None."""
        acked = await self.acknowledge(subtask_id, result, queue=queue)
        if acked.fanout is None or acked.fanout.parent_task_id != parent_task_id:
            raise InvalidInput(f"task {subtask_id} is not a subtask of {parent_task_id}")
        if not acked.fanout.finished_parent:
            return None
        info = await self.get_task(parent_task_id, queue=queue)
        return info.fanout.results if info.fanout else None


#: The design document's name for the queue.
RedisStreamQueue = TaskQueue
