"""The campaign job on the simulated campus: production's decision, morning after morning.

Each simulated day starts with the job, as a production deployment runs `run-campaigns` in the
small hours (JOB_HOUR, China time) before the day's activity: `Campaign.job` builds the same
`UserState` the backend builds from its database — the touch history folded by
`backend.core.policy.history`, permissions, caps, what the policy has learnt
(`backend.core.policy.learning`) — and calls `backend.core.policy.decide` with the policy file.
Nothing here decides anything itself: it keeps the books a database would keep (touches with
their send times, outcomes attributed by `backend.core.attribution`, allowances, consent).

Two presets need more than the morning job, and get it as production does:

* `rank_by: uplift` ranks by the two-model learner (`backend.core.uplift`) once it is fitted
  on the finished treated and holdout touches — production fits it when the merchant asks
  (`POST /admin/v1/policies/{name}/uplift-model`); the simulator follows the documented
  procedure `refit_uplift` (first fit as soon as the learner accepts the data, then weekly)
  and records, day by day, whether the ranking came from a fitted model or fell back to risk;
* event-triggered policies (`trigger: payment_failed`) are decided when the campus's events
  happen (`Campaign.trigger`), one user per request as production's `on_events` does.

Times follow production exactly, so the end-to-end mode (simulator/e2e.py) must make the same
decisions: a touch is due at `planned_send_ms`; a simulated user's events of a day happen at
their usual hour and VISIT_MINUTE; a touch's window is (sent, sent + window] in milliseconds;
it is final once the job's clock has passed its window.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from backend.core.calendar import MS_PER_DAY
from backend.core.policy import (
    HOLDOUT,
    NOT_ELIGIBLE,
    SEND,
    SKIPPED,
    Decisions,
    Policy,
    PolicyState,
    UserState,
)
from backend.core.policy import decide as core_decide
from backend.core.policy.guards import (
    MAX_SUBSCRIBE_ALLOWANCE,
    next_send_ms,
    planned_send_ms,
)
from backend.core.policy.history import HISTORY_DAYS, TouchHistory
from backend.core.policy.learning import LearningTotals
from backend.core.policy.spec import CHANNELS, EVENT_TRIGGERS, MESSAGE_KINDS, SUBSCRIBE
from backend.core.policy.user_state import journey_start, reach, user_state
from backend.core.scoring import Scores
from backend.core.uplift import (
    UpliftModel,
    fit_two_model,
    predict_uplift,
    risk_instead_of_uplift,
    uplift_features,
)
from simulator.touch_log import HELD_OUT, SENT, SKIP, DayTouches, TouchLog, job_ms, visit_ms

UPLIFT_REFIT_DAYS = 7  # the operating procedure: refit the uplift learner weekly
# The one event the simulated campus produces (of spec.EVENT_TRIGGERS, the triggers production
# decides when the event arrives and the nightly job leaves alone).
SIMULATED_EVENTS = ("payment_failed",)


def uplift_x(scores: Scores, rows: np.ndarray) -> np.ndarray:
    """The uplift learner's features of `rows` from a morning's scores, as production reads
    them from that day's score snapshot (the activity index is stored to 2 places:
    services/scoring.py `_rows`; the usual hour raw)."""
    f = scores.features
    return uplift_features(
        f.term_days_since_visit[rows],
        f.visit_days_30[rows],
        f.orders_total[rows],
        f.spend_fen_total[rows],
        scores.p_alive[rows],
        np.round(scores.activity.index[rows], 2),
        scores.worth_recalling[rows],
        f.usual_hour[rows],
    )


@dataclass(frozen=True)
class Permissions:
    """Where each simulated user can be reached (the tables the backend reads)."""

    follows_oa: np.ndarray
    has_phone: np.ndarray
    opted_out: np.ndarray
    allowance: dict[str, np.ndarray]  # subscribe template -> one-time allowances left

    @classmethod
    def draw(cls, n: int, templates: list[str], rng: np.random.Generator, p_oa=0.4, p_phone=0.3):
        """Who follows the OA (`p_oa`) and gave a phone (`p_phone`); nobody opted out and no
        allowances yet (they are granted on visits: Campaign.after_day)."""
        return cls(
            rng.random(n) < p_oa,
            rng.random(n) < p_phone,
            np.zeros(n, dtype=bool),
            {t: np.zeros(n, dtype=np.int64) for t in templates},
        )


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
        if policy.trigger is not None and policy.trigger not in SIMULATED_EVENTS:
            raise ValueError(
                f"policy {policy.name} is triggered by {policy.trigger}, an event the simulated "
                f"campus does not produce (it produces: {', '.join(SIMULATED_EVENTS)})"
            )
        # The uplift learner as production stores it on the policy row (None: not fitted;
        # the policy then ranks by risk), when it was last fitted, and per decided day which
        # ranking was used: "model" or "risk" (`ranking`), with every fit tried (`fits`).
        self.uplift_model: UpliftModel | None = None
        self.uplift_fit_day: int | None = None
        self.ranking: dict[int, str] = {}
        self.fits: list[dict] = []

    @property
    def listens(self) -> bool:
        """Decided when its event arrives, not by the morning job."""
        return self.policy.trigger in EVENT_TRIGGERS

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

    def user_state(
        self, today: int, scores: Scores, triggered: np.ndarray | None = None
    ) -> UserState:
        """This morning's UserState, built by core.policy.user_state as the job builds it.
        `triggered`: the users whose event fires a trigger policy today (their journey
        starts today, as production's `population(triggered=...)`)."""
        f = scores.features
        if self._reachable is None:  # who follows the OA or gave a phone never changes here
            self._reachable = reach(self.permissions.follows_oa, self.permissions.has_phone)
            self._reachable.flags.writeable = False
        return user_state(
            today,
            user_key=self.user_key,
            tier=scores.tier,
            segment=scores.segment,
            worth_recalling=scores.worth_recalling,
            value_fen=scores.value_fen,
            p_alive=scores.p_alive,
            term_days_silent=f.term_days_since_visit,
            usual_hour=f.usual_hour,
            opted_out=self.permissions.opted_out,
            reachable=self._reachable,
            allowance=self.permissions.allowance,
            history=self.history(today),
            start=journey_start(today, f.days_since_visit, triggered),
            triggered=triggered is not None,
            uplift=self._uplift(today, scores),
        )

    def _uplift(self, today: int, scores: Scores) -> np.ndarray | None:
        """As production's `population._uplift`: the fitted learner's estimate, or risk until
        there is one; which of the two ranked the day is recorded (`ranking`)."""
        if self.policy.rank_by != "uplift":
            return None
        if self.uplift_model is None:
            self.ranking[today] = "risk"
            return risk_instead_of_uplift(scores.p_alive)
        self.ranking[today] = "model"
        return predict_uplift(self.uplift_model, uplift_x(scores, np.arange(self.n)))

    def refit_uplift(self, today: int) -> UpliftModel | None:
        """The operating procedure for `rank_by: uplift` (production fits only when asked,
        `POST /admin/v1/policies/{name}/uplift-model`): each morning before the job, while no
        model is fitted, and then a week after the last fit, fit production's learner on the
        touches the previous job had marked final (sent or held out; features from each
        touch's day's scores; outcome: returned in the window), in the order production
        reads them (day, user). Too few outcomes (`fit_two_model`'s minimum, 10 a side): no
        model yet, tried again the next morning. Returns the model fitted today, if any."""
        if not self.uplift_due(today):
            return None
        done = job_ms(today - 1)
        window = self.policy.attribution_window_days * MS_PER_DAY
        blocks = [b for b in self.log.days if b.user.size]
        final = [done >= b.sent_ms + window for b in blocks]
        x = [b.uplift_x[f] for b, f in zip(blocks, final, strict=True)]
        treated = [b.status[f] == SENT for b, f in zip(blocks, final, strict=True)]
        returned = [b.outcome["returned"][f] for b, f in zip(blocks, final, strict=True)]
        try:
            if not sum(int(f.sum()) for f in final):  # production's words for it (409)
                raise ValueError("no finished touches to learn uplift from")
            model = fit_two_model(
                np.concatenate(x), np.concatenate(treated), np.concatenate(returned)
            )
        except ValueError as exc:
            self.record_fit(today, None, str(exc))
            return None
        self.record_fit(today, model)
        return model

    def uplift_due(self, today: int) -> bool:
        """Whether the procedure fits the uplift learner this morning (`refit_uplift`)."""
        if self.policy.rank_by != "uplift":
            return False
        return self.uplift_fit_day is None or today - self.uplift_fit_day >= UPLIFT_REFIT_DAYS

    def record_fit(self, today: int, model: UpliftModel | None, reason: str = "") -> None:
        """A fit tried this morning: the model that ranks from now on, or why there is none."""
        if model is None:
            self.fits.append({"day": today, "fitted": False, "reason": reason})
            return
        self.uplift_model, self.uplift_fit_day = model, today
        self.fits.append(
            {"day": today, "fitted": True, "treated": model.n_treated, "holdout": model.n_control}
        )

    def job(self, today: int, scores: Scores) -> Decisions:
        """Decide this morning with production's function (a trigger policy waits for its
        events: nothing decided)."""
        if self.listens:
            return nothing_decided(self.n)
        self.refit_uplift(today)
        users = self.user_state(today, scores)
        self.last_users = users
        state = self._learn(today)
        d = core_decide(self.policy, users, state, salt=self.salt, day=today, seed=self.seed)
        self.book(today, d, scores)
        return d

    def trigger(
        self, today: int, scores: Scores, users: np.ndarray, usual_hour: np.ndarray
    ) -> Decisions:
        """Production's trigger path for the users whose event came today, each at their
        visit (`visit_ms`): `on_events` decides one request's users — here one user — with
        the day's scores, the journey starting today, seed 0 (the route passes none), and
        the touch goes out at `next_send_ms` of the request's time. Booked like the job's."""
        state_all = self.user_state(today, scores, triggered=users)
        self.last_users = state_all
        state = self._learn(today)
        d = nothing_decided(self.n)
        for u in np.asarray(users, dtype=np.int64).tolist():
            one = core_decide(
                self.policy, rows_of(state_all, np.array([u])), state, salt=self.salt, day=today
            )
            for name in DECISION_FIELDS:
                getattr(d, name)[u] = getattr(one, name)[0]
        at = visit_ms(today, usual_hour)
        when = np.zeros(self.n, dtype=np.int64)
        acting = np.flatnonzero((d.status >= SEND) & (d.status <= SKIPPED))
        for i in acting.tolist():
            when[i] = next_send_ms(int(at[i]), CHANNELS[int(d.channel[i])])
        self.book(today, d, scores, sent_ms=when)
        return d

    def book(
        self, today: int, d: Decisions, scores: Scores, sent_ms: np.ndarray | None = None
    ) -> None:
        """Keep the books of a morning's decisions: touches logged, allowances spent.
        `sent_ms`: when each user's touch goes out, if not the planned hour (a trigger's)."""
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
                sent_ms=(
                    planned_send_ms(today, d.defer_days[acting], d.send_hour[acting])
                    if sent_ms is None
                    else sent_ms[acting]
                ),
                tier=scores.tier[acting].astype(np.int64),
                term_days_silent=scores.features.term_days_since_visit[acting].astype(np.int64),
                value_fen=scores.value_fen[acting].astype(np.int64),
                message_cost_fen=np.where(status == SENT, costs[channel], 0),
                coupon_face_fen=self.face_table[arm, step],
                coupon_min_fen=self.min_table[arm, step],
                uplift_x=uplift_x(scores, acting),
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


DECISION_FIELDS = (
    "status",
    "reason",
    "arm",
    "step",
    "channel",
    "send_hour",
    "defer_days",
    "quiet_deferred",
    "cost_fen",
)


def nothing_decided(n: int) -> Decisions:
    """Decisions for `n` users of whom none is eligible (a day without a decision)."""
    return Decisions(
        status=np.full(n, NOT_ELIGIBLE, dtype=np.int8),
        reason=np.zeros(n, dtype=np.int8),
        arm=np.full(n, -1, dtype=np.int16),
        step=np.full(n, -1, dtype=np.int8),
        channel=np.full(n, -1, dtype=np.int8),
        send_hour=np.full(n, -1, dtype=np.int8),
        defer_days=np.zeros(n, dtype=np.int8),
        quiet_deferred=np.zeros(n, dtype=bool),
        cost_fen=np.zeros(n, dtype=np.int64),
    )


def rows_of(users: UserState, rows: np.ndarray) -> UserState:
    """The state of `rows` only (production's trigger population holds just the request's
    users): every per-user column sliced, allowances per template too."""
    n = len(users)
    out = {}
    for f in fields(users):
        v = getattr(users, f.name)
        if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n:
            out[f.name] = v[rows]
        elif isinstance(v, dict):
            out[f.name] = {k: np.asarray(a)[rows] for k, a in v.items()}
        else:
            out[f.name] = v
    return UserState(**out)
