"""The campaign job on the simulated campus: production's decision, night after night.

Each night the model hands tonight's scores to `Campaign.night`, which builds the same
`UserState` the backend builds from its database — the touch history folded by
`backend.core.policy.history`, permissions, caps — and calls `backend.core.policy.decide`
with the policy file. Nothing here decides anything itself: it only keeps the books a
database would keep (touches, allowances) for the simulated users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from backend.core.calendar import MS_PER_DAY
from backend.core.policy import HOLDOUT, SEND, SKIPPED, Decisions, Policy, PolicyState, UserState
from backend.core.policy import decide as core_decide
from backend.core.policy.history import TouchHistory, history_state
from backend.core.policy.spec import CHANNELS, MESSAGE_KINDS, SUBSCRIBE
from backend.core.scoring import Scores
from backend.core.uplift import risk_instead_of_uplift

SENT, HELD_OUT, SKIP = 0, 1, 2


@dataclass(frozen=True)
class Permissions:
    """Where each simulated user can be reached (the tables the backend reads)."""

    follows_oa: np.ndarray
    has_phone: np.ndarray
    opted_out: np.ndarray
    allowance: dict[str, np.ndarray]  # subscribe template -> one-time allowances left

    @classmethod
    def draw(cls, n: int, templates: list[str], rng: np.random.Generator, p_oa=0.4, p_phone=0.3):
        return cls(
            rng.random(n) < p_oa,
            rng.random(n) < p_phone,
            np.zeros(n, dtype=bool),
            {t: np.zeros(n, dtype=np.int64) for t in templates},
        )


@dataclass
class TouchLog:
    """Every decided touch (sent, held out or skipped), as growing columns."""

    user: list[np.ndarray] = field(default_factory=list)
    day: list[np.ndarray] = field(default_factory=list)
    step: list[np.ndarray] = field(default_factory=list)
    channel: list[np.ndarray] = field(default_factory=list)
    arm: list[np.ndarray] = field(default_factory=list)
    status: list[np.ndarray] = field(default_factory=list)
    # Outcomes, one per touch, filled in day by day (docs/metrics.md defines each).
    outcome: dict[str, np.ndarray] = field(default_factory=dict)

    OUTCOMES: ClassVar[dict] = {
        "returned": bool,
        "return_day": np.int64,  # -1 until the user returns
        "ordered": bool,
        "revenue_fen": np.int64,  # orders in the window
        "retained_d7": bool,  # a visit in [return + 7, return + 14)
        "retained_d30": bool,  # a visit in [return + 30, return + 37)
        # The same touch in the untreated twin: what would have happened anyway.
        "returned_twin": bool,
        "revenue_fen_twin": np.int64,
    }

    def __post_init__(self) -> None:
        for name, dtype in self.OUTCOMES.items():
            self.outcome.setdefault(name, np.zeros(0, dtype=dtype))

    @property
    def returned(self) -> np.ndarray:
        return self.outcome["returned"]

    @property
    def returned_twin(self) -> np.ndarray:
        return self.outcome["returned_twin"]

    def add(self, day: int, users, step, channel, arm, status) -> None:
        self.user.append(users)
        self.day.append(np.full(users.size, day, dtype=np.int64))
        self.step.append(step.astype(np.int64))
        self.channel.append(channel.astype(np.int64))
        self.arm.append(arm.astype(np.int64))
        self.status.append(status)
        for name, dtype in self.OUTCOMES.items():
            fill = -1 if name == "return_day" else 0
            grown = np.full(users.size, fill, dtype=dtype)
            self.outcome[name] = np.concatenate([self.outcome[name], grown])

    def column(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def record_day(self, today: int, window_days: int, campus, twin=None) -> None:
        """Attribute one day to the touches: `campus`/`twin` are that day's DayActivity."""
        if not self.user:
            return
        o = self.outcome
        user, day = self.column("user"), self.column("day")
        open_ = (day < today) & (today <= day + window_days)
        came = open_ & campus.visited[user]
        first = came & (o["return_day"] < 0)
        o["return_day"][first] = today
        o["returned"] |= came
        o["ordered"] |= open_ & campus.ordered[user]
        o["revenue_fen"] += np.where(open_, campus.amount_fen[user], 0)
        r = o["return_day"]
        back = (r >= 0) & campus.visited[user]
        o["retained_d7"] |= back & (today >= r + 7) & (today < r + 14)
        o["retained_d30"] |= back & (today >= r + 30) & (today < r + 37)
        if twin is not None:
            o["returned_twin"] |= open_ & twin.visited[user]
            o["revenue_fen_twin"] += np.where(open_, twin.amount_fen[user], 0)

    def history(self, today: int, window_days: int) -> TouchHistory:
        status = self.column("status")
        day = self.column("day")
        measured = status != SKIP
        return TouchHistory(
            user=self.column("user"),
            day=day,
            step=self.column("step"),
            channel=self.column("channel"),
            arm=self.column("arm"),
            active=measured,
            journey=measured,
            measured=measured,
            attributed=today > day + window_days,
            returned=self.outcome["returned"].copy(),
            sent=day * MS_PER_DAY,
        )


class Campaign:
    """One policy running on a simulated campus, with its books."""

    def __init__(
        self,
        policy: Policy,
        n: int,
        rng: np.random.Generator,
        coupon_face_fen: dict[str, int] | None = None,
        salt: str = "simulated-campus",
        seed: int = 0,
        grant_p: float = 0.3,
    ) -> None:
        self.policy = policy
        self.n = n
        self.rng = rng
        self.salt = salt
        self.seed = seed
        self.grant_p = grant_p
        self.templates = sorted(
            {
                policy.messages[t.message].template_id
                for a in policy.arms
                for t in a.touches
                if t.channel == SUBSCRIBE
            }
        )
        self.permissions = Permissions.draw(n, self.templates, rng)
        self.state = PolicyState.fresh(policy, coupon_face_fen or {})
        self.log = TouchLog()
        self.user_key = np.arange(1, n + 1, dtype=np.int64)  # as database ids would be
        # Each user's latest group: -2 never decided, -1 holdout, else the arm sent.
        self.group = np.full(n, -2, dtype=np.int64)

    def kind_of(self, arm: np.ndarray, step: np.ndarray) -> np.ndarray:
        """The message kind (index into MESSAGE_KINDS) of each (arm, step) touch."""
        table = np.full((len(self.policy.arms), self.policy.max_steps), -1, dtype=np.int64)
        for a, spec in enumerate(self.policy.arms):
            for s, touch in enumerate(spec.touches):
                table[a, s] = MESSAGE_KINDS.index(self.policy.messages[touch.message].kind)
        return table[arm.astype(np.int64), step.astype(np.int64)]

    def after_day(self, today: int, campus, twin=None) -> None:
        """Books after a day (`campus`, `twin`: its DayActivity): returns attributed, prompts
        granted."""
        self.log.record_day(today, self.policy.attribution_window_days, campus, twin)
        for template in self.templates:
            accept = campus.visited & (self.rng.random(self.n) < self.grant_p)
            self.permissions.allowance[template] += accept

    def user_state(self, today: int, scores: Scores, usual_hour: np.ndarray) -> UserState:
        f = scores.features
        window = self.policy.attribution_window_days
        start = today - f.days_since_visit + 1  # the current lapse began after the last visit
        past = history_state(self.log.history(today, window), self.n, today, start)
        reachable = np.zeros((self.n, len(CHANNELS)), dtype=bool)
        reachable[:, CHANNELS.index("oa_template")] = self.permissions.follows_oa
        reachable[:, CHANNELS.index("sms")] = self.permissions.has_phone
        reachable[:, CHANNELS.index("in_app")] = True
        return UserState(
            user_key=self.user_key,
            tier=scores.tier,
            segment=scores.segment,
            worth_recalling=scores.worth_recalling,
            value_fen=scores.value_fen,
            p_alive=scores.p_alive,
            term_days_silent=f.term_days_since_visit,
            usual_hour=usual_hour.astype(np.int64),
            opted_out=self.permissions.opted_out,
            last_step=past.last_step,
            journey_arm=past.journey_arm,
            touches_30d=past.touches_30d,
            channel_week=past.channel_week,
            reachable=reachable,
            allowance=self.permissions.allowance,
            ignored_streak=past.ignored_streak,
            # No fitted uplift model in the simulator yet: rank as production does without one.
            uplift=(
                risk_instead_of_uplift(scores.p_alive) if self.policy.rank_by == "uplift" else None
            ),
        )

    def night(self, today: int, scores: Scores, usual_hour: np.ndarray) -> Decisions:
        """Decide tonight and keep the books: touches logged, allowances spent."""
        users = self.user_state(today, scores, usual_hour)
        self.last_users = users
        d = core_decide(self.policy, users, self.state, salt=self.salt, day=today, seed=self.seed)
        acting = np.flatnonzero((d.status == SEND) | (d.status == HOLDOUT) | (d.status == SKIPPED))
        status = np.select(
            [d.status[acting] == SEND, d.status[acting] == HOLDOUT], [SENT, HELD_OUT], SKIP
        ).astype(np.int8)
        self.log.add(today, acting, d.step[acting], d.channel[acting], d.arm[acting], status)
        sent = acting[status == SENT]
        self.group[acting[status == HELD_OUT]] = -1
        self.group[sent] = d.arm[sent]
        for a, arm in enumerate(self.policy.arms):
            for s, touch in enumerate(arm.touches):
                if touch.channel != SUBSCRIBE:
                    continue
                template = self.policy.messages[touch.message].template_id
                spend = sent[(d.arm[sent] == a) & (d.step[sent] == s)]
                self.permissions.allowance[template][spend] -= 1
        return d
