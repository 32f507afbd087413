"""The operator CLI: ``mcp-queue-server COMMAND``, with the server's settings, flags and environment.

``mcp-queue-server`` with no command (or ``serve``) runs the MCP server (see ``__main__``);
every other command is parsed and run here. Exit codes, for scripts:

====  ==========================================================================
0     success
1     the operation failed (no such task, a task in the wrong state, ...)
2     usage or configuration error (bad flags, settings, JSON or handler spec)
3     the queue store is unavailable (Redis unreachable, embedded Redis failed)
130   interrupted (Ctrl-C)
====  ==========================================================================

Errors go to stderr as one line; results go to stdout (tables, or JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any, cast

import anyio

from mcp_queue_server.cli.flags import STORE_FIELDS, SettingsError, add_setting_flags, settings_from
from mcp_queue_server.errors import InvalidInput, QueueError, QueueUnavailable
from mcp_queue_server.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

PROG = "mcp-queue-server"

#: Commands this module runs; ``serve`` is the server, run by ``__main__``.
COMMANDS = ("serve", "stats", "top", "tasks", "dlq", "recover", "enqueue", "worker", "demo")

EPILOG = "Exit codes: 0 ok, 1 operation failed, 2 usage or configuration error, 3 queue store unavailable."

logger = logging.getLogger("mcp_queue_server")


class UsageError(Exception):
    """A command was given arguments it cannot use (exit status 2)."""


def find_command(argv: Sequence[str], value_flags: Collection[str]) -> tuple[int, str] | None:
    """The position and name of the command in ``argv``: the first word that is neither a
    flag nor the value of one of ``value_flags`` (every server flag takes a value)."""
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in value_flags  # "--flag=value" carries its value along
        else:
            return (i, arg) if arg in COMMANDS else None
    return None


def _store_flags(p: argparse.ArgumentParser) -> None:
    add_setting_flags(p.add_argument_group("queue store (each flag overrides its MCP_QUEUE_* variable)"), STORE_FIELDS)


def _queue_flag(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    if many:
        p.add_argument("--queue", action="append", metavar="NAME", help="queue name (repeatable; default: default)")
    else:
        p.add_argument("--queue", default="default", metavar="NAME", help="queue name (default: default)")


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command but ``serve`` (whose flags ``mcp-queue-server --help`` lists)."""
    from mcp_queue_server.cli import top as cli_top  # their flags live with them
    from mcp_queue_server.cli import worker as cli_worker

    common = argparse.ArgumentParser(add_help=False)
    _store_flags(common)
    p = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Operate the task queue. With no command: run the MCP server (see `mcp-queue-server --help`).",
        epilog=EPILOG,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, within: Any = sub) -> argparse.ArgumentParser:
        return cast(
            argparse.ArgumentParser,
            within.add_parser(name, parents=[common], help=help_text, description=help_text, epilog=EPILOG),
        )

    c = command("stats", "Show queue statistics: depths, in flight, delayed, dead letters, oldest age, totals.")
    _queue_flag(c, many=True)
    _json_flag(c)

    cli_top.add_arguments(command("top", "A live view of the queues, redrawn every few seconds (Ctrl-C quits)."))

    tasks = command("tasks", "Look at tasks.").add_subparsers(dest="action", metavar="ACTION", required=True)
    c = command("get", "Everything known about one task, as JSON.", tasks)
    c.add_argument("task_id", metavar="TASK_ID")
    _queue_flag(c)

    dlq = command("dlq", "Inspect and repair the dead-letter queue.")
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = command("list", "List dead-lettered tasks, newest first.", actions)
    c.add_argument("--count", type=int, default=20, metavar="N", help="tasks per page (default 20)")
    c.add_argument("--cursor", metavar="CURSOR", help="the next-page cursor a previous list printed")
    c.add_argument("--oldest-first", action="store_true", help="oldest first")
    _queue_flag(c)
    _json_flag(c)
    for name, verb in (("replay", "Put dead tasks back in their queue with a fresh attempt budget."),
                       ("purge", "Delete dead tasks for good.")):  # fmt: skip
        c = command(name, verb, actions)
        c.add_argument("task_ids", nargs="*", metavar="TASK_ID")
        c.add_argument("--all", action="store_true", help="every dead task of the queue")
        _queue_flag(c)
        _json_flag(c)

    c = command("recover", "Requeue tasks whose lease expired; dead-letter those out of attempts.")
    c.add_argument("--min-idle-ms", type=int, metavar="MS", help="also take tasks untouched this long, lease or not")
    _queue_flag(c)
    _json_flag(c)

    c = command(
        "enqueue",
        "Enqueue a task given by arguments, or tasks read from stdin as JSON: one object, an array, "
        'or one object per line, each like {"task_type": ..., "payload": {...}, "priority": 0, "task_id": ...}.',
    )
    c.add_argument("task_type", nargs="?", metavar="TASK_TYPE", help="omit to read tasks from stdin")
    c.add_argument("--payload", default="{}", metavar="JSON", help="the payload, a JSON object (default {})")
    c.add_argument("--priority", type=int, default=0, metavar="N", help="priority (>= the threshold: high)")
    c.add_argument("--task-id", metavar="ID", help="idempotency key: an existing id creates nothing")
    c.add_argument("--delay-ms", type=int, default=0, metavar="MS", help="run no earlier than this from now")
    _queue_flag(c)
    _json_flag(c)

    cli_worker.add_arguments(command("worker", cli_worker.DESCRIPTION))

    command("demo", "Run the design doc's demo on a temporary embedded Redis (or --redis-url) and print each step.")
    return p


def load_settings(flags: dict[str, Any]) -> Settings:
    """Settings from the environment overridden by the given store flags.

    Raises:
        UsageError: the settings are invalid.
    """
    try:
        return settings_from({k: v for k, v in flags.items() if k in STORE_FIELDS})
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def _configure_logging(settings: Settings, command: str) -> None:
    # Chatty commands (worker) log at the configured level; the others only say what went wrong.
    explicit = "log_level" in settings.model_fields_set
    level = settings.log_level if explicit or command == "worker" else "WARNING"
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )


def _runner(args: argparse.Namespace, settings: Settings) -> Callable[[], Coroutine[Any, Any, int]]:
    from mcp_queue_server.cli import ops as cli_ops
    from mcp_queue_server.cli import top as cli_top
    from mcp_queue_server.cli import worker as cli_worker

    if args.command == "worker":
        return lambda: cli_worker.run(args, settings)
    if args.command == "top":
        return lambda: cli_top.run(args, settings)
    if args.command == "demo":
        from mcp_queue_server.cli import demo as cli_demo

        return lambda: cli_demo.run(settings)
    return lambda: cli_ops.run(args, settings)


def error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str]) -> int:
    """Run one command (not ``serve``); returns the exit status."""
    args = build_parser().parse_args(argv)  # exits with status 2 on bad usage
    try:
        settings = load_settings(vars(args))
        _configure_logging(settings, args.command)
        return anyio.run(_runner(args, settings))
    except (UsageError, InvalidInput) as exc:
        error(str(exc))
        return EXIT_USAGE
    except QueueUnavailable as exc:
        error(str(exc))
        return EXIT_UNAVAILABLE
    except QueueError as exc:
        error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
