"""The one source of "now" for the backend.

Every service asks the app's clock instead of the wall clock, so tests and the simulator can
run the whole backend on simulated days.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

CHINA_TZ = ZoneInfo("Asia/Shanghai")


class SystemClock:
    """Real UTC time."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)

    def now_ms(self) -> int:
        """The current time as UTC epoch milliseconds, the form every timestamp is stored in."""
        return to_ms(self.now())


class FixedClock(SystemClock):
    """A clock that only moves when told to (tests, simulated days)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The time it was last set or advanced to (UTC)."""
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        """Jump to `when` (an aware datetime), forward or back: a test's "it is now ..."."""
        with self._lock:
            self._now = when.astimezone(UTC)

    def advance(self, **delta: float) -> datetime:
        """Move on by `timedelta(**delta)` (days=1, hours=3, ...) and return the new now."""
        with self._lock:
            self._now += timedelta(**delta)
            return self._now


def to_ms(when: datetime) -> int:
    """Epoch milliseconds of an aware datetime: the storage form of every timestamp."""
    return int(when.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of stored epoch milliseconds (the inverse of `to_ms`)."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def china_iso(ms: int) -> str:
    """How a stored UTC time is shown to merchants and users."""
    return from_ms(ms).astimezone(CHINA_TZ).isoformat(timespec="seconds")
