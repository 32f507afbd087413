"""The operator commands: stats, tasks get/list/cancel, dlq list/replay/purge, recover, enqueue.

Each takes the parsed arguments and a connected queue, writes its result to stdout (a table,
or JSON with ``--json``) and progress to stderr, and returns the exit status; queue errors
propagate to :mod:`mcp_queue_server.cli.main`, which maps them to exit codes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from mcp_queue_server.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    STATS_HEADERS,
    UsageError,
    age_text,
    error,
    is_terminal,
    print_table,
    stats_row,
    totals,
)
from mcp_queue_server.core.models import DeadTask, ListedTask, NewTask, StoreInfo
from mcp_queue_server.core.queue import TaskQueue
from mcp_queue_server.errors import InvalidState, QueueError, TaskNotFound
from mcp_queue_server.settings import Settings
from mcp_queue_server.store.open import open_queue

_ENQUEUE_BATCH = 100  # the MCP tool's batch limit: one round trip each
_TASK_KEYS = {"task_type", "payload", "priority", "task_id", "delay_ms", "max_attempts", "deadline_ms", "limit_key"}


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one operator command against the queue store."""
    # Bad input fails before anything connects (or starts the embedded Redis).
    if args.command == "dlq" and args.action != "list" and bool(args.task_ids) == args.all:
        raise UsageError(f"dlq {args.action}: give task ids or --all (not both)")

    tasks = read_new_tasks(args, sys.stdin) if args.command == "enqueue" else []
    async with open_queue(settings) as queue:
        if args.command == "stats":
            return await stats(queue, args)
        if args.command == "queues":
            return await queues(queue, args)
        if args.command == "tasks":
            return await TASK_ACTIONS[args.action](queue, args)
        if args.command == "dlq":
            return await (dlq_list if args.action == "list" else dlq_repair)(queue, args)
        if args.command == "recover":
            return await recover(queue, args)
        if args.command == "enqueue":
            return await enqueue(queue, args, tasks)

    raise UsageError(f"unknown command {args.command!r}")


def emit_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, default=str), file=out or sys.stdout)


# -- stats ---------------------------------------------------------------------------------


async def stats(queue: TaskQueue, args: argparse.Namespace) -> int:
    found = await queue.stats_of(args.queue) if args.queue else await queue.all_queue_stats()
    if args.json:
        # Every total, 0 included, as the table shows them (the core records only those counted).
        emit_json({s.queue: dataclasses.asdict(s) | {"totals": totals(s)} for s in found})
    else:
        print_table(STATS_HEADERS, [stats_row(s) for s in found])
        print(store_line(await queue.store_info(found[0].queue if found else "default")))
    return EXIT_OK


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def store_line(info: StoreInfo) -> str:
    """The store's memory, one line: policy, used and limit, and a warning when it may evict."""
    if info.maxmemory_policy is None:
        return "store: memory policy not readable (INFO and CONFIG refused to this user)"
    limit = "no limit" if not info.maxmemory else f"of {_bytes(info.maxmemory)}"
    line = f"store: maxmemory-policy {info.maxmemory_policy}, {_bytes(info.used_memory)} used {limit}"
    if info.evicting:
        line += "  WARNING: Redis may delete task records when full; set maxmemory-policy noeviction"
    return line


# -- queues --------------------------------------------------------------------------------


async def queues(queue: TaskQueue, args: argparse.Namespace) -> int:
    if args.action == "list":
        names = await queue.known_queues()
        if args.json:
            emit_json(names)
        else:
            print("\n".join(names) if names else "no queue known yet (a queue joins with its first enqueue)")
        return EXIT_OK
    for name in args.names:
        known = await queue.forget_queue(name)
        print(f"forgot queue {name}" if known else f"queue {name} was not known", file=sys.stderr)
    return EXIT_OK


# -- tasks ---------------------------------------------------------------------------------


async def get_task(queue: TaskQueue, args: argparse.Namespace) -> int:
    emit_json(dataclasses.asdict(await queue.get_task(args.task_id, queue=args.queue)))
    return EXIT_OK


def _listed_row(t: ListedTask) -> list[str]:
    priority = "-" if t.priority is None else str(t.priority)
    return [t.task_id, t.task_type or "-", t.status.value, priority, str(t.attempt), t.holder or "-",
            age_text(t.lease_ms_left)]  # fmt: skip


async def list_tasks(queue: TaskQueue, args: argparse.Namespace) -> int:
    page = await queue.list_tasks(args.state, args.task_type, args.count, args.cursor, queue=args.queue)
    if args.json:
        emit_json(dataclasses.asdict(page))
        return EXIT_OK
    if page.tasks:
        headers = ["TASK ID", "TYPE", "STATUS", "PRIORITY", "ATTEMPT", "HOLDER", "LEASE LEFT"]
        print_table(headers, [_listed_row(t) for t in page.tasks], 3)
    else:
        # With --type a page may hold none of the type and still have a next one.
        print(f"no {args.state} task{' of type ' + args.task_type if args.task_type else ''} on this page")
    if page.next_cursor:
        print(f"more: mcp-queue-server tasks list --queue {args.queue} --state {args.state}"
              f"{' --type ' + args.task_type if args.task_type else ''} --cursor {page.next_cursor}")  # fmt: skip
    return EXIT_OK


async def cancel_tasks(queue: TaskQueue, args: argparse.Namespace) -> int:
    """Cancel the given ids in one call; each that could not be cancelled (unknown, completed,
    failed) is one line on stderr and makes the exit status 1."""
    results = await queue.cancel_many(args.task_ids, args.reason, queue=args.queue)
    refused = [r for r in results if r.error is not None]
    if args.json:
        emit_json([dataclasses.asdict(r) for r in results])
    else:
        done = [r for r in results if r.error is None]
        if done:
            rows = [[r.task_id, r.status, "changed" if r.changed else "unchanged"] for r in done]
            print_table(["TASK ID", "STATUS", "CHANGE"], rows, 3)
    for r in refused:
        error(f"cannot cancel {r.task_id}: {r.error}")
    return EXIT_FAILED if refused else EXIT_OK


TASK_ACTIONS = {"get": get_task, "list": list_tasks, "cancel": cancel_tasks}


# -- dead letters --------------------------------------------------------------------------


def _dead_row(t: DeadTask) -> list[str]:
    error = (t.error or "").replace("\n", " ")
    return [t.task_id, t.task_type or "-", f"{t.attempt}/{t.max_attempts or '-'}", str(t.replays), error[:80]]


async def dlq_list(queue: TaskQueue, args: argparse.Namespace) -> int:
    page = await queue.inspect_dlq(args.count, args.cursor, newest_first=not args.oldest_first, queue=args.queue)
    if args.json:
        emit_json(dataclasses.asdict(page))
        return EXIT_OK
    if not page.tasks:
        print(f"the dead-letter queue of {args.queue} is empty")
        return EXIT_OK
    headers = ["TASK ID", "TYPE", "ATTEMPTS", "REPLAYS", "ERROR"]
    print_table(headers, [_dead_row(t) for t in page.tasks], 2, wrap_last=True)
    if page.next_cursor:
        print(f"more: mcp-queue-server dlq list --queue {args.queue} --cursor {page.next_cursor}")
    return EXIT_OK


class Progress:
    """A progress bar (rich) on ``out`` when it is a terminal; nothing when it is piped, so
    scripts and logs get only the result. Counts ``done`` either way."""

    def __init__(self, what: str, total: int, out: TextIO) -> None:
        self.done = 0
        self._bar: Any = None
        if is_terminal(out):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn())
            self._bar = Progress(*columns, console=Console(file=out), auto_refresh=False)
            self._task = self._bar.add_task(what, total=total)
            self._bar.start()

    def add(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


async def dlq_repair(queue: TaskQueue, args: argparse.Namespace) -> int:
    """Replay or purge the given ids, or the whole DLQ (``--all``) in batches with progress."""
    replay = args.action == "replay"
    act: Callable[[list[str] | None], Any]
    if replay:

        async def act(ids: list[str] | None) -> int:
            return len(await queue.replay_dlq(ids, queue=args.queue))
    else:

        async def act(ids: list[str] | None) -> int:
            return await queue.purge_dlq(ids, queue=args.queue)

    if args.all:
        count = await _repair_all(queue, args.queue, act, "replayed" if replay else "purged")
    else:
        count = await act(args.task_ids)
    if args.json:
        emit_json({"replayed" if replay else "purged": count})
    else:
        print(f"{'replayed' if replay else 'purged'} {count} dead task(s) of queue {args.queue}")
    return EXIT_OK


async def _repair_all(queue: TaskQueue, name: str, act: Callable[[list[str] | None], Any], verb: str) -> int:
    total = (await queue.get_queue_stats(name)).dead_letter
    batch = queue.settings.pending_batch_size
    progress = Progress(verb, total, sys.stderr)
    try:
        while True:
            page = await queue.inspect_dlq(batch, newest_first=False, queue=name)
            if not page.tasks:
                break
            try:
                n = await act([t.task_id for t in page.tasks])
            except (TaskNotFound, InvalidState):
                # An entry whose task record is gone (or changed meanwhile): the core's
                # all-at-once pass skips such entries; let it do the rest.
                n = await act(None)
                progress.add(n)
                break
            progress.add(n)
            if n == 0:
                break
    finally:
        progress.close()
    return progress.done


# -- recovery ------------------------------------------------------------------------------


async def recover(queue: TaskQueue, args: argparse.Namespace) -> int:
    report = await queue.recover(args.min_idle_ms, queue=args.queue)
    if args.json:
        emit_json(dataclasses.asdict(report))
    else:
        print(f"requeued {len(report.requeued)}, dead-lettered {len(report.dead_lettered)} stuck task(s)")
    return EXIT_OK


# -- enqueue -------------------------------------------------------------------------------


def _task_from(obj: Any, where: str) -> NewTask:
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: a task must be a JSON object")
    unknown = set(obj) - _TASK_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_TASK_KEYS)}")
    if "task_type" not in obj:
        raise UsageError(f"{where}: task_type is required")
    return NewTask(
        task_type=obj["task_type"],
        payload=obj.get("payload", {}),
        priority=obj.get("priority", 0),
        task_id=obj.get("task_id"),
        delay_ms=obj.get("delay_ms", 0),
        max_attempts=obj.get("max_attempts"),
        deadline_ms=obj.get("deadline_ms"),
        limit_key=obj.get("limit_key"),
    )


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where} is not valid JSON: {exc}") from None


def read_new_tasks(args: argparse.Namespace, stdin: TextIO) -> list[NewTask]:
    """The tasks to enqueue: from the arguments, or from stdin (object, array or JSON lines).

    Raises:
        UsageError: malformed JSON or task fields.
    """
    if args.task_type is not None:
        payload = _parse_json(args.payload, "--payload")
        if not isinstance(payload, dict):
            raise UsageError("--payload must be a JSON object")
        return [
            NewTask(
                args.task_type,
                payload,
                args.priority,
                args.task_id,
                args.delay_ms,
                deadline_ms=args.deadline_ms,
                limit_key=args.limit_key,
            )
        ]
    if stdin.isatty():
        raise UsageError("give a TASK_TYPE, or pipe tasks as JSON to stdin")
    text = stdin.read()
    if not text.strip():
        raise UsageError("no tasks on stdin")
    try:
        whole = json.loads(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        return [_task_from(_parse_json(line, f"stdin line {i}"), f"stdin line {i}") for i, line in enumerate(lines, 1)]
    items = whole if isinstance(whole, list) else [whole]
    return [_task_from(item, f"stdin task {i}") for i, item in enumerate(items, 1)]


def _chunks(tasks: list[NewTask], size: int) -> Iterator[list[NewTask]]:
    for i in range(0, len(tasks), size):
        yield tasks[i : i + size]


async def enqueue(queue: TaskQueue, args: argparse.Namespace, tasks: list[NewTask]) -> int:
    results = []
    progress = Progress("enqueued", len(tasks), sys.stderr) if len(tasks) > _ENQUEUE_BATCH else None
    try:
        for chunk in _chunks(tasks, _ENQUEUE_BATCH):
            done = await queue.enqueue_batch(chunk, queue=args.queue)
            results += done
            if progress is not None:
                progress.add(len(done))
    except QueueError:
        if results:  # say what did get in before the failure
            print(f"enqueued {len(results)} of {len(tasks)} task(s) before the error", file=sys.stderr)
        raise
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        emit_json([dataclasses.asdict(r) for r in results])
    else:
        for r in results:
            print(r.task_id)
    duplicates = sum(r.duplicate for r in results)
    if duplicates:
        print(f"{duplicates} task id(s) existed already: nothing new was created for them", file=sys.stderr)
    return EXIT_OK if results else EXIT_FAILED
