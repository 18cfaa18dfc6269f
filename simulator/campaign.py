"""The campaign job on the simulated campus: production's decision, morning after morning.

Each simulated day starts with the job, as a production deployment runs `run-campaigns` in the
small hours (JOB_HOUR, China time) before the day's activity: `Campaign.job` builds the same
`UserState` the backend builds from its database — the touch history folded by
`backend.core.policy.history`, permissions, caps, what the policy has learnt
(`backend.core.policy.learning`) — and calls `backend.core.policy.decide` with the policy file.
Nothing here decides anything itself: it keeps the books a database would keep (touches with
their send times, outcomes attributed by `backend.core.attribution`, allowances, consent).

Times follow production exactly, so the end-to-end mode (simulator/e2e.py) must make the same
decisions: a touch is due at `planned_send_ms`; a simulated user's events of a day happen at
their usual hour and VISIT_MINUTE; a touch's window is (sent, sent + window] in milliseconds;
it is final once the job's clock has passed its window.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

from backend.core.attribution import in_window
from backend.core.calendar import MS_PER_DAY, day_start_ms
from backend.core.policy import HOLDOUT, SEND, SKIPPED, Decisions, Policy, PolicyState, UserState
from backend.core.policy import decide as core_decide
from backend.core.policy.guards import (
    HOUR_MS,
    MAX_SUBSCRIBE_ALLOWANCE,
    contact_hour,
    planned_send_ms,
)
from backend.core.policy.history import TouchHistory, history_state
from backend.core.policy.learning import LearningTotals
from backend.core.policy.spec import CHANNELS, MESSAGE_KINDS, SUBSCRIBE
from backend.core.scoring import Scores
from backend.core.uplift import risk_instead_of_uplift

SENT, HELD_OUT, SKIP = 0, 1, 2
JOB_HOUR = 2  # China time the daily job runs, before anyone is up
VISIT_MINUTE = 30  # a simulated visit happens at the user's usual hour and this minute
HISTORY_DAYS = 60  # as the backend's campaign job: caps, journeys and streaks look this far
RETENTION_TAIL_DAYS = 37  # D30 retention is known 37 days after the return


def job_ms(day: int) -> int:
    return day_start_ms(day) + JOB_HOUR * HOUR_MS


def visit_ms(day: int, usual_hour: np.ndarray) -> np.ndarray:
    """When each user's events of `day` happen (all of a visit's events share it)."""
    return day_start_ms(day) + usual_hour.astype(np.int64) * HOUR_MS + VISIT_MINUTE * 60_000


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
class DayTouches:
    """The touches decided one morning (sent, held out or skipped) and their outcomes."""

    day: int
    user: np.ndarray
    step: np.ndarray
    channel: np.ndarray
    arm: np.ndarray
    status: np.ndarray
    sent_ms: np.ndarray  # when due (sent touches) or would have been (held out)
    tier: np.ndarray
    value_fen: np.ndarray  # the user's value when decided
    message_cost_fen: np.ndarray
    coupon_face_fen: np.ndarray  # 0: no coupon
    coupon_min_fen: np.ndarray
    outcome: dict[str, np.ndarray] = field(default_factory=dict)
    learnt: np.ndarray | None = None  # folded into the policy's learning (once final)

    OUTCOMES: ClassVar[dict] = {
        "returned": bool,
        "return_ms": np.int64,  # -1 until the user returns
        "return_day": np.int64,
        "ordered": bool,
        "revenue_fen": np.int64,  # orders in the window
        "redeemed": bool,  # its coupon was used on an order in the window
        "retained_d7": bool,  # a visit in [return + 7, return + 14) days
        "retained_d30": bool,  # a visit in [return + 30, return + 37) days
        # The same touch in the untreated twin: what would have happened anyway.
        "returned_twin": bool,
        "revenue_fen_twin": np.int64,
    }

    def __post_init__(self) -> None:
        for name, dtype in self.OUTCOMES.items():
            fill = -1 if name in ("return_ms", "return_day") else 0
            self.outcome.setdefault(name, np.full(self.user.size, fill, dtype=dtype))
        if self.learnt is None:
            self.learnt = self.status != SENT  # only sent touches teach the policy

    @property
    def measured(self) -> np.ndarray:
        return self.status != SKIP

    def subset(self, rows: np.ndarray) -> DayTouches:
        """These rows of the block (outcomes not yet attributed: taken when added)."""
        names = [f.name for f in fields(self) if f.name not in ("day", "outcome", "learnt")]
        return DayTouches(self.day, *(getattr(self, n)[rows] for n in names))


class TouchLog:
    """Every decided touch, as one block of columns per day."""

    def __init__(self) -> None:
        self.days: list[DayTouches] = []  # sent and held-out touches: measured
        self.skipped: list[DayTouches] = []  # skips (the ledger's), never measured
        self.redeemed_today: dict[int, tuple[int, int]] = {}  # user -> (touch day, step)

    def add(self, block: DayTouches) -> None:
        """Keep a day's touches: the measured ones apart from the skips, which only the
        ledger reads (attribution and the caps would walk past them every day)."""
        skip = block.status == SKIP
        self.days.append(block.subset(~skip))
        self.skipped.append(block.subset(skip))

    def column(self, name: str, skipped: bool = True) -> np.ndarray:
        """One column over every touch (sent and held out, then the skips)."""
        blocks = self.days + (self.skipped if skipped else [])
        if not blocks:
            return np.zeros(0, dtype=np.int64)
        if name == "day":
            return np.concatenate([np.full(b.user.size, b.day, np.int64) for b in blocks])
        if name in DayTouches.OUTCOMES:
            return np.concatenate([b.outcome[name] for b in blocks])
        return np.concatenate([getattr(b, name) for b in blocks])

    @property
    def returned(self) -> np.ndarray:
        return self.column("returned")

    @property
    def returned_twin(self) -> np.ndarray:
        return self.column("returned_twin")

    def recent(self, since_day: int) -> list[DayTouches]:
        return [b for b in self.days if b.day >= since_day]

    def record_day(self, today: int, window_days: int, campus, twin, usual_hour) -> np.ndarray:
        """Attribute one day (`campus`/`twin`: its DayActivity) to the open touches with the
        backend's attribution window (`core.attribution.in_window`): a simulated user has at
        most one visit a day, at `visit_ms`, so each touch is checked against it directly.
        Returns which of today's orders used a coupon."""
        window = window_days * MS_PER_DAY
        used_coupon = np.zeros(campus.visited.size, dtype=bool)
        self.redeemed_today = {}
        for b in self.recent(today - window_days - RETENTION_TAIL_DAYS - 1):
            o, u = b.outcome, b.user
            at = visit_ms(today, usual_hour[u])  # the block's users' visit times only
            open_ = b.measured & in_window(b.sent_ms, at, window)
            came = open_ & campus.visited[u]
            first = came & (o["return_ms"] < 0)
            o["return_ms"][first] = at[first]
            o["return_day"][first] = today
            o["returned"] |= came
            bought = open_ & campus.ordered[u]
            o["ordered"] |= bought
            o["revenue_fen"] += np.where(bought, campus.amount_fen[u], 0)
            self._redeem(b, bought, campus, used_coupon)
            r = o["return_day"]
            back = (r >= 0) & campus.visited[u]
            o["retained_d7"] |= back & (today >= r + 7) & (today < r + 14)
            o["retained_d30"] |= back & (today >= r + 30) & (today < r + 37)
            if twin is not None:
                o["returned_twin"] |= open_ & twin.visited[u]
                o["revenue_fen_twin"] += np.where(open_ & twin.ordered[u], twin.amount_fen[u], 0)
        return used_coupon

    def _redeem(self, b: DayTouches, bought, campus, used_coupon: np.ndarray) -> None:
        """A sent coupon is redeemed on its user's first order in the window that meets the
        coupon's minimum spend; one coupon per order (the earliest decided)."""
        u = b.user
        ok = bought & (b.status == SENT) & (b.coupon_face_fen > 0) & ~b.outcome["redeemed"]
        ok &= campus.amount_fen[u] >= b.coupon_min_fen
        ok &= ~used_coupon[u]
        idx = np.flatnonzero(ok)
        _, first = np.unique(u[idx], return_index=True)
        idx = idx[first]
        b.outcome["redeemed"][idx] = True
        used_coupon[u[idx]] = True
        for i in idx.tolist():
            self.redeemed_today[int(u[i])] = (b.day, int(b.step[i]))


class Campaign:
    """One policy running on a simulated campus, with its books."""

    def __init__(
        self,
        policy: Policy,
        n: int,
        rng: np.random.Generator,
        coupons: dict[str, tuple[int, int]] | None = None,
        salt: str = "wxsimulatedcampus",
        seed: int = 0,
        grant_p: float = 0.3,
    ) -> None:
        """`coupons`: coupon template name -> (face value, minimum spend) in fen. `salt` plays
        the tenant's appid in the stable holdout hash."""
        self.policy = policy
        self.n = n
        self.rng = rng
        self.salt = salt
        self.seed = seed
        self.grant_p = grant_p
        self.coupons = dict(coupons or {})
        self.templates = sorted(
            {
                policy.messages[t.message].template_id
                for a in policy.arms
                for t in a.touches
                if t.channel == SUBSCRIBE
            }
        )
        self.permissions = Permissions.draw(n, self.templates, rng)
        self.faces = {name: face for name, (face, _) in self.coupons.items()}
        self.learning = LearningTotals.empty(len(policy.arms))
        self.log = TouchLog()
        self.user_key = np.arange(1, n + 1, dtype=np.int64)  # as database ids would be
        # Each user's latest group: -2 never decided, -1 holdout, else the arm sent.
        self.group = np.full(n, -2, dtype=np.int64)
        self.last_users: UserState | None = None
        self.last_grants: dict[str, np.ndarray] = {}  # template -> accepted on today's visit
        self._reachable: np.ndarray | None = None
        self._coupon_table()

    def _coupon_table(self) -> None:
        """Per (arm, step): message kind, coupon face and minimum spend."""
        p = self.policy
        shape = (len(p.arms), p.max_steps)
        self.kind_table = np.full(shape, -1, dtype=np.int64)
        self.face_table = np.zeros(shape, dtype=np.int64)
        self.min_table = np.zeros(shape, dtype=np.int64)
        for a, spec in enumerate(p.arms):
            for s, touch in enumerate(spec.touches):
                self.kind_table[a, s] = MESSAGE_KINDS.index(p.messages[touch.message].kind)
                if touch.coupon:
                    face, least = self.coupons.get(touch.coupon, (0, 0))
                    self.face_table[a, s], self.min_table[a, s] = face, least

    def kind_of(self, arm: np.ndarray, step: np.ndarray) -> np.ndarray:
        """The message kind (index into MESSAGE_KINDS) of each (arm, step) touch."""
        return self.kind_table[arm.astype(np.int64), step.astype(np.int64)]

    def draw_grants(self) -> list[np.ndarray]:
        """One day's dice for the subscribe prompts, one array per template, in the order
        `after_day` reads them (drawn ahead of the day by the model)."""
        return [self.rng.random(self.n) for _ in self.templates]

    def after_day(
        self,
        today: int,
        campus,
        twin,
        usual_hour: np.ndarray,
        grant_draws: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        """Books after a day (`campus`, `twin`: its DayActivity): returns attributed, prompts
        granted on visits (`grant_draws`: the day's `draw_grants`, else drawn now). Returns
        which of the day's orders used a coupon."""
        used = self.log.record_day(
            today, self.policy.attribution_window_days, campus, twin, usual_hour
        )
        self.last_grants = {}
        draws = self.draw_grants() if grant_draws is None else grant_draws
        for template, dice in zip(self.templates, draws, strict=True):
            accept = campus.visited & (dice < self.grant_p)
            held = self.permissions.allowance[template]
            rows = np.flatnonzero(accept)
            held[rows] = np.minimum(held[rows] + 1, MAX_SUBSCRIBE_ALLOWANCE)
            self.last_grants[template] = accept
        return used

    def history(self, today: int) -> TouchHistory:
        """The touches of the last HISTORY_DAYS, as the backend reads them from its table."""
        blocks = self.log.recent(today - HISTORY_DAYS)
        now = job_ms(today)
        window = self.policy.attribution_window_days * MS_PER_DAY

        def cat(get, dtype=np.int64):
            if not blocks:
                return np.zeros(0, dtype=dtype)
            return np.concatenate([get(b) for b in blocks]).astype(dtype)

        measured = cat(lambda b: b.measured, bool)
        return TouchHistory(
            user=cat(lambda b: b.user),
            day=cat(lambda b: np.full(b.user.size, b.day)),
            step=cat(lambda b: b.step),
            channel=cat(lambda b: b.channel),
            arm=cat(lambda b: b.arm),
            active=measured,
            journey=measured,
            measured=measured,
            attributed=cat(lambda b: now >= b.sent_ms + window, bool),
            returned=cat(lambda b: b.outcome["returned"], bool),
            sent=cat(lambda b: b.sent_ms),
        )

    def _learn(self, today: int) -> PolicyState:
        """Fold in the sent touches whose windows closed by this morning's job (the backend's
        attribution marks them final at the same moment)."""
        now = job_ms(today)
        window = self.policy.attribution_window_days * MS_PER_DAY
        for b in self.log.recent(today - self.policy.attribution_window_days - 2):
            final = ~b.learnt & (now >= b.sent_ms + window)
            if not final.any():
                continue
            spent = b.message_cost_fen + np.where(b.outcome["redeemed"], b.coupon_face_fen, 0)
            self.learning.add(
                b.arm[final],
                b.tier[final],
                b.outcome["returned"][final],
                spent[final],
                b.value_fen[final],
            )
            b.learnt |= final
        return self.learning.state(self.policy, self.faces)

    def user_state(self, today: int, scores: Scores) -> UserState:
        f = scores.features
        # The current lapse began the day after the last visit.
        start = np.subtract(today + 1, f.days_since_visit)
        past = history_state(self.history(today), self.n, today, start)
        if self._reachable is None:  # who follows the OA or gave a phone never changes here
            reachable = np.zeros((self.n, len(CHANNELS)), dtype=bool)
            reachable[:, CHANNELS.index("oa_template")] = self.permissions.follows_oa
            reachable[:, CHANNELS.index("sms")] = self.permissions.has_phone
            reachable[:, CHANNELS.index("in_app")] = True
            reachable.flags.writeable = False
            self._reachable = reachable
        return UserState(
            user_key=self.user_key,
            tier=scores.tier,
            segment=scores.segment,
            worth_recalling=scores.worth_recalling,
            value_fen=scores.value_fen,
            p_alive=scores.p_alive,
            term_days_silent=f.term_days_since_visit,
            usual_hour=contact_hour(f.usual_hour),
            opted_out=self.permissions.opted_out,
            last_step=past.last_step,
            journey_arm=past.journey_arm,
            touches_30d=past.touches_30d,
            channel_week=past.channel_week,
            reachable=self._reachable,
            allowance=self.permissions.allowance,
            ignored_streak=past.ignored_streak,
            # No fitted uplift model in the simulator yet: rank as production does without one.
            uplift=(
                risk_instead_of_uplift(scores.p_alive) if self.policy.rank_by == "uplift" else None
            ),
        )

    def job(self, today: int, scores: Scores) -> Decisions:
        """Decide this morning with production's function."""
        users = self.user_state(today, scores)
        self.last_users = users
        state = self._learn(today)
        d = core_decide(self.policy, users, state, salt=self.salt, day=today, seed=self.seed)
        self.book(today, d, scores)
        return d

    def book(self, today: int, d: Decisions, scores: Scores) -> None:
        """Keep the books of a morning's decisions: touches logged, allowances spent."""
        assert (HOLDOUT, SKIPPED) == (SEND + 1, SEND + 2)  # the acting statuses: a range
        acting = np.flatnonzero((d.status >= SEND) & (d.status <= SKIPPED))
        status = np.select(
            [d.status[acting] == SEND, d.status[acting] == HOLDOUT], [SENT, HELD_OUT], SKIP
        ).astype(np.int8)
        arm, step = d.arm[acting].astype(np.int64), d.step[acting].astype(np.int64)
        channel = d.channel[acting].astype(np.int64)
        costs = np.asarray(self.policy.costs_fen, dtype=np.int64)
        self.log.add(
            DayTouches(
                day=today,
                user=acting,
                step=step,
                channel=channel,
                arm=arm,
                status=status,
                sent_ms=planned_send_ms(today, d.defer_days[acting], d.send_hour[acting]),
                tier=scores.tier[acting].astype(np.int64),
                value_fen=scores.value_fen[acting].astype(np.int64),
                message_cost_fen=np.where(status == SENT, costs[channel], 0),
                coupon_face_fen=self.face_table[arm, step],
                coupon_min_fen=self.min_table[arm, step],
            )
        )
        sent = acting[status == SENT]
        self.group[acting[status == HELD_OUT]] = -1
        self.group[sent] = d.arm[sent]
        for a, arm_spec in enumerate(self.policy.arms):
            for s, touch in enumerate(arm_spec.touches):
                if touch.channel != SUBSCRIBE:
                    continue
                template = self.policy.messages[touch.message].template_id
                spend = sent[(d.arm[sent] == a) & (d.step[sent] == s)]
                self.permissions.allowance[template][spend] -= 1
