"""The command line: ``mcp-queue-server [serve] [flags]`` or ``mcp-queue-server COMMAND [flags]``.

One parser, one settings loader (:func:`settings_for`), one logging setup. With no command
(or ``serve``) it runs the MCP server, which takes every settings flag; every other command
takes the queue store's flags, before or after the command. The server modules (and ``mcp``)
are imported only to serve, so the commands, and the worker processes a pool restarts, start
quickly. Exit codes, for scripts:

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
import difflib
import importlib.metadata
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, NoReturn, cast

import anyio

import mcp_queue_server.tracing as tracing
from mcp_queue_server.cli import demo as cli_demo
from mcp_queue_server.cli import limits as cli_limits
from mcp_queue_server.cli import ops as cli_ops
from mcp_queue_server.cli import schedules as cli_schedules
from mcp_queue_server.cli import top as cli_top
from mcp_queue_server.cli import worker as cli_worker
from mcp_queue_server.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    PROG,
    UsageError,
    error,
)
from mcp_queue_server.cli.flags import FLAGS, STORE_FIELDS, SettingsError, add_setting_flags, settings_from
from mcp_queue_server.core.models import LISTABLE_STATES
from mcp_queue_server.errors import InvalidInput, QueueError, QueueUnavailable
from mcp_queue_server.logs import configure_logging
from mcp_queue_server.settings import Settings

SERVE = "serve"
COMMANDS = (
    SERVE,
    "stats",
    "top",
    "queues",
    "tasks",
    "dlq",
    "recover",
    "enqueue",
    "limits",
    "schedules",
    "worker",
    "demo",
)
#: Words that are actions of a command, so `mcp-queue-server replay` can point at `dlq replay`.
ACTIONS = {
    "get": "tasks get",
    "cancel": "tasks cancel",
    "list": "dlq list",
    "replay": "dlq replay",
    "purge": "dlq purge",
    "add": "schedules add",
    "remove": "schedules remove",
}

EPILOG = (
    "Exit codes: 0 ok, 1 operation failed, 2 usage or configuration error, 3 queue store unavailable, 130 interrupted."
)
SETTING_FIELDS = frozenset(field for field, _, _ in FLAGS.values())
FLAG_OF = {field: flag for flag, (field, _, _) in FLAGS.items()}


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"{PROG} {importlib.metadata.version(PROG)}")
        parser.exit(EXIT_OK)


def _queue_flag(p: argparse.ArgumentParser, *, many: bool = False, known: bool = False) -> None:
    if many:
        default = "every known queue" if known else "default"
        p.add_argument("--queue", action="append", metavar="NAME", help=f"queue name (repeatable; default: {default})")
    else:
        p.add_argument("--queue", default="default", metavar="NAME", help="queue name (default: default)")


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def build_parser() -> argparse.ArgumentParser:
    """The one parser: the server's flags at the top (no command means ``serve``), a subcommand each."""
    # Flags default to SUPPRESS, so a flag given after the command overrides the same flag before it
    # and an absent one leaves the environment's value.
    server = argparse.ArgumentParser(add_help=False)
    add_setting_flags(server.add_argument_group("settings (each flag overrides its MCP_QUEUE_* variable)"))
    store = argparse.ArgumentParser(add_help=False)
    add_setting_flags(
        store.add_argument_group("queue store (each flag overrides its MCP_QUEUE_* variable)"), STORE_FIELDS
    )
    p = argparse.ArgumentParser(
        prog=PROG,
        # No abbreviated flags at the top: argparse would match the words after the command
        # against them too, and `dlq purge --all` would be an ambiguous --allowed-host.
        allow_abbrev=False,
        usage="%(prog)s [serve] [flags] | %(prog)s COMMAND [flags] ...",
        parents=[server],
        description="A durable task queue on Redis Streams, served to LLM agents over MCP. With no command: "
        "run the MCP server.",
        epilog=f"`{PROG} COMMAND --help` for each command. {EPILOG}",
    )
    p.add_argument("--version", action=_Version, help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(
        name: str, help_text: str, within: Any = sub, parent: Any = store, summary: str | None = None
    ) -> argparse.ArgumentParser:
        # `summary`: the line in the parent's list of commands, when the description is long.
        return cast(
            argparse.ArgumentParser,
            within.add_parser(name, parents=[parent], help=summary or help_text, description=help_text, epilog=EPILOG),
        )

    command(SERVE, "Run the MCP server (the default with no command); takes every settings flag.", parent=server)

    c = command(
        "stats",
        "Show queue statistics: depths, in flight, delayed, dead letters, oldest age, consumers, totals; every "
        "known queue unless --queue is given; and the store's memory policy.",
        summary="Show queue statistics (every known queue unless --queue is given).",
    )
    _queue_flag(c, many=True, known=True)
    _json_flag(c)

    cli_top.add_arguments(command("top", "A live view of the queues, redrawn every few seconds (Ctrl-C quits)."))

    queues = command(
        "queues",
        "The registry of queues that stats, top and /metrics show: `queues list|forget`. A queue joins it "
        "with its first enqueue (or a worker's heartbeat) and leaves when emptied and its DLQ purged.",
        summary="List the known queues, or forget one: `queues list|forget NAME`.",
    )
    actions = queues.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = command("list", "Every known queue.", actions)
    _json_flag(c)
    c = command("forget", "Take queues out of the registry (their tasks stay; an enqueue adds them back).", actions)
    c.add_argument("names", nargs="+", metavar="NAME")

    tasks = command("tasks", "Look at and cancel tasks: `tasks get|list|cancel`.")
    actions = tasks.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = command("get", "Everything known about one task, as JSON.", actions)
    c.add_argument("task_id", metavar="TASK_ID")
    _queue_flag(c)
    c = command(
        "list",
        "List the tasks in one state, a page at a time (queued: stream order, high priority first; delayed: "
        "by run-at; working: by lease deadline; failed: the dead-letter queue, oldest first).",
        actions,
        summary="List the tasks in one state, a page at a time.",
    )
    c.add_argument("--state", required=True, choices=[s.value for s in LISTABLE_STATES], metavar="STATE",
                   help=f"one of {', '.join(s.value for s in LISTABLE_STATES)}")  # fmt: skip
    c.add_argument("--type", dest="task_type", metavar="TYPE", help="only tasks of this type")
    c.add_argument("--count", type=int, default=20, metavar="N", help="index entries per page (default 20)")
    c.add_argument("--cursor", metavar="CURSOR", help="the next-page cursor a previous list printed")
    _queue_flag(c)
    _json_flag(c)
    c = command(
        "cancel",
        "Cancel tasks: queued or delayed at once; working on request (its worker stops at its next lease "
        "renewal); a fanout parent with its unfinished children. Cancelling again changes nothing. Exits 1 "
        "when a task could not be cancelled (unknown, completed or failed), one line on stderr for each.",
        actions,
        summary="Cancel tasks by id.",
    )
    c.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    c.add_argument("--reason", metavar="TEXT", help="why: kept as the task's error (default: cancelled)")
    _queue_flag(c)
    _json_flag(c)

    dlq = command("dlq", "Inspect and repair the dead-letter queue: `dlq list|replay|purge`.")
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
    c.add_argument(
        "--min-idle-ms",
        type=int,
        metavar="MS",
        help="also take tasks untouched this long (at least 1000), lease or not: for a worker you know is gone",
    )
    _queue_flag(c)
    _json_flag(c)

    c = command(
        "enqueue",
        "Enqueue a task given by arguments, or tasks read from stdin as JSON: one object, an array, "
        'or one object per line, each like {"task_type": ..., "payload": {...}, "priority": 0, "task_id": ...}.',
        summary="Enqueue a task given by arguments, or tasks read from stdin as JSON.",
    )
    c.add_argument("task_type", nargs="?", metavar="TASK_TYPE", help="omit to read tasks from stdin")
    c.add_argument("--payload", default="{}", metavar="JSON", help="the payload, a JSON object (default {})")
    c.add_argument("--priority", type=int, default=0, metavar="N", help="priority (>= the threshold: high)")
    c.add_argument("--task-id", metavar="ID", help="idempotency key: an existing id creates nothing")
    c.add_argument("--delay-ms", type=int, default=0, metavar="MS", help="run no earlier than this from now")
    c.add_argument("--deadline-ms", type=int, metavar="MS", help="finish within this from now (late shows overdue)")
    c.add_argument("--limit-key", metavar="KEY", help="the task obeys this key's limit (see `limits`)")
    _queue_flag(c)
    _json_flag(c)

    limits = command(
        "limits",
        "Limits per limit key of a queue: `limits set|list|remove`. Tasks enqueued with that limit_key run at "
        "most --max-working at once and start at most --max-per-minute in any 60 s; the others wait, queued.",
        summary="Set, list or remove the limits of limit keys: `limits set|list|remove`.",
    )
    actions = limits.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = command("set", "Set a key's limit (replacing the one it had).", actions)
    c.add_argument("key", metavar="KEY")
    c.add_argument("--max-working", type=int, metavar="N", help="tasks of the key held at once, by every worker")
    c.add_argument("--max-per-minute", type=int, metavar="N", help="deliveries started per rolling minute")
    _queue_flag(c)
    _json_flag(c)
    c = command("list", "Every key with a limit or waiting tasks: its limit, working, waiting, started.", actions)
    _queue_flag(c)
    _json_flag(c)
    c = command("remove", "Remove keys' limits: their waiting tasks go at once.", actions)
    c.add_argument("keys", nargs="+", metavar="KEY")
    _queue_flag(c)
    _json_flag(c)

    schedules = command("schedules", cli_schedules.DESCRIPTION, summary=cli_schedules.SUMMARY)
    cli_schedules.add_actions(
        schedules.add_subparsers(dest="action", metavar="ACTION", required=True), command, _queue_flag, _json_flag
    )

    cli_worker.add_arguments(
        command("worker", cli_worker.DESCRIPTION, summary="Run task handlers: one process, or a supervised pool.")
    )

    command("demo", "Run the design doc's demo on a temporary embedded Redis (or --redis-url) and print each step.")
    return p


def closest(word: str, choices: Iterable[str]) -> list[str]:
    """What ``word`` was probably meant to be: the choices it begins, else the most similar ones."""
    choices = list(choices)
    return [c for c in choices if c.startswith(word)] or difflib.get_close_matches(word, choices, n=3, cutoff=0.6)


def command_word(argv: Sequence[str]) -> str | None:
    """The first word of ``argv`` that is neither a flag nor a flag's value: the command, if any.

    Raises:
        UsageError: a flag before the command that the server does not have (every settings flag
            takes a value, as ``--flag value`` or ``--flag=value``, so an unknown one leaves it
            unclear where the command is).
    """
    takes_value = False
    for i, arg in enumerate(argv):
        if takes_value:
            takes_value = False
        elif arg == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        elif arg.startswith("-"):
            name, eq, _ = arg.partition("=")
            if name not in FLAGS and name not in ("-h", "--help", "--version"):
                close = closest(name, FLAGS)
                hint = f": did you mean {' or '.join(close)}?" if close else f" (`{PROG} --help` lists them)"
                raise UsageError(f"unknown flag {name}{hint}")
            takes_value = name in FLAGS and not eq
        else:
            return arg
    return None


def unknown_command(word: str) -> str:
    """The one-line complaint about a word that is no command, with the likeliest ones meant."""
    close = [ACTIONS[word]] if word in ACTIONS else closest(word, COMMANDS)
    if close:
        return f"unknown command {word!r}: did you mean {' or '.join(close)}?"
    return f"unknown command {word!r} (commands: {', '.join(COMMANDS)}; `{PROG} --help` lists them)"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line; ``command`` is ``serve`` when none is given.

    Raises:
        UsageError: the first word is no command (checked first: a stray word must not start a server).
        SystemExit: argparse's own usage errors (status 2), ``--help`` and ``--version`` (status 0).
    """
    word = command_word(argv)
    if word is not None and word not in COMMANDS:
        raise UsageError(unknown_command(word))
    args = build_parser().parse_args(argv)
    if args.command is None:
        args.command = SERVE
    return args


def settings_for(args: argparse.Namespace) -> Settings:
    """The one settings loader: the environment (``MCP_QUEUE_*``) overridden by the flags given.

    Raises:
        UsageError: invalid settings; a server flag given to another command (flags before the
            command are parsed as the server's); HTTP on a non-loopback address without a token.
    """
    flags = {k: v for k, v in vars(args).items() if k in SETTING_FIELDS}
    serving = args.command == SERVE
    if not serving:
        misplaced = sorted(FLAG_OF[k] for k in flags if k not in STORE_FIELDS)
        if misplaced:
            raise UsageError(f"{args.command} takes the queue store flags, not the server's {', '.join(misplaced)}")
    try:
        settings = settings_from(flags)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    if serving and settings.transport != "stdio":
        from mcp_queue_server.server.transports import is_loopback  # mcp: only when about to serve HTTP

        if not is_loopback(settings.host) and settings.auth_token is None and settings.auth_tokens_file is None:
            raise UsageError(
                f"refusing to serve HTTP on non-loopback address {settings.host!r} without authentication: "
                "set MCP_QUEUE_AUTH_TOKEN (or --auth-token) or MCP_QUEUE_AUTH_TOKENS_FILE, or bind 127.0.0.1"
            )
    return settings


def _config_error(args: argparse.Namespace | None, exc: UsageError) -> int:
    if args is not None and args.command == SERVE:
        print(f"{PROG}: {exc}", file=sys.stderr)  # the server's wording, which scripts may already match
    else:
        error(str(exc))
    return EXIT_USAGE


def load_settings(argv: Sequence[str] = ()) -> Settings:
    """The settings ``mcp-queue-server ARGV`` runs with (for embedders: benchmarks, tests).

    Raises:
        SystemExit: bad flags or settings (status 2, the message on stderr).
    """
    args = None
    try:
        args = parse_args(argv)
        return settings_for(args)
    except UsageError as exc:
        sys.exit(_config_error(args, exc))


#: Commands that trace what they do when the OTEL_* variables ask for it (README, Tracing).
_TRACED = frozenset({SERVE, "worker", "enqueue"})


def _setup_logging(settings: Settings, command: str) -> None:
    # Chatty commands (worker) log at the configured level; the others only say what went wrong.
    explicit = "log_level" in settings.model_fields_set
    configure_logging(settings.log_level if explicit or command == "worker" else "WARNING")


def _runner(args: argparse.Namespace, settings: Settings) -> Callable[[], Coroutine[Any, Any, int]]:
    if args.command == "worker":
        return lambda: cli_worker.run(args, settings)
    if args.command == "top":
        return lambda: cli_top.run(args, settings)
    if args.command == "demo":
        return lambda: cli_demo.run(settings)
    if args.command == "schedules":
        return lambda: cli_schedules.run(args, settings)
    if args.command == "limits":
        return lambda: cli_limits.run(args, settings)
    return lambda: cli_ops.run(args, settings)


def _serve(settings: Settings) -> int:
    from mcp_queue_server.server.run import StartRefused  # mcp and the server, only to serve
    from mcp_queue_server.server.run import run as serve

    try:
        stopped_by = serve(settings)  # configures logging itself, after the SDK has
    except StartRefused as exc:  # a port taken, an unusable tokens file
        print(f"{PROG}: {exc}", file=sys.stderr)  # the server's wording for configuration errors
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signals
        return EXIT_INTERRUPTED
    return EXIT_INTERRUPTED if stopped_by == signal.SIGINT else EXIT_OK


def run(argv: Sequence[str]) -> int:
    """Run one command line; returns the exit status (argparse exits by itself on bad usage)."""
    args = None
    try:
        args = parse_args(argv)
        settings = settings_for(args)
    except UsageError as exc:
        return _config_error(args, exc)
    if args.command in _TRACED:
        try:
            tracing.configure_from_env()
        except tracing.TracingSetupError as exc:
            error(str(exc))
            return EXIT_USAGE
    if args.command == SERVE:
        return _serve(settings)
    try:
        _setup_logging(settings, args.command)
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


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``mcp-queue-server`` and ``python -m mcp_queue_server``: run, then exit with the status."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))
