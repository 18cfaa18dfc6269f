"""The Mesa model of a campus: state in numpy arrays, Mesa for time, randomness and records.

Following Mesa's example models, the model owns the population and a DataCollector records
its daily measures; unlike them, users are not stepped one by one: a day is one vectorised
update (simulator/campus.py). `Student` agents, when asked for, are thin read-only views onto
the arrays for inspection — never a Python loop in the daily step.

One time unit is a day: the morning job (scheduled at JOB_HOUR) scores every user with
production's scoring over a day-by-day fold of its sums and runs production's `decide`; the
campus day (scheduled at midday) lives everyone's visits and orders, the untreated twin's
too, and keeps the books; `step` closes the day for the DataCollector (simulator/measures.py).
What a day can do before its morning job has decided (its dice, the twin's day) runs on the
model's own worker thread meanwhile; `close` ends the thread when the caller is done stepping.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date

import mesa
import numpy as np
from mesa.time import Priority, Schedule

from backend.core.bgnbd import BgNbdParams
from backend.core.calendar import day_date, day_number
from backend.core.columns import session_ms
from backend.core.day_totals import DayTotals
from backend.core.policy import SEND, Decisions, Policy
from backend.core.policy.spec import MESSAGE_KINDS
from backend.core.score_state import ScoreState
from backend.core.scoring import Scores, refit_due
from backend.core.tiers import TierConfig
from simulator.blas_threads import one_scipy_blas_thread
from simulator.books import TrialBooks, per_user
from simulator.calendar import CampusCalendar
from simulator.campaign import Campaign
from simulator.campus import (
    PAYMENT_FAIL_SHARE,
    DayActivity,
    DayDraws,
    PersonaColumns,
    new_campus,
    organic_day,
)
from simulator.eventlog import EventLog
from simulator.measures import collector
from simulator.params import SimParams
from simulator.response import ResponseParams, respond
from simulator.results import summarise
from simulator.touch_log import JOB_HOUR, VISIT_MINUTE

DEFAULT_START = date(2026, 3, 2)


class Student(mesa.Agent):
    """A view of one user's row (for inspection and small examples)."""

    def __init__(self, model: CampusModel, row: int) -> None:
        super().__init__(model)
        self.row = row

    @property
    def persona(self) -> str:
        """The persona this student was drawn from."""
        return self.model.params.personas[self.model.state.persona[self.row]].name

    @property
    def engagement(self) -> float:
        """Today's engagement, 0..1: how likely a visit is."""
        return float(self.model.state.engagement[self.row])

    @property
    def churned(self) -> bool:
        """Left the campus for good."""
        return bool(self.model.state.churned[self.row])

    @property
    def last_visit(self) -> date | None:
        """The day of the last visit (None: never visited)."""
        day = int(self.model.state.last_visit[self.row])
        return day_date(day) if day >= 0 else None


def _coupon_terms(
    coupon_face_fen: dict[str, int | tuple[int, int]] | None,
) -> dict[str, tuple[int, int]]:
    """Each coupon's (face value, minimum spend) in fen; a bare face value has no minimum."""
    return {
        name: terms if isinstance(terms, tuple) else (int(terms), 0)
        for name, terms in (coupon_face_fen or {}).items()
    }


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
        coupon_face_fen: dict[str, int | tuple[int, int]] | None = None,
        response_params: ResponseParams | None = None,
        warmup_days: int = 0,
        salt: str = "wxsimulatedcampus",
        run_days: int | None = None,
        keep_log: bool = True,
    ) -> None:
        """`coupon_face_fen`: coupon template name -> face value, or (face value, minimum
        spend), in fen. `salt` plays the tenant's appid in the stable holdout hash. With
        `run_days` the model stops (`running` false) after that many days, and the last
        collected row carries the results (`result`), as Mesa's batch_run expects."""
        super().__init__(rng=seed)
        self.seed = seed
        self.params = params or SimParams()
        self.params.check()
        self.calendar = CampusCalendar.load(self.params.calendar)
        streams = np.random.SeedSequence(seed).spawn(5)  # the first four as before
        self.organic_rng = np.random.default_rng(streams[1])
        self.state = new_campus(self.params, users, np.random.default_rng(streams[0]))
        self.cols = PersonaColumns.of(self.params, self.state.persona, self.state.friends)
        self.day = self.start_day = day_number(start)
        self.run_days = run_days
        self.policy_from = self.start_day + warmup_days  # history builds up before any message
        self.today: DayActivity | None = None
        self._init_scoring(users, keep_log)
        self.campaign = (
            Campaign(
                policy,
                users,
                np.random.default_rng(streams[2]),
                _coupon_terms(coupon_face_fen),
                salt=salt,
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
        # Per-user books over the trial days (after warm-up), in both worlds: what the paired
        # verdict (backend/core/paired.py) is computed from, user by user.
        self.trial_books = (
            {world: TrialBooks.empty(users) for world in ("treated", "twin")}
            if policy is not None
            else None
        )
        self.response_rng = np.random.default_rng(streams[3])
        # Failed payment attempts (campus.PAYMENT_FAIL_SHARE): a stream of their own, one
        # draw per user a day, so every policy's campus fails the same attempts.
        self.payment_rng = np.random.default_rng(streams[4])
        self.payment_fail_share = PAYMENT_FAIL_SHARE
        self.payment_failed = np.zeros(users, dtype=bool)
        self.response_params = response_params or self.params.response_params()
        self._init_answers(users)
        self._draws: DayDraws | None = None  # today's organic dice (session lengths: lazily)
        self._session_s: np.ndarray | None = None
        self._ahead: tuple[int, Future] | None = None  # the day whose dice are being drawn
        # The model's own worker thread for that (`_ahead_pool`), ended by `close`.
        self._pool: tuple[int, ThreadPoolExecutor] | None = None
        self.used_coupon: np.ndarray | None = None
        self.datacollector = collector()
        if with_agents:
            for row in range(users):
                Student(self, row)
        # One time unit is a day: the job at JOB_HOUR, the campus at midday, `step` at its end.
        self.schedule_recurring(
            self.morning, Schedule(interval=1.0, start=self.time + JOB_HOUR / 24), Priority.HIGH
        )
        self.schedule_recurring(self.campus_day, Schedule(interval=1.0, start=self.time + 0.5))

    def _init_scoring(self, users: int, keep_log: bool) -> None:
        """What the morning's scoring reads: the day-by-day fold of the users' sums, the
        tier thresholds, the last BG/NBD fit; and the event log in the backend's columns, for
        inspection and tests (a year of a million users' events is large: `keep_log=False`
        scores from the fold alone)."""
        self.log = EventLog() if keep_log else None
        self.scoring = ScoreState(users)
        self.last_fit_day: int | None = None
        self.first_seen = np.full(users, self.day, dtype=np.int64)
        self.tier_config = TierConfig()
        self.bgnbd: BgNbdParams | None = None
        self.scores: Scores | None = None

    def _init_answers(self, users: int) -> None:
        """Answers to messages, waiting for the day the message lands (-1: none)."""
        self.pull_day = np.full(users, -1, dtype=np.int64)  # comes back that day
        self.boost = np.zeros(users)  # engagement regained if they do come back
        self.farmer_back = np.zeros(users, dtype=bool)  # came for a coupon; leave after it
        self.leave_day = np.full(users, -1, dtype=np.int64)  # a sleeping dog woken
        self.opt_out_day = np.full(users, -1, dtype=np.int64)
        # A return bought with a coupon: pulled by one, and the day its offer ends (engagement
        # then falls to `coupon_fade` of itself: ResponseParams).
        self.coupon_pull = np.zeros(users, dtype=bool)
        self.offer_end_day = np.full(users, -1, dtype=np.int64)

    def morning(self) -> None:
        """Scheduled at JOB_HOUR each day: the scores and the campaign job, before anyone is
        up (scores as of today from the log of the days before)."""
        day = self.day
        self._start_ahead(day)
        self.nightly(day)
        self.decisions = None
        if self.campaign is not None and day >= self.policy_from:
            self.decisions = self.run_job(day)
            self._answer(self.decisions, day)

    def campus_day(self) -> None:
        """Scheduled at midday: the whole day's campus life at once, and its books."""
        day = self.day
        factor, in_break = self.calendar.factor(day, self.params)
        if self._ahead is None or self._ahead[0] != day:
            self._start_ahead(day)
        draws, twin_today, grant_draws = self._ahead[1].result()
        self._ahead = None
        pulled = self.pull_day == day
        lift = pulled if self.campaign is not None else None  # a pull: visit probability 1
        self.today = organic_day(
            self.state, self.cols, self.params, day, factor, in_break, draws, lift
        )
        used_coupon = None
        if self.campaign is not None:
            self._after_messages(day, pulled)
            self.twin_today = twin_today
            used_coupon = self.campaign.after_day(
                day, self.today, self.twin_today, self.state.usual_hour, grant_draws
            )
            if day >= self.policy_from:
                self.trial_books["treated"].add(self.today)
                self.trial_books["twin"].add(self.twin_today)
        self._draws, self._session_s = draws, None
        self.used_coupon = used_coupon
        fail = self.payment_rng.random(len(self.state)) < self.payment_fail_share
        self.payment_failed = self.today.ordered & fail
        # Before the fold: the morning's scores are views that the day's totals move.
        self.after_day(day)
        if self.campaign is not None and self.campaign.listens and day >= self.policy_from:
            self._triggered(day, self.run_triggers(day))
        self._fold_day(day, used_coupon)
        if self.log is not None:
            self.log.add_day(
                day,
                self.today,
                self.state.usual_hour,
                self.session_s,
                used_coupon,
                self.payment_failed,
            )

    def _start_ahead(self, day: int) -> None:
        """Start the part of `day` that needs nothing decided that morning, on the worker
        thread while the job runs: the day's organic dice, then the untreated twin's day
        (it lives on those dice alone), then the dice of the day's subscribe prompts. The
        organic stream and the campaign's are drawn from there only, day after day in
        order, so the numbers are those of drawing them at midday."""
        factor, in_break = self.calendar.factor(day, self.params)
        self._ahead = (day, self._ahead_pool().submit(self._dice_and_twin, day, factor, in_break))

    def _ahead_pool(self) -> ThreadPoolExecutor:
        """The model's one worker thread for the work a day can do ahead, started when first
        needed: again after `close`, and in a forked child (it inherits the pool, not its
        thread). One thread, so the days' draws keep their order."""
        if self._pool is None or self._pool[0] != os.getpid():
            self._pool = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="campus-ahead"))
        return self._pool[1]

    def close(self) -> None:
        """The caller is done stepping (`simulate_paired`, the end-to-end run): end the
        model's worker thread, as a run of `run_days` does by itself. Stepping again starts a
        new one; a model never closed ends its thread when it is garbage-collected."""
        self._end_pool()

    def _end_pool(self) -> None:
        """Shut the worker thread down (a forked child's inherited pool has none to end)."""
        pool, self._pool = self._pool, None
        if pool is not None and pool[0] == os.getpid():
            pool[1].shutdown(wait=True)

    def _dice_and_twin(self, day: int, factor: float, in_break: bool):
        """The day's organic dice, the twin's day on them, and the day's prompt dice."""
        draws = DayDraws.draw(self.organic_rng, len(self.state))
        if self.campaign is None:
            return draws, None, None
        twin = organic_day(self.twin, self.cols, self.params, day, factor, in_break, draws)
        return draws, twin, self.campaign.draw_grants()

    @property
    def session_s(self) -> np.ndarray | None:
        """Today's session lengths in seconds, every user's (drawn for all; computed when
        first asked for: the fold needs the visitors' only)."""
        if self._session_s is None and self._draws is not None:
            self._session_s = self._draws.session_s()
        return self._session_s

    def step(self) -> None:
        """Mesa's step closes the day (one time unit = one day): the morning job and the day
        ran as scheduled events before it; the day's measures are collected."""
        self.day += 1
        if self.run_days is not None and self.day - self.start_day >= self.run_days:
            self.running = False
        self.datacollector.collect(self)
        if not self.running:
            self._end_pool()  # not `close`: a subclass's may close more than the thread

    def result(self) -> dict | None:
        """The policy's results against its holdout, with the truth (simulator/results.py)."""
        if self.campaign is None:
            return None
        arms, uplift = summarise(self.campaign, self.day - 1, self.seed, self.tier_config)
        return {"arms": arms, "uplift": uplift}

    def per_user(self) -> dict[str, np.ndarray] | None:
        """Each user's outcomes over the trial days in the treated world and in the untreated
        twin (`twin_*`), and what the treatment spent on them, as named columns (one row per
        user, the same rows in both worlds, so outcomes pair user by user):

        - `visited`: came at least once during the trial (a *returning student*);
          `visit_days`, `orders` (days with an order), `revenue_fen`;
        - `message_cost_fen`: fees of the messages sent; `coupon_cost_fen`: face value of the
          coupons redeemed; `cost_fen`: their sum, the money actually spent;
        - `committed_coupon_fen`: face value of every coupon sent (a commitment, not spend).
        """
        if self.campaign is None:
            return None
        return per_user(self.trial_books, self.campaign, len(self.state))

    def _fold_day(self, day: int, used_coupon: np.ndarray | None) -> None:
        """The day's activity into the scoring fold: each visit is an app_open and a
        session_end at the user's usual hour, each order an order_paid (eventlog.py)."""
        t = self.today
        u = np.flatnonzero(t.visited | t.ordered)
        vis, bought = t.visited[u].astype(np.int64), t.ordered[u].astype(np.int64)
        coupon = None if used_coupon is None else (used_coupon[u] & t.ordered[u]).astype(np.int64)
        self.scoring.add_day(
            DayTotals.at_hours(
                day,
                u,
                self.state.usual_hour[u],
                2 * vis + bought + self.payment_failed[u],
                session_ms=session_ms(
                    self._session_s[u] if self._session_s is not None else self._draws.session_s(u)
                )
                * vis,
                orders=bought,
                spend_fen=np.where(bought > 0, t.amount_fen[u], 0),
                coupon_orders=coupon,
            )
        )

    def run_job(self, day: int) -> Decisions:
        """The morning campaign job: production's decision over the model's books (the
        end-to-end model runs the backend's job instead)."""
        return self.campaign.job(day, self.scores)

    def after_day(self, day: int) -> None:
        """Hook for the end-to-end model: the day's activity is known (not yet folded)."""

    def run_triggers(self, day: int) -> Decisions:
        """The day's event-triggered decisions: production's trigger path (`on_events`, one
        request per user at their visit) over the model's books; the end-to-end model reads
        the backend's instead."""
        users = np.flatnonzero(self.payment_failed)
        return self.campaign.trigger(day, self.scores, users, self.state.usual_hour)

    def _triggered(self, day: int, d: Decisions) -> None:
        """Answers to the day's triggered sends: sent during the user's visit, they can bring
        the user back from the next day on (hence `day + 1`: the send's hour is not after
        the next day's visit)."""
        self.decisions = d  # a trigger policy decides nothing at the morning job
        if d.count(SEND):
            self._answer(d, day + 1)

    def _after_messages(self, day: int, pulled: np.ndarray) -> None:
        """Messages landing today played out: those who came back regain engagement; coupon
        farmers who came for the coupon go again; the annoyed opt out or leave."""
        came = self.today.visited & pulled
        # min(1, engagement + boost) for those who came (no one else's moves: all are <= 1).
        back = np.flatnonzero(came)
        engagement = self.state.engagement
        engagement[back] = np.minimum(1.0, engagement[back] + self.boost[back])
        gone = came & self.farmer_back
        gone &= self.response_rng.random(len(self.state)) < self.response_params.farmer_leave
        self.state.churned |= gone
        self.state.churned |= self.leave_day == day
        # Coupon-driven returns: the offer runs out `coupon_valid_days` after the return, and
        # what it bought fades with it.
        rp = self.response_params
        self.offer_end_day[np.flatnonzero(came & self.coupon_pull)] = day + rp.coupon_valid_days
        if self.used_coupon is not None:  # yesterday's orders paid with a recall coupon
            redeemed = np.flatnonzero(self.used_coupon & (self.offer_end_day < day))
            self.offer_end_day[redeemed] = day - 1 + rp.coupon_valid_days
        ending = np.flatnonzero(self.offer_end_day == day)
        engagement[ending] *= rp.coupon_fade
        self.campaign.permissions.opted_out[np.flatnonzero(self.opt_out_day == day)] = True

    def _answer(self, d: Decisions, day: int) -> None:
        """This morning's sends meet their users (responses drawn from their own stream) on
        the day they land: the send's day, or the next if it comes after the user's visit."""
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
        send_minute = d.send_hour[sent].astype(np.int64) * 60
        visit_minute = self.state.usual_hour[sent].astype(np.int64) * 60 + VISIT_MINUTE
        land = np.zeros(len(self.state), dtype=np.int64)
        land[sent] = day + d.defer_days[sent].astype(np.int64) + (visit_minute < send_minute)
        self.pull_day[r.back] = land[r.back]
        self.boost[r.back] = r.boost
        self.leave_day[r.leave] = land[r.leave]
        self.opt_out_day[r.opt_out] = land[r.opt_out]
        # Coupon farmers brought back by a coupon take it and go (SEED_DIGEST §2).
        came_for_coupon = (names[persona] == "coupon_farmer") & (
            kind == MESSAGE_KINDS.index("coupon")
        )
        self.farmer_back[r.back] = False
        self.farmer_back[np.intersect1d(r.back, sent[came_for_coupon])] = True
        # Anyone a coupon brings back came for the offer (its end fades them: _after_messages).
        self.coupon_pull[r.back] = False
        by_coupon = sent[kind == MESSAGE_KINDS.index("coupon")]
        self.coupon_pull[np.intersect1d(r.back, by_coupon)] = True

    def nightly(self, as_of: int) -> None:
        """Score every user as of `as_of`, before the day's activity, as the backend's
        morning job does: the nightly scoring state (core.score_state) over the day-by-day
        fold of the same sums production computes from its columns, so a million users are
        rescored nightly without re-reading 120 days, and only the rows that can move are
        worked out. BG/NBD is refitted by production's rule."""
        self.scoring.add_day(DayTotals.empty(as_of))
        refit = refit_due(self.last_fit_day, as_of)
        with one_scipy_blas_thread():  # the refit's optimiser, without waiting on threads
            self.scores = self.scoring.scores(
                self.calendar.terms,
                self.tier_config,
                first_seen=self.first_seen,
                last_seen=self.first_seen,  # the fold knows every visit; else creation day
                params=None if refit else self.bgnbd,
                fit=True,
            )  # read-only views, used before the day's activity is added
        if refit and self.scores.params is not None:
            self.bgnbd, self.last_fit_day = self.scores.params, as_of
