"""Calibration's organic fit: the simulator's parameters fitted to a log's columns.

What a log shows and what it hides. A log records visit days, orders and their amounts; the
personas behind them are latent, and two users with the same visits may be a regular who
drifted or a price-sensitive user on their usual rhythm. So the persona *structure* is kept —
the shares and the ratios between personas of each parameter (regulars visit more, price-
sensitive users fade faster, ...) — and each organic parameter is fitted as one factor that
scales every persona jointly, by the method of simulated moments: statistics of the tenant's
log are matched by the same statistics of a simulated campus living the same calendar days,
whose parameters are adjusted until they agree. Both sides go through one function
(`moments`), so any selection in a statistic (e.g. "after a user's first visit") is made the
same way on both and cancels.

Fitted, each from:
- `visit_p` (one factor): visit-days per user-day in each user's first 14 days after their
  first visit;
- `half_life_days` (one factor): how that rate falls — the rate from day 15 on over it;
- `order_p` (one factor): paid orders per visit-day;
- `aov_fen` (one factor): the mean log amount of the orders, against the persona mix of the
  orders in the fitted simulation (for one lognormal this is the exact MLE of the median);
- `aov_sigma` (one factor): the pooled within-user variance of log amounts (a user has one
  persona, so this is σ² without the spread between personas' medians);
- `weekend_factor`: weekend over weekday visitors per day in term time; `exam_factor`: exam
  weekdays over other term weekdays, when the log has exam weekdays; `break_factor`: break
  days over term weekdays, when the log has a week of break;
- beside this module, response rates (simulator/calibrate_response.py): the treated-minus-
  holdout return rate of each message kind × tier at first decision, against the same policy
  run on the fitted campus and paired with its untreated twin, when the tenant has attributed
  touches with a holdout.

Kept at their defaults, and why: persona shares (six overlapping personas are not separable
from visit rates alone: they differ most in how they answer messages, which an organic log
does not show); `start_engagement` (only visit_p × engagement is seen); `boost` (engagement
regained by an order is confounded with order_p and the half-life); churn hazards
(`churn_base`, `churn_slope`) and `revive_p` (a few months of log cannot tell a churned user
from one whose engagement decayed: both are silent; the decline is attributed to the
half-life, the hazard keeps its default share of it). The model has no arrivals: the
simulated population is present from the log's first day, and a user first seen late in the
log is read as a quiet one, not a newcomer.

Everything here is over whole columns (no Python loop over users); the simulated campus
steps one day at a time as the simulator does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from backend.core.calendar import day_date, is_weekend
from backend.core.columns import EventColumns, OrderColumns, active_days
from simulator.calendar import CampusCalendar
from simulator.campus import DayDraws, PersonaColumns, new_campus, organic_day
from simulator.params import SimParams

MIN_DAYS = 28  # a month: two cycles of the early window, four weekends
MIN_USERS = 100
MIN_ORDERS_FOR_VALUES = 30
MIN_REPEAT_BUYERS = 20  # users with two or more orders, for the within-user spread
EARLY_DAYS = 14
MAX_ITERATIONS = 40
TOLERANCE = 0.005  # |log(simulated / observed)| of every moment (0.5%)
FIT_SEED = 0


class NotEnoughHistory(ValueError):
    """The log is too short or too small to fit from."""


@dataclass(frozen=True)
class Log:
    """An organic history as columns: distinct visit days and paid orders, inside a window."""

    first_day: int
    last_day: int
    n_users: int
    visit_user: np.ndarray  # distinct (user, day) pairs, sorted by user then day
    visit_day: np.ndarray
    order_user: np.ndarray
    order_day: np.ndarray
    amount_fen: np.ndarray

    @classmethod
    def of(
        cls,
        events: EventColumns,
        orders: OrderColumns,
        n_users: int,
        first_day: int,
        last_day: int,
    ) -> Log:
        """A visit is a day with any event, as the scoring layer counts it."""
        keep = (events.day >= first_day) & (events.day <= last_day)
        vu, vd = active_days(
            EventColumns(*(getattr(events, f)[keep] for f in EventColumns.__dataclass_fields__))
        )
        ok = (orders.day >= first_day) & (orders.day <= last_day)
        return cls(
            first_day,
            last_day,
            n_users,
            vu.astype(np.int64),
            vd.astype(np.int64),
            orders.user[ok].astype(np.int64),
            orders.day[ok].astype(np.int64),
            orders.amount_fen[ok].astype(np.int64),
        )

    @property
    def days(self) -> int:
        """Days in the window."""
        return self.last_day - self.first_day + 1

    def visitors(self) -> int:
        """Users with at least one visit in the window."""
        return int(np.unique(self.visit_user).size)


@dataclass(frozen=True)
class Moments:
    """The statistics matched between the tenant's log and the simulated campus."""

    early_rate: float  # visit-days per user-day, days 1..14 after each user's first visit
    late_ratio: float  # the rate from day 15 on, over early_rate (nan if the log is short)
    order_share: float  # paid orders per visit-day
    weekend_ratio: float  # visitors per weekend day over per weekday, term time
    exam_ratio: float  # exam weekdays over other term weekdays (nan without exam days)
    break_ratio: float  # break days over term weekdays (nan without a week of break)


def _day_kinds(cal: CampusCalendar, first_day: int, last_day: int):
    days = np.arange(first_day, last_day + 1)
    brk = cal.terms.is_break(days)
    exam = np.zeros(days.size, dtype=bool)
    for a, b in cal.exams:
        exam |= (days >= a) & (days <= b)
    weekend = is_weekend(days)
    return brk, exam, weekend


def moments(log: Log, cal: CampusCalendar) -> Moments:
    """The statistics the fit matches, computed the same way for the tenant's log and the
    simulated one, so any selection they make cancels between the two sides.

    Parameters
    ----------
    log : visit days (user, day) and orders, inside the log's window.
    cal : the calendar the days are read against (breaks, exams, weekends).
    """
    vu, vd = log.visit_user, log.visit_day
    seen, first_at = np.unique(vu, return_index=True)
    first = np.zeros(log.n_users, dtype=np.int64)
    first[seen] = vd[first_at]
    age = vd - first[vu]
    span = log.last_day - first[seen]  # days observed after each user's first visit
    early = np.sum((age >= 1) & (age <= EARLY_DAYS)) / max(np.clip(span, 0, EARLY_DAYS).sum(), 1)
    late_risk = np.clip(span - EARLY_DAYS, 0, None).sum()
    late = np.sum(age > EARLY_DAYS) / late_risk if late_risk else np.nan

    per_day = np.bincount(vd - log.first_day, minlength=log.days)[: log.days].astype(float)
    brk, exam, weekend = _day_kinds(cal, log.first_day, log.last_day)
    term_weekday = ~brk & ~exam & ~weekend
    base = per_day[term_weekday].mean() if term_weekday.any() else np.nan

    def ratio(mask: np.ndarray, least: int) -> float:
        if mask.sum() < least or not base:
            return np.nan
        return float(per_day[mask].mean() / base)

    return Moments(
        early_rate=float(early),
        late_ratio=float(late / early) if early else np.nan,
        order_share=log.order_user.size / max(vd.size, 1),
        weekend_ratio=ratio(~brk & ~exam & weekend, 2),
        exam_ratio=ratio(~brk & exam & ~weekend, 3),
        break_ratio=ratio(brk, 7),
    )


@dataclass(frozen=True)
class Simulated:
    """A simulated log and the persona behind each of its users (which the fit of order
    values needs: personas are latent in a real log)."""

    log: Log
    persona: np.ndarray  # each simulated user's persona index


def simulate_log(params: SimParams, n: int, first_day: int, last_day: int, seed: int) -> Simulated:
    """A campus of `n` users living the days of the window, organic only, as columns.

    The same seed gives the same coin flips whatever the parameters (common random
    numbers), so the fit's moments move smoothly with the parameters.
    """
    pop, days = np.random.SeedSequence(seed).spawn(2)
    state = new_campus(params, n, np.random.default_rng(pop))
    cols = PersonaColumns.of(params, state.persona)
    cal = CampusCalendar.load(params.calendar)
    rng = np.random.default_rng(days)
    vu, vd, ou, od, oa = [], [], [], [], []
    for day in range(first_day, last_day + 1):
        factor, in_break = cal.factor(day, params)
        act = organic_day(state, cols, params, day, factor, in_break, DayDraws.draw(rng, n))
        v = np.flatnonzero(act.visited)
        o = np.flatnonzero(act.ordered)
        vu.append(v)
        vd.append(np.full(v.size, day))
        ou.append(o)
        od.append(np.full(o.size, day))
        oa.append(act.amount_fen[o])
    vu, vd = np.concatenate(vu), np.concatenate(vd)
    order = np.lexsort((vd, vu))
    log = Log(
        first_day,
        last_day,
        n,
        vu[order].astype(np.int64),
        vd[order].astype(np.int64),
        np.concatenate(ou).astype(np.int64),
        np.concatenate(od).astype(np.int64),
        np.concatenate(oa).astype(np.int64),
    )
    return Simulated(log, state.persona)


@dataclass(frozen=True)
class Factors:
    """Joint multipliers of the personas' defaults, and the calendar factors."""

    visit: float = 1.0
    half_life: float = 1.0
    order: float = 1.0
    aov: float = 1.0
    sigma: float = 1.0
    weekend: float | None = None  # None: keep the base parameters' value
    exam: float | None = None
    brk: float | None = None

    def apply(self, base: SimParams) -> SimParams:
        """`base` with every persona's parameters scaled by the factors (rates capped at 1)."""
        personas = tuple(
            replace(
                p,
                visit_p=float(min(1.0, p.visit_p * self.visit)),
                half_life_days=float(p.half_life_days * self.half_life),
                order_p=float(min(1.0, p.order_p * self.order)),
                aov_fen=max(1, int(round(p.aov_fen * self.aov))),
                aov_sigma=float(p.aov_sigma * self.sigma),
            )
            for p in base.personas
        )
        return replace(
            base,
            personas=personas,
            weekend_factor=base.weekend_factor if self.weekend is None else float(self.weekend),
            exam_factor=base.exam_factor if self.exam is None else float(self.exam),
            break_factor=base.break_factor if self.brk is None else float(self.brk),
        )


def _log_gap(observed: float, simulated: float) -> float:
    if not (np.isfinite(observed) and np.isfinite(simulated)) or observed <= 0 or simulated <= 0:
        return 0.0
    return float(np.log(observed / simulated))


def fit_organic(
    log: Log,
    base: SimParams | None = None,
    seed: int = FIT_SEED,
    n_sim: int | None = None,
) -> tuple[SimParams, dict]:
    """Fit visit rates, decay, order share, order values and calendar factors to `log`.

    Returns the parameters and a report (observed and simulated moments, factors,
    iterations). Raises NotEnoughHistory when the log cannot support a fit.
    """
    base = base or SimParams()
    check_history(log)
    cal = CampusCalendar.load(base.calendar)
    target = moments(log, cal)
    n_sim = n_sim or int(np.clip(4 * log.visitors(), 8000, 40000))
    f = Factors(
        weekend=base.weekend_factor,
        exam=base.exam_factor if np.isfinite(target.exam_ratio) else None,
        brk=base.break_factor if np.isfinite(target.break_ratio) else None,
    )
    slope, last = 0.3, None  # d log(late ratio) / d log(half-life): a first guess, then secant
    rounds, damping, worst_before = 0, 1.0, np.inf
    while True:
        rounds += 1
        sim = simulate_log(f.apply(base), n_sim, log.first_day, log.last_day, seed)
        got = moments(sim.log, cal)
        gaps = {
            "early_rate": _log_gap(target.early_rate, got.early_rate),
            "late_ratio": _log_gap(target.late_ratio, got.late_ratio),
            "order_share": _log_gap(target.order_share, got.order_share),
            "weekend_ratio": _log_gap(target.weekend_ratio, got.weekend_ratio),
            "exam_ratio": _log_gap(target.exam_ratio, got.exam_ratio),
            "break_ratio": _log_gap(target.break_ratio, got.break_ratio),
        }
        converged = max(abs(g) for g in gaps.values()) < TOLERANCE
        if converged or rounds == MAX_ITERATIONS:
            break
        # The moments move together (a shorter half-life also means more churn): when a
        # round fails to shrink the worst gap, take smaller steps instead of oscillating.
        worst = max(abs(g) for g in gaps.values())
        if worst >= worst_before:
            damping = max(damping * 0.5, 0.05)
        worst_before = worst
        gaps = {k: v * damping for k, v in gaps.items()}
        h = np.log(f.half_life)
        if last is not None and abs(h - last[0]) > 1e-6:
            measured = (np.log(got.late_ratio) - last[1]) / (h - last[0])
            if np.isfinite(measured):
                slope = float(np.clip(measured, 0.05, 2.0))
        last = (h, np.log(got.late_ratio)) if np.isfinite(got.late_ratio) else None
        step = float(np.clip(gaps["late_ratio"] / slope, -1.0, 1.0))
        order = 0.0 if target.order_share == 0 else f.order * np.exp(gaps["order_share"])
        f = replace(
            f,
            visit=f.visit * np.exp(gaps["early_rate"]),
            half_life=float(np.clip(f.half_life * np.exp(step), 0.02, 50.0)),
            order=order,
            weekend=f.weekend * np.exp(gaps["weekend_ratio"]),
            exam=None if f.exam is None else f.exam * np.exp(gaps["exam_ratio"]),
            brk=None if f.brk is None else min(1.0, f.brk * np.exp(gaps["break_ratio"])),
        )
    f, value_notes = _fit_values(log, sim, base, f)
    params = f.apply(base)
    params.check()
    report = {
        "observed": _clean(asdict(target)),
        "simulated": _clean(asdict(got)),
        "iterations": rounds,
        "converged": bool(converged),
        "factors": _clean(asdict(f)),
        "simulated_users": n_sim,
        **value_notes,
    }
    return params, report


def _fit_values(log: Log, sim: Simulated, base: SimParams, f: Factors) -> tuple[Factors, dict]:
    """Order values: the median scale from the mean log amount, sigma from the within-user
    spread; each persona's share of orders (and of repeat orders) comes from the fitted
    simulation, since personas are not seen in the log."""
    x = np.log(np.maximum(log.amount_fen, 1).astype(float))
    notes: dict = {"orders": int(x.size)}
    if x.size < MIN_ORDERS_FOR_VALUES:
        notes["order_values"] = (
            f"kept at defaults: {x.size} orders (fitting needs {MIN_ORDERS_FOR_VALUES})"
        )
        return f, notes
    k = len(base.personas)
    log_aov = np.log([p.aov_fen for p in base.personas])
    sigma = np.array([p.aov_sigma for p in base.personas])
    by_persona = np.bincount(sim.persona[sim.log.order_user], minlength=k)[:k].astype(float)
    w = by_persona / max(by_persona.sum(), 1)
    notes["log_amount_mean"] = float(x.mean())
    notes["log_amount_sd"] = float(x.std())  # a single lognormal's MLE, for the record
    aov = float(np.exp(x.mean() - w @ log_aov))

    per_user = np.bincount(log.order_user, minlength=log.n_users)
    sums = np.bincount(log.order_user, weights=x, minlength=log.n_users)
    mean = sums / np.maximum(per_user, 1)
    within = np.sum((x - mean[log.order_user]) ** 2)
    dof = np.sum(np.maximum(per_user - 1, 0))
    repeat = int(np.sum(per_user >= 2))
    notes["repeat_buyers"] = repeat
    if repeat < MIN_REPEAT_BUYERS:
        notes["aov_sigma"] = f"kept at defaults: {repeat} repeat buyers (need {MIN_REPEAT_BUYERS})"
        return replace(f, aov=aov), notes
    sim_counts = np.bincount(sim.log.order_user, minlength=sim.log.n_users)
    repeats = np.bincount(sim.persona, weights=np.maximum(sim_counts - 1, 0), minlength=k)[:k]
    w2 = repeats / max(repeats.sum(), 1)
    notes["within_user_log_sd"] = float(np.sqrt(within / dof))
    scale = float(np.sqrt((within / dof) / (w2 @ sigma**2)))
    return replace(f, aov=aov, sigma=scale), notes


def _clean(d: dict) -> dict:
    """JSON-safe: nan becomes None, numpy floats plain floats."""
    out = {}
    for key, v in d.items():
        if isinstance(v, float | np.floating):
            out[key] = None if not np.isfinite(v) else round(float(v), 6)
        else:
            out[key] = v
    return out


def check_history(log: Log) -> None:
    """Raise NotEnoughHistory when the log is too short or too small to fit from, with the
    figures, so the merchant learns what is missing rather than getting a poor fit."""
    if log.visit_day.size == 0:
        raise NotEnoughHistory("no events in the log: nothing to calibrate from")
    span = int(log.visit_day.max() - log.visit_day.min()) + 1
    if span < MIN_DAYS:
        raise NotEnoughHistory(
            f"only {span} days of event history "
            f"({day_date(log.visit_day.min())} to {day_date(log.visit_day.max())}); "
            f"calibration needs at least {MIN_DAYS}"
        )
    users = log.visitors()
    if users < MIN_USERS:
        raise NotEnoughHistory(
            f"only {users} users visited in the log; calibration needs at least {MIN_USERS}"
        )
