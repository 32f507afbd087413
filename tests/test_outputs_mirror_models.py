"""The tool results (server/outputs.py) mirror the core's records (core/models.py) field for field,
except for the differences listed here on purpose: a field added to a record shows up in the
tool result, or here, never silently in one of the two."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from mcp_queue_server.core import models
from mcp_queue_server.server import outputs

#: Record -> the tool result built from it, and how the result differs (on purpose).
#: "dropped": the record's fields the result leaves out; "added": the result's own fields.
MIRRORS: list[tuple[type[Any], type[BaseModel], dict[str, set[str]]]] = [
    # A tool called as an MCP task ends with the worker's result or error (server/tasks.py).
    (models.EnqueueResult, outputs.EnqueueOutput, {"added": {"result", "error"}}),
    # One of a batch: the queue and the replica count are said once, in EnqueueBatchOutput.
    (models.EnqueueResult, outputs.EnqueuedTask, {"dropped": {"queue", "replicas_confirmed"}}),
    # The queue is said once, in ReadOutput; the time left on the lease is counted at the reply.
    (models.Task, outputs.LeasedTask, {"dropped": {"queue"}, "added": {"lease_ms_left"}}),
    (models.FanoutProgress, outputs.FanoutProgressOut, {}),
    # A bulk ack reports a task it could not ack with its error instead of failing the call.
    (models.AckResult, outputs.AckedTask, {"added": {"error"}}),
    (models.FailResult, outputs.FailOutput, {}),
    (models.FanoutResult, outputs.FanoutOutput, {"added": {"status", "results", "error"}}),
    (models.FanoutState, outputs.FanoutStateOut, {}),
    (models.TaskInfo, outputs.TaskInfoOutput, {"added": {"lease_ms_left"}}),
    # The stream a dead task came from is the store's business, not the model's.
    (models.DeadTask, outputs.DeadTaskOut, {"dropped": {"source_stream"}}),
    # The page names the queue it was read from (the core's page does not know it).
    (models.DeadLetterPage, outputs.DeadLetterOutput, {"added": {"queue"}}),
    (models.RecoveryReport, outputs.RecoverOutput, {}),
    (models.CancelResult, outputs.CancelledTask, {}),
    # The time left on the lease is counted at the reply.
    (models.Lease, outputs.LeaseOutput, {"added": {"lease_ms_left"}}),
    (models.ListedTask, outputs.ListedTaskOut, {}),
    (models.TaskPage, outputs.TaskListOutput, {}),
    (models.StreamStats, outputs.StreamStatsOut, {}),
    (models.ConsumerInfo, outputs.ConsumerOut, {}),
    (models.LimitInfo, outputs.LimitOut, {}),
    # With all_queues the one queue's result also lists a page of every known queue, and the next page's cursor.
    (models.QueueStats, outputs.QueueStatsOutput, {"added": {"queues", "next_cursor"}}),
    (models.QueueStats, outputs.QueueStatsRow, {}),
    (models.ScheduleSet, outputs.ScheduleSetOutput, {}),
    (models.Schedule, outputs.ScheduleOut, {}),
    (models.SchedulePage, outputs.ScheduleListOutput, {}),
    (models.SagaStarted, outputs.SagaStartedOutput, {}),
    (models.SagaState, outputs.SagaStateOut, {}),
    (models.SagaStepState, outputs.SagaStepStateOut, {}),
    (models.SagaBranchState, outputs.SagaBranchStateOut, {}),
]

#: Records that are inputs, not results; StoreInfo, which the operators' views show (CLI stats,
#: logs) but no tool returns; QueueStatsPage, whose two fields queue_stats returns beside the
#: queue's own statistics (queues, next_cursor: QueueStatsOutput above).
INPUTS = {
    models.NewTask,
    models.StoreInfo,
    models.NewSchedule,
    models.Firing,
    models.SagaStep,
    models.SagaAction,
    models.QueueStatsPage,
}
#: Tool results with no record behind them (built by the tool from several values).
TOOL_ONLY = {
    outputs.EnqueueBatchOutput,
    outputs.ReadOutput,
    outputs.AckOutput,
    outputs.CheckpointOutput,
    outputs.CancelOutput,
    outputs.ReplayOutput,
    outputs.PurgeOutput,
    outputs.RemoveScheduleOutput,
    outputs.LimitSetOutput,  # set_limit says what it set (the core returns only whether one existed)
}


def _record_fields(record: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(record)}


def _classes(module: types.ModuleType, keep: Any) -> set[type[Any]]:
    return {c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__ and keep(c)}


def _ids(pair: tuple[type[Any], type[BaseModel], Any]) -> str:
    return f"{pair[0].__name__}-{pair[1].__name__}"


@pytest.mark.parametrize(("record", "output", "differences"), MIRRORS, ids=[_ids(p) for p in MIRRORS])
def test_a_tool_result_has_its_record_s_fields_except_the_listed_differences(
    record: type[Any], output: type[BaseModel], differences: dict[str, set[str]]
) -> None:
    dropped, added = differences.get("dropped", set()), differences.get("added", set())
    mine, theirs = _record_fields(record), set(output.model_fields)

    assert dropped <= mine, f"{record.__name__} no longer has {dropped - mine}: update MIRRORS"
    assert not added & mine, f"{record.__name__} now has {added & mine}: no longer a difference"
    assert mine - dropped - theirs == set(), f"{output.__name__} lacks fields of {record.__name__}"
    assert theirs - mine - added == set(), f"{output.__name__} has fields {record.__name__} lacks"


def _named(hint: Any) -> Iterator[Any]:
    """``hint`` and every type inside it (Optional, list, dict)."""
    yield hint
    for arg in typing.get_args(hint):
        yield from _named(arg)


def _records_in(hint: Any) -> set[type[Any]]:
    return {t for t in _named(hint) if isinstance(t, type) and dataclasses.is_dataclass(t)}


def _results_in(hint: Any) -> set[type[Any]]:
    return {t for t in _named(hint) if isinstance(t, type) and issubclass(t, BaseModel)}


@pytest.mark.parametrize(("record", "output", "differences"), MIRRORS, ids=[_ids(p) for p in MIRRORS])
def test_a_nested_record_becomes_its_mirrored_tool_result(
    record: type[Any], output: type[BaseModel], differences: dict[str, set[str]]
) -> None:
    hints = typing.get_type_hints(record, vars(models))
    for name, field in output.model_fields.items():
        if name not in hints:
            continue
        nested, results = _records_in(hints[name]), _results_in(field.annotation)
        mirrored = {o for r, o, _ in MIRRORS if r in nested}
        assert bool(nested) == bool(results), f"{output.__name__}.{name}: {nested} vs {results}"
        assert results <= mirrored, f"{output.__name__}.{name}: {results} does not mirror {nested}"


def test_every_record_and_every_tool_result_is_accounted_for() -> None:
    records = _classes(models, dataclasses.is_dataclass)
    results = _classes(outputs, lambda c: issubclass(c, BaseModel) and c.__name__ != "_Out")

    assert records - INPUTS == {r for r, _, _ in MIRRORS}
    assert results - TOOL_ONLY == {o for _, o, _ in MIRRORS}


def test_a_tool_result_is_built_from_its_record() -> None:
    # from_attributes: the record itself goes in, with nested records turned into results.
    empty = models.StreamStats(0, 0, 0)
    stats = models.QueueStats("q", empty, empty, 0, 0, 0, 0, None, [models.ConsumerInfo("c", 1, 2)], {"enqueued": 1})

    out = outputs.QueueStatsOutput.model_validate(stats)

    assert out.consumers == [outputs.ConsumerOut(name="c", pending=1, idle_ms=2)]
    assert out.model_dump()["high"] == dataclasses.asdict(empty)
