"""When a schedule's slots fall: 5-field UTC cron (parsed by ``cronsim``) or a fixed interval.

Pure arithmetic on ms since the epoch, no I/O: the scripts decide *whether* a slot is due by
the store's clock; this module says *which* slots exist. Cron slots are whole minutes; an
interval's slots are ``anchor + k * every_ms`` (the anchor is ``start_at``, or the time the
schedule was set), so every process computes the same slots for the same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cronsim import CronSim, CronSimError

from mcp_queue_server.errors import InvalidInput

#: Counting the slots a firing stands for stops here (the count is only reported).
MAX_COUNTED = 10_000
_FIELDS = "minute hour day-of-month month day-of-week"


def check_cron(expr: str) -> str:
    """``expr`` if it is a 5-field cron expression cronsim accepts; else InvalidInput saying why."""
    if not isinstance(expr, str) or len(expr.split()) != 5:
        raise InvalidInput(f"cron {expr!r} must have 5 fields ({_FIELDS}, UTC), e.g. '*/15 * * * *' or '0 9 * * 1-5'")
    try:
        CronSim(expr, datetime.now(UTC))
    except CronSimError as exc:
        why = str(exc).lower() or "not understood"
        raise InvalidInput(
            f"cron {expr!r}: {why} (fields: {_FIELDS}, UTC; e.g. '*/15 * * * *' or '0 9 * * 1-5')"
        ) from None
    return expr


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=UTC)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp()) * 1000


@dataclass(frozen=True, slots=True)
class Cadence:
    """The slots of one schedule: cron or every_ms (one of them), within start_at..end_at."""

    cron: str | None
    every_ms: int | None
    anchor: int  #: every_ms: the grid's origin; cron: no slot before it (start_at)
    end_at: int | None

    def _within(self, slot: int) -> int | None:
        return None if self.end_at is not None and slot > self.end_at else slot

    def first_at_or_after(self, t: int) -> int | None:
        """The first slot at or after ``t`` (and the anchor); None: none before end_at."""
        t = max(t, self.anchor)
        if self.every_ms is not None:
            steps = -(-(t - self.anchor) // self.every_ms)  # ceiling division
            return self._within(self.anchor + steps * self.every_ms)
        return self.after(t - 1)

    def after(self, t: int) -> int | None:
        """The first slot strictly after ``t``; None: none before end_at."""
        if self.every_ms is not None:
            if t < self.anchor:
                return self._within(self.anchor)
            return self._within(self.anchor + ((t - self.anchor) // self.every_ms + 1) * self.every_ms)
        assert self.cron is not None
        # Cron slots are whole minutes; cronsim yields the first match after the given second.
        start = max(t, self.anchor - 1)
        slot = _ms(next(iter(CronSim(self.cron, _dt(start)))))
        return self._within(slot)

    def latest_at_or_before(self, t: int) -> int:
        """The last slot at or before ``t``; the caller knows one exists (a due slot)."""
        if self.every_ms is not None:
            return self.anchor + max(t - self.anchor, 0) // self.every_ms * self.every_ms
        assert self.cron is not None
        # Reverse from t with a microsecond set: cronsim then starts at t's own second, inclusive.
        start = datetime.fromtimestamp(t // 1000, tz=UTC).replace(microsecond=1)
        return _ms(next(iter(CronSim(self.cron, start, reverse=True))))

    def count_between(self, first: int, last: int) -> int:
        """Slots in [first, last) (capped at MAX_COUNTED): what a late firing stands for."""
        if last <= first:
            return 0
        if self.every_ms is not None:
            return min((last - first + self.every_ms - 1) // self.every_ms, MAX_COUNTED)
        n, slot = 0, first
        while slot < last and n < MAX_COUNTED:
            n += 1
            following = self.after(slot)
            if following is None:
                break
            slot = following
        return n
