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
from backend.core.policy.spec import MESSAGE_KINDS
from backend.core.scoring import Scores, score_users
from backend.core.tiers import TIERS, TierConfig
from simulator.calendar import CampusCalendar
from simulator.campaign import Campaign
from simulator.campus import DayActivity, DayDraws, PersonaColumns, new_campus, organic_day
from simulator.eventlog import EventLog
from simulator.params import SimParams
from simulator.response import ResponseParams, respond

DEFAULT_START = date(2026, 3, 2)
DECISION_COUNTS = (("sent", SEND), ("held_out", HOLDOUT), ("skipped", SKIPPED))
GUARD_REASONS = (
    "capped_30d",
    "capped_channel",
    "suppressed",
    "no_permission",
    "stop_loss",
    "budget",
)


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
        response_params: ResponseParams | None = None,
        warmup_days: int = 0,
    ) -> None:
        super().__init__(rng=seed)
        self.seed = seed
        self.params = params or SimParams()
        self.params.check()
        self.calendar = CampusCalendar.load(self.params.calendar)
        streams = np.random.SeedSequence(seed).spawn(4)
        self.organic_rng = np.random.default_rng(streams[1])
        self.state = new_campus(self.params, users, np.random.default_rng(streams[0]))
        self.cols = PersonaColumns.of(self.params, self.state.persona)
        self.day = self.start_day = day_number(start)
        self.policy_from = self.start_day + warmup_days  # history builds up before any message
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
        # The untreated twin: the same users living the same days with the same dice, never
        # messaged. Only a simulation has it; it is what the holdout estimate is checked by.
        self.twin = self.state.copy() if policy is not None else None
        self.twin_today: DayActivity | None = None
        self.response_rng = np.random.default_rng(streams[3])
        self.response_params = response_params or ResponseParams()
        self.lift = np.zeros(users)  # tomorrow's extra visit probability from messages
        self.boost = np.zeros(users)  # engagement regained if they do come back
        self.farmer_back = np.zeros(users, dtype=bool)  # came for a coupon; leave after it
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
                **{label: (lambda m, s=status: m._count(s)) for label, status in DECISION_COUNTS},
                **{f"guard_{r}": (lambda m, r=r: m._reason(r)) for r in GUARD_REASONS},
                "quiet_deferred": lambda m: m._quiet(),
                "group_active": lambda m: m._group_active(),
                "committed_cost_fen": lambda m: m._committed_cost(),
                "incremental_revenue_fen": lambda m: (
                    0
                    if m.twin_today is None
                    else int(m.today.amount_fen.sum() - m.twin_today.amount_fen.sum())
                ),
            }
        )
        if with_agents:
            for row in range(users):
                Student(self, row)

    def step(self) -> None:
        """One day of organic campus life."""
        factor, in_break = self.calendar.factor(self.day, self.params)
        draws = DayDraws.draw(self.organic_rng, len(self.state))
        lift = self.lift if self.campaign is not None else None
        self.today = organic_day(
            self.state, self.cols, self.params, self.day, factor, in_break, draws, lift
        )
        if self.campaign is not None:
            self._after_messages()
            self.twin_today = organic_day(
                self.twin, self.cols, self.params, self.day, factor, in_break, draws
            )
        self.log.add_day(self.day, self.today, self.state.usual_hour, draws.session_s())
        if self.campaign is not None:
            self.campaign.after_day(self.day, self.today, self.twin_today)
        self.nightly()
        if self.campaign is not None and self.day >= self.policy_from:
            self.decisions = self.campaign.night(self.day, self.scores, self.state.usual_hour)
            self._answer(self.decisions)
        self.day += 1
        self.datacollector.collect(self)

    def _after_messages(self) -> None:
        """Yesterday's messages played out: those who came back regain engagement; coupon
        farmers who came for the coupon go again."""
        came = self.today.visited & (self.lift > 0)
        self.state.engagement = np.minimum(1.0, self.state.engagement + self.boost * came)
        gone = came & self.farmer_back
        gone &= self.response_rng.random(len(self.state)) < self.response_params.farmer_leave
        self.state.churned |= gone
        self.lift[:] = 0.0
        self.boost[:] = 0.0
        self.farmer_back[:] = False

    def _answer(self, d: Decisions) -> None:
        """Tonight's sends meet their users (responses drawn from their own stream)."""
        sent = np.flatnonzero(d.status == SEND)
        if sent.size == 0:
            return
        kind = self.campaign.kind_of(d.arm[sent], d.step[sent])
        persona = self.state.persona[sent]
        names = np.array([p.name for p in self.params.personas])
        r = respond(
            sent,
            d.channel[sent].astype(np.int64),
            kind,
            names[persona],
            self.scores.features.term_days_since_visit[sent],
            self.campaign.last_users.touches_30d[sent],
            self.response_params,
            self.response_rng,
        )
        self.lift[r.back] = 1.0
        self.boost[r.back] = r.boost
        # Coupon farmers brought back by a coupon take it and go (SEED_DIGEST §2).
        came_for_coupon = (names[persona] == "coupon_farmer") & (
            kind == MESSAGE_KINDS.index("coupon")
        )
        self.farmer_back[np.intersect1d(r.back, sent[came_for_coupon])] = True
        self.state.churned[r.leave] = True

    def _count(self, status: int) -> int:
        return 0 if self.decisions is None else self.decisions.count(status)

    def _committed_cost(self) -> int:
        """Tonight's spend as decided: message costs plus coupon face values."""
        return 0 if self.decisions is None else int(self.decisions.cost_fen.sum())

    def _quiet(self) -> int:
        return 0 if self.decisions is None else int(self.decisions.quiet_deferred.sum())

    def _reason(self, name: str) -> int:
        return 0 if self.decisions is None else self.decisions.reason_counts().get(name, 0)

    def _group_active(self) -> dict[str, int]:
        """Today's visitors by the group each user was last decided into."""
        if self.campaign is None:
            return {}
        names = ["never messaged", "holdout", *[a.name for a in self.campaign.policy.arms]]
        visitors = self.campaign.group[self.today.visited] + 2  # -2 never, -1 holdout, arms
        counts = np.bincount(visitors, minlength=len(names))
        return dict(zip(names, map(int, counts), strict=True))

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
