"""The Mesa model of a campus: state in numpy arrays, Mesa for time, randomness and records.

Following Mesa's example models, the model owns the population and a DataCollector records
its daily measures; unlike them, users are not stepped one by one: a day is one vectorised
update (simulator/campus.py). `Student` agents, when asked for, are thin read-only views onto
the arrays for inspection — never a Python loop in the daily step.

This is the organic campus: users whose engagement decays and who drift away. The nightly
campaign job (backend.core scoring and decide) and the untreated twin are built on it next.
"""

from __future__ import annotations

from datetime import date

import mesa
import numpy as np

from backend.core.calendar import day_date, day_number
from simulator.calendar import CampusCalendar
from simulator.campus import DayActivity, DayDraws, PersonaColumns, new_campus, organic_day
from simulator.params import SimParams

DEFAULT_START = date(2026, 3, 2)  # a Monday early in the spring term


class Student(mesa.Agent):
    """A view of one user's row (for inspection and small examples)."""

    def __init__(self, model: CampusModel, row: int) -> None:
        super().__init__(model)
        self.row = row

    @property
    def persona(self) -> str:
        return self.model.params.personas[self.model.state.persona[self.row]].name

    @property
    def engagement(self) -> float:
        return float(self.model.state.engagement[self.row])

    @property
    def churned(self) -> bool:
        return bool(self.model.state.churned[self.row])

    @property
    def last_visit(self) -> date | None:
        day = int(self.model.state.last_visit[self.row])
        return day_date(day) if day >= 0 else None


class CampusModel(mesa.Model):
    """`users` students from `start`, one step per day.

    Randomness comes from separate seeded streams derived from `seed`: the population, the
    organic days (shared with an untreated twin), and — once the campaign job is in — the
    responses to messages and the costs, so changing one never reshuffles the others.
    """

    def __init__(
        self,
        users: int = 1000,
        seed: int = 0,
        params: SimParams | None = None,
        start: date = DEFAULT_START,
        with_agents: bool = False,
    ) -> None:
        super().__init__(rng=seed)
        self.seed = seed
        self.params = params or SimParams()
        self.params.check()
        self.calendar = CampusCalendar.load(self.params.calendar)
        streams = np.random.SeedSequence(seed).spawn(2)
        self.organic_rng = np.random.default_rng(streams[1])
        self.state = new_campus(self.params, users, np.random.default_rng(streams[0]))
        self.cols = PersonaColumns.of(self.params, self.state.persona)
        self.day = day_number(start)
        self.today: DayActivity | None = None
        self.datacollector = mesa.DataCollector(
            model_reporters={
                "date": lambda m: day_date(m.day - 1).isoformat(),
                "active": lambda m: int(m.today.visited.sum()),
                "orders": lambda m: int(m.today.ordered.sum()),
                "revenue_fen": lambda m: int(m.today.amount_fen.sum()),
                "left": lambda m: int(m.today.left.sum()),
                "churned": lambda m: int(m.state.churned.sum()),
                "mean_engagement": lambda m: float(m.state.engagement.mean()),
            }
        )
        if with_agents:
            for row in range(users):
                Student(self, row)

    def step(self) -> None:
        """One day of organic campus life."""
        factor, in_break = self.calendar.factor(self.day, self.params)
        draws = DayDraws.draw(self.organic_rng, len(self.state))
        self.today = organic_day(
            self.state, self.cols, self.params, self.day, factor, in_break, draws
        )
        self.day += 1
        self.datacollector.collect(self)
