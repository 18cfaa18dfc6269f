"""The campus calendar as the simulator lives it: how busy each day is."""

from __future__ import annotations

from dataclasses import dataclass

from backend.core import seeds
from backend.core.calendar import (
    TermCalendar,
    calendar_from_spec,
    exam_ranges,
    is_weekend,
)
from simulator.params import SimParams


@dataclass(frozen=True)
class CampusCalendar:
    terms: TermCalendar  # the breaks, exactly as the scoring layer counts them
    exams: tuple[tuple[int, int], ...]

    @classmethod
    def load(cls, name: str) -> CampusCalendar:
        spec = seeds.calendar_spec(name)
        return cls(calendar_from_spec(spec), exam_ranges(spec))

    def factor(self, day: int, params: SimParams) -> tuple[float, bool]:
        """(visit factor, is a break) for a day number."""
        if bool(self.terms.is_break(day)):
            return params.break_factor, True
        factor = 1.0
        if is_weekend(day):
            factor *= params.weekend_factor
        if any(first <= day <= last for first, last in self.exams):
            factor *= params.exam_factor
        return factor, False
