"""The Mesa model of a campus: state in numpy arrays, Mesa for time, randomness and records.

Following Mesa's example models, the model owns the population and a DataCollector records
its daily measures; unlike them, users are not stepped one by one: a day is one vectorised
update (simulator/campus.py). `Student` agents, when asked for, are thin read-only views onto
the arrays for inspection — never a Python loop in the daily step.

Each day the users live (organic), their events go to a log shaped like the backend's event
table, and at night the scoring layer scores them with production's own function. The
campaign job (backend.core decide) and the untreated twin are built on it next.
"""

from __future__ import annotations

from datetime import date

import mesa
import numpy as np

from backend.core.bgnbd import BgNbdParams
from backend.core.calendar import day_date, day_number
from backend.core.policy import HOLDOUT, SEND, SKIPPED, Decisions, Policy
from backend.core.scoring import Scores, score_users
from backend.core.tiers import TIERS, TierConfig
from simulator.calendar import CampusCalendar
from simulator.campaign import Campaign
from simulator.campus import DayActivity, DayDraws, PersonaColumns, new_campus, organic_day
from simulator.eventlog import EventLog
from simulator.params import SimParams

DEFAULT_START = date(2026, 3, 2)
DECISION_COUNTS = (
    ("sent", SEND),
    ("held_out", HOLDOUT),
    ("skipped", SKIPPED),
)  # a Monday early in the spring term


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
        policy: Policy | None = None,
        coupon_face_fen: dict[str, int] | None = None,
    ) -> None:
        super().__init__(rng=seed)
        self.seed = seed
        self.params = params or SimParams()
        self.params.check()
        self.calendar = CampusCalendar.load(self.params.calendar)
        streams = np.random.SeedSequence(seed).spawn(3)
        self.organic_rng = np.random.default_rng(streams[1])
        self.state = new_campus(self.params, users, np.random.default_rng(streams[0]))
        self.cols = PersonaColumns.of(self.params, self.state.persona)
        self.day = self.start_day = day_number(start)
        self.today: DayActivity | None = None
        self.log = EventLog()
        self.first_seen = np.full(users, self.day, dtype=np.int64)
        self.tier_config = TierConfig()
        self.bgnbd: BgNbdParams | None = None
        self.scores: Scores | None = None
        self.campaign = (
            Campaign(
                policy,
                users,
                np.random.default_rng(streams[2]),
                coupon_face_fen,
                seed=seed,
            )
            if policy is not None
            else None
        )
        self.decisions: Decisions | None = None
        self.datacollector = mesa.DataCollector(
            model_reporters={
                "date": lambda m: day_date(m.day - 1).isoformat(),
                "active": lambda m: int(m.today.visited.sum()),
                "orders": lambda m: int(m.today.ordered.sum()),
                "revenue_fen": lambda m: int(m.today.amount_fen.sum()),
                "left": lambda m: int(m.today.left.sum()),
                "churned": lambda m: int(m.state.churned.sum()),
                "mean_engagement": lambda m: float(m.state.engagement.mean()),
                **{
                    f"tier_{name}": (lambda m, i=i: int((m.scores.tier == i).sum()))
                    for i, name in enumerate(TIERS)
                },
                **{
                    label: (lambda m, s=status: m._count(s))
                    for label, status in (
                        ("sent", SEND),
                        ("held_out", HOLDOUT),
                        ("skipped", SKIPPED),
                    )
                },
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
        self.log.add_day(self.day, self.today, self.state.usual_hour, draws.session_s())
        if self.campaign is not None:
            self.campaign.after_day(self.day, self.today.visited)
        self.nightly()
        if self.campaign is not None:
            self.decisions = self.campaign.night(self.day, self.scores, self.state.usual_hour)
        self.day += 1
        self.datacollector.collect(self)

    def _count(self, status: int) -> int:
        return 0 if self.decisions is None else self.decisions.count(status)

    def nightly(self) -> None:
        """Score every user as of tonight with the production scoring function. BG/NBD is
        refitted weekly (its parameters move slowly), as `score_users` allows."""
        events, orders = self.log.columns()
        refit = self.bgnbd is None or (self.day - self.start_day) % 7 == 0
        self.scores = score_users(
            events,
            orders,
            len(self.state),
            self.day,
            self.calendar.terms,
            self.tier_config,
            first_seen=self.first_seen,
            last_seen=np.where(self.state.last_visit < 0, self.first_seen, self.state.last_visit),
            params=None if refit else self.bgnbd,
            fit=True,
        )
        if self.scores.params is not None:
            self.bgnbd = self.scores.params
