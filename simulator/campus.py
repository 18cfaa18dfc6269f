"""Organic life on the simulated campus: every user at once, one day at a time, in numpy.

No Python loop over users: a day is a handful of array operations over the whole population.
The day's randomness is drawn up front (`DayDraws`) so that a treated campus and its untreated
twin can live the same day with the same coin flips (common random numbers): whatever differs
between them was caused by the treatment.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from simulator.params import SimParams

NEVER = -(10**6)  # "last visit" of a user who has not visited yet

# Share of ordering visits whose first payment attempt fails (a `payment_failed` event at the
# visit; the order then goes through on a retry, so the paid-order rates calibration fits are
# unchanged). SEED_DIGEST names the trigger (§3) but no rate; card-payment declines run at
# 15-20% of attempts, but a campus mini-program pays by WeChat Pay from a wallet or bound
# card, and merchants surveyed by Acuity mostly report failure rates of 5% or less: 5% is the
# cautious top of that range. Drawn from a stream of its own (`CampusModel.payment_rng`).
PAYMENT_FAIL_SHARE = 0.05


@dataclass
class CampusState:
    """One row per user."""

    persona: np.ndarray  # int8 index into params.personas
    engagement: np.ndarray  # 0..1: how much of their persona's visit rate they still have
    churned: np.ndarray  # bool: gone; returns only rarely by themselves
    last_visit: np.ndarray  # day number, NEVER if none
    visits: np.ndarray  # visit days so far
    orders: np.ndarray
    spend_fen: np.ndarray
    usual_hour: np.ndarray  # China hour they usually open the mini-program
    friends: np.ndarray  # (users × friends_per_user) row numbers of each user's friends

    def copy(self) -> CampusState:
        return replace(self, **{f.name: getattr(self, f.name).copy() for f in fields(self)})

    def __len__(self) -> int:
        return int(self.persona.size)


@dataclass(frozen=True)
class PersonaColumns:
    """Each persona parameter spread to one value per user (gathered once, used daily)."""

    visit_p: np.ndarray
    decay: np.ndarray  # daily engagement multiplier, 2^(−1/half-life)
    order_p: np.ndarray
    log_aov: np.ndarray
    aov_sigma: np.ndarray
    boost: np.ndarray
    churn_base: np.ndarray
    churn_slope: np.ndarray
    revive_p: np.ndarray
    follows: np.ndarray  # how much friends move each user (0 for most)
    social_rows: np.ndarray  # the users friends move at all
    # (friends_per_user × social rows): their friends, one row per friend slot (friends never
    # change: gathered once; None: gathered from the state daily).
    social_friends: np.ndarray | None = None

    @classmethod
    def of(
        cls, params: SimParams, persona: np.ndarray, friends: np.ndarray | None = None
    ) -> PersonaColumns:
        """The columns of the population `persona`; with its `friends` (CampusState's), the
        social users' friends gathered once for `friend_effects`."""

        def col(values) -> np.ndarray:
            return np.asarray(values, dtype=np.float64)[persona]

        ps = params.personas
        return cls(
            visit_p=col([p.visit_p for p in ps]),
            decay=col([2.0 ** (-1.0 / p.half_life_days) for p in ps]),
            order_p=col([p.order_p for p in ps]),
            log_aov=col([np.log(p.aov_fen) for p in ps]),
            aov_sigma=col([p.aov_sigma for p in ps]),
            boost=col([p.boost for p in ps]),
            churn_base=col([p.churn_base for p in ps]),
            churn_slope=col([p.churn_slope for p in ps]),
            revive_p=col([p.revive_p for p in ps]),
            follows=(follows := col([p.follows_friends for p in ps])),
            social_rows=(social := np.flatnonzero(follows > 0)),
            social_friends=None if friends is None else np.ascontiguousarray(friends[social].T),
        )


@dataclass(frozen=True)
class DayDraws:
    """One day's organic randomness for every user."""

    visit: np.ndarray
    order: np.ndarray
    amount: np.ndarray  # standard normal, for the lognormal order value
    churn: np.ndarray
    session: np.ndarray  # standard normal, for the lognormal session length

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int) -> DayDraws:
        return cls(
            rng.random(n),
            rng.random(n),
            rng.standard_normal(n),
            rng.random(n),
            rng.standard_normal(n),
        )

    def session_s(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Session lengths in seconds: lognormal around five minutes (of `rows` only)."""
        z = self.session if rows is None else self.session[rows]
        return np.exp(np.log(300.0) + 0.6 * z)


@dataclass(frozen=True)
class DayActivity:
    visited: np.ndarray
    ordered: np.ndarray
    amount_fen: np.ndarray  # 0 where no order
    revived: np.ndarray  # came back by themselves after churning
    left: np.ndarray  # churned today


def new_campus(params: SimParams, n: int, rng: np.random.Generator) -> CampusState:
    """A population in the persona mix, at varied engagement, all still around."""
    params.check()
    shares = np.array([p.share for p in params.personas])
    persona = rng.choice(len(shares), size=n, p=shares / shares.sum()).astype(np.int8)
    lo, hi = params.start_engagement
    hours = np.array([8, 11, 12, 12, 17, 18, 18, 21, 22, 23])  # meal times and late snacks
    engagement = rng.uniform(lo, hi, n)
    usual_hour = rng.choice(hours, size=n).astype(np.int8)
    k = params.friends_per_user if n > 1 else 0
    # Friends anywhere on campus but never oneself: an offset of 1..n−1 from one's own row.
    friends = (np.arange(n)[:, None] + rng.integers(1, max(n, 2), size=(n, k))) % max(n, 1)
    return CampusState(
        persona=persona,
        engagement=engagement,
        churned=np.zeros(n, dtype=bool),
        last_visit=np.full(n, NEVER, dtype=np.int64),
        visits=np.zeros(n, dtype=np.int32),
        orders=np.zeros(n, dtype=np.int32),
        spend_fen=np.zeros(n, dtype=np.int64),
        usual_hour=usual_hour,
        friends=friends.astype(np.int32),
    )


def friend_effects(
    state: CampusState, cols: PersonaColumns, params: SimParams, day: int
) -> tuple[np.ndarray, np.ndarray]:
    """For the users who follow their friends (`cols.social_rows`): the factor on today's
    visit probability (friends who were around yesterday draw them in) and the added hazard
    of leaving (more than the threshold share of their friends gone). Read before the day
    changes anything, so the order users are visited in does not matter."""
    rows = cols.social_rows
    k = state.friends.shape[1]
    if rows.size == 0 or k == 0:
        return np.ones(0), np.zeros(0)
    # One row per friend slot, so the shares are k − 1 additions of whole rows (a mean over
    # a short axis 1 is slow); sums of 0s and 1s are exact, so the shares are the means.
    friends = cols.social_friends if cols.social_friends is not None else state.friends[rows].T
    out_yesterday = np.equal(state.last_visit.take(friends), day - 1)
    out_yesterday = out_yesterday.sum(axis=0, dtype=np.float64) / k
    gone = state.churned.take(friends).sum(axis=0, dtype=np.float64) / k
    follows = cols.follows[rows]
    pull = 1.0 + follows * params.friend_pull * out_yesterday
    hazard = follows * params.friend_leave_hazard * (gone > params.friend_leave_threshold)
    return pull, hazard


def organic_day(
    state: CampusState,
    cols: PersonaColumns,
    params: SimParams,
    day: int,
    factor: float,
    in_break: bool,
    draws: DayDraws,
    visit_lift: np.ndarray | None = None,
) -> DayActivity:
    """Live one day: visits, orders, engagement and departures. Mutates `state`.

    `factor` scales visiting for the calendar (weekends, exams, breaks). `visit_lift` is an
    extra visit probability per user (a message's pull, added by the treatment); the untreated
    twin passes None. During breaks nobody leaves: silence over a vacation is not churn.
    """
    churned = state.churned
    social = cols.social_rows
    pull, friend_hazard = friend_effects(state, cols, params, day)
    # p = visit_p · engagement · factor, or revive_p · factor for the churned: one of the two
    # over everyone, then the other over the fewer rows it is for (row lists, not masks:
    # masked writes are slow in numpy).
    if 2 * np.count_nonzero(churned) <= churned.size:
        p = cols.visit_p * state.engagement
        p *= factor
        gone = np.flatnonzero(churned)
        p[gone] = cols.revive_p[gone] * factor
    else:
        p = cols.revive_p * factor
        alive = np.flatnonzero(~churned)
        p[alive] = cols.visit_p[alive] * state.engagement[alive] * factor
    if social.size:
        p[social] = np.minimum(p[social] * pull, 1.0)
    if visit_lift is not None:
        # p + (1 − p)·lift, on the rows with a lift (elsewhere it adds 0 and changes nothing).
        lifted = np.flatnonzero(visit_lift)
        pl = p[lifted]
        p[lifted] = pl + (1.0 - pl) * visit_lift[lifted]
    visited = np.less(draws.visit, p)
    revived = visited & churned
    churned &= ~revived
    state.engagement[np.flatnonzero(revived)] = params.revive_engagement
    ordered = np.less(draws.order, cols.order_p)
    ordered &= visited
    # Order values only for the orders: exp(log AOV + σ·z), rounded, in whole fen.
    buyers = np.flatnonzero(ordered)
    amount = np.zeros(len(state), dtype=np.int64)
    amount[buyers] = (
        np.exp(cols.log_aov[buyers] + cols.aov_sigma[buyers] * draws.amount[buyers])
        .round()
        .astype(np.int64)
    )
    state.last_visit[np.flatnonzero(visited)] = day
    state.visits += visited
    state.orders += ordered
    state.spend_fen[buyers] += amount[buyers]
    # Engagement fades by the persona's half-life; a good experience (an order) restores some.
    engagement = state.engagement
    engagement *= cols.decay
    engagement[buyers] += cols.boost[buyers]
    np.minimum(engagement, 1.0, out=engagement)
    left = np.zeros(len(state), dtype=bool)
    if not in_break:
        # Who may leave today: those still around who did not come. Most of a mature campus
        # is gone already, so the hazard, churn_base + churn_slope · (1 − engagement)², is
        # worked out on their rows only.
        stay = np.flatnonzero(~(churned | visited))
        hazard = np.subtract(1.0, engagement[stay])
        np.square(hazard, out=hazard)
        hazard *= cols.churn_slope[stay]
        hazard += cols.churn_base[stay]
        if social.size:  # friends leaving: the social follow them out
            extra = np.zeros(len(state))
            extra[social] = friend_hazard
            hazard += extra[stay]
        left[stay] = draws.churn[stay] < hazard
        churned |= left
    return DayActivity(visited, ordered, amount, revived, left)
