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
        return datetime.now(UTC)

    def now_ms(self) -> int:
        return to_ms(self.now())


class FixedClock(SystemClock):
    """A clock that only moves when told to (tests, simulated days)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(**delta)
            return self._now


def to_ms(when: datetime) -> int:
    """Epoch milliseconds of an aware datetime: the storage form of every timestamp."""
    return int(when.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def china_iso(ms: int) -> str:
    """How a stored UTC time is shown to merchants and users."""
    return from_ms(ms).astimezone(CHINA_TZ).isoformat(timespec="seconds")
