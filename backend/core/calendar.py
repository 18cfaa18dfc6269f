"""Days on the campus clock: China-time day numbers and term days (breaks do not count).

A student silent through winter break has not churned. Every "days since" that decides a
tier is therefore counted in term days: days outside the tenant's breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

MS_PER_DAY = 86_400_000
CHINA_OFFSET_MS = 8 * 3_600_000  # China has no daylight saving time
EPOCH = date(1970, 1, 1)
# The calendar files in seeds/ a tenant or a simulation may name: a named set, never "any file
# under seeds/" (policy presets and the demo tenant there are YAML too, and are not calendars).
DEFAULT_CALENDAR = "campus_calendar.yaml"
CALENDAR_FILES = (DEFAULT_CALENDAR,)


def check_calendar_name(name: str) -> None:
    """Refuse a calendar name outside CALENDAR_FILES: the one check the tenant settings, the
    scoring loader and the simulator all make, so none of them reads another file in seeds/."""
    if name not in CALENDAR_FILES:
        allowed = ", ".join(CALENDAR_FILES)
        raise ValueError(
            f"calendar {name!r} is not one of the calendar files: calendar must be one of {allowed}"
        )


def china_day(ts_ms: np.ndarray | int) -> np.ndarray:
    """Day number (days since 1970-01-01) of a UTC epoch-ms time, in China time."""
    return (np.asarray(ts_ms, dtype=np.int64) + CHINA_OFFSET_MS) // MS_PER_DAY


def china_hour(ts_ms: np.ndarray | int) -> np.ndarray:
    """Hour of day 0..23 (int64) in China time of UTC epoch-ms times: what "night" and the
    usual hour are counted in, wherever the server runs."""
    return ((np.asarray(ts_ms, dtype=np.int64) + CHINA_OFFSET_MS) % MS_PER_DAY) // 3_600_000


def is_weekend(day: np.ndarray | int) -> np.ndarray:
    """Saturday or Sunday of a day number; day 0 (1970-01-01) was a Thursday. The one weekend
    rule: scoring, the simulated campus and calibration all ask here."""
    return (np.asarray(day) + 3) % 7 >= 5


def day_number(d: date) -> int:
    """The day number (days since 1970-01-01) of a calendar date: how days are stored."""
    return (d - EPOCH).days


def day_date(n: int) -> date:
    """The calendar date of a day number, for showing and for the calendar files."""
    return date.fromordinal(EPOCH.toordinal() + int(n))


def day_start_ms(n: int) -> int:
    """UTC epoch ms of 00:00 China time on day n."""
    return int(n) * MS_PER_DAY - CHINA_OFFSET_MS


@dataclass(frozen=True)
class TermCalendar:
    """Which days are breaks. `breaks` are inclusive (first_day, last_day) day numbers."""

    breaks: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_dates(cls, ranges: list[tuple[date, date]]) -> TermCalendar:
        """A calendar from (first, last) break dates, both included, in any order."""
        return cls(tuple(sorted((day_number(a), day_number(b)) for a, b in ranges)))

    def is_break(self, days: np.ndarray | int) -> np.ndarray:
        """Per day number: whether it falls in a break (bool, the shape of `days`)."""
        d = np.asarray(days, dtype=np.int64)
        out = np.zeros(d.shape, dtype=bool)
        for first, last in self.breaks:
            out |= (d >= first) & (d <= last)
        return out

    def term_day_count(self, days: np.ndarray | int) -> np.ndarray:
        """Term days in [0, day]: differences of it count term days between two dates."""
        d = np.asarray(days, dtype=np.int64)
        off = np.zeros(d.shape, dtype=np.int64)
        for first, last in self.breaks:
            off += np.clip(d - first + 1, 0, last - first + 1)
        return d + 1 - off

    def term_days_between(self, earlier, later) -> np.ndarray:
        """Term days in (earlier, later]: 0 when the whole gap was a break."""
        return self.term_day_count(later) - self.term_day_count(earlier)


def _ranges(items: list, key: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in items:
        first, last = item["from"], item["to"]
        first = first if isinstance(first, date) else date.fromisoformat(first)
        last = last if isinstance(last, date) else date.fromisoformat(last)
        if last < first:
            raise ValueError(f"calendar {key} {item} ends before it starts")
        out.append((day_number(first), day_number(last)))
    return tuple(sorted(out))


def calendar_from_spec(spec: dict) -> TermCalendar:
    """The breaks of a calendar document (seeds/campus_calendar.yaml's shape)."""
    return TermCalendar(_ranges(spec.get("breaks", []), "break"))


def exam_ranges(spec: dict) -> tuple[tuple[int, int], ...]:
    """The exam weeks of a calendar document: term days with unusual activity."""
    return _ranges(spec.get("exams", []), "exam")
