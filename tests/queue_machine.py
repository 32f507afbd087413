"""What every hypothesis state machine of the suite shares: real TaskQueues (one per consumer) on
the suite's Redis, driven from hypothesis's synchronous rules through a blocking portal, on a
FakeClock; and how each machine is run."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from mcp_queue_server import Settings, TaskQueue
from tests.conftest import FakeClock


class QueueMachine(RuleBasedStateMachine):
    redis_url: str = ""

    def start_queues(self, consumers: Iterable[str], prefix: str, **overrides: Any) -> None:
        """Call from the machine's @initialize rule: a fresh key prefix, so examples never meet."""
        self.stack = ExitStack()
        self.portal: BlockingPortal = self.stack.enter_context(start_blocking_portal())
        self.clock = FakeClock()
        self.settings = Settings(redis_url=self.redis_url, key_prefix=f"{prefix}{uuid.uuid4().hex[:10]}", **overrides)
        self.queues = {c: self.open_queue(c) for c in consumers}

    def open_queue(self, consumer: str) -> TaskQueue:
        return self.portal.call(TaskQueue(self.settings, consumer=consumer, clock=self.clock).connect)

    def teardown(self) -> None:
        if hasattr(self, "portal"):
            for q in self.queues.values():
                self.portal.call(lambda q=q: q.disconnect(release=False))
            self.stack.close()

    def call(self, consumer: str, method: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.queues[consumer], method)
        return self.portal.call(lambda: fn(*args, **kwargs))


def run_machine(machine: type[QueueMachine], redis_url: str, *, max_examples: int, steps: int) -> None:
    machine.redis_url = redis_url
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
