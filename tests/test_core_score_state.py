"""The nightly scoring state (backend/core/score_state.py) against its oracle, `score_users`.

Random campus histories, one per seed: students arriving through the term (new students:
the state grows), a few erased (they and their events leave the columns: the state drops
them and renumbers), some returning after months of silence, breaks in the calendar
(vacations), weekly BG/NBD refits by production's rule (and nights without a model), and
tier thresholds drawn per seed. Day after day, every column of every field — features,
activity, RFM, P(alive), value, tiers, the fit — must equal what `score_users` computes from
that day's columns as production loads them: exactly, NaN equal to NaN, dtypes included.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backend.core import score_state
from backend.core.calendar import TermCalendar
from backend.core.columns import KIND_CODES, EventColumns, OrderColumns
from backend.core.day_totals import DayTotals
from backend.core.features import LOOKBACK_DAYS
from backend.core.score_state import ON_READ, ScoreState
from backend.core.scoring import refit_due, score_users
from backend.core.tiers import TierConfig

START = 20_400
DAYS = 150
N = 700


def _take(cols, keep):
    return type(cols)(*(getattr(cols, f.name)[keep] for f in dataclasses.fields(cols)))


def history(seed: int):
    """(events, orders, arrive, erase, calendar, config) of a random campus: user ids in
    order of arrival, erase day per user (beyond the history: never)."""
    rng = np.random.default_rng(seed)
    arrive = np.sort(START + np.where(rng.random(N) < 0.6, 0, rng.integers(0, DAYS, N)))
    erase = np.full(N, START + 10 * DAYS)
    gone = rng.choice(N, 12, replace=False)
    erase[gone] = np.maximum(arrive[gone], START + rng.integers(5, DAYS, gone.size))
    rate = rng.gamma(0.5, 0.6, N)
    rate[rng.random(N) < 0.15] = 0.0
    span = START + DAYS - arrive
    visits = rng.poisson(rate * span)
    user = np.repeat(np.arange(N), visits)
    day = arrive[user] + (rng.random(user.size) * span[user]).astype(np.int64)
    # Students who return after months: silent for a long stretch, then back.
    back = rng.choice(N, 60, replace=False)
    away = np.isin(user, back) & (day > START + 20) & (day < START + 110)
    user, day = user[~away], day[~away]
    keep = day < erase[user]
    user, day = user[keep], day[keep]
    per = rng.integers(1, 4, user.size)
    e_user, e_day = np.repeat(user, per), np.repeat(day, per)
    kind = rng.choice(9, e_user.size, p=[0.05, 0.35, 0.25, 0.05, 0.08, 0.04, 0.06, 0.08, 0.04])
    events = EventColumns(
        user=e_user.astype(np.int64),
        day=e_day.astype(np.int64),
        hour=rng.integers(0, 24, e_user.size),
        kind=kind.astype(np.int8),
        duration_s=np.where(kind == KIND_CODES["session_end"], rng.random(e_user.size) * 900, 0.0),
    )
    buys = rng.random(user.size) < rng.uniform(0.1, 0.4)
    o_user = np.concatenate([user[buys], user[buys][::4]])
    o_day = np.concatenate([day[buys], day[buys][::4]])
    orders = OrderColumns(
        user=o_user.astype(np.int64),
        day=o_day.astype(np.int64),
        amount_fen=rng.integers(100, 30_000, o_user.size),
        used_coupon=rng.random(o_user.size) < 0.3,
    )
    b1 = START + int(rng.integers(30, 60))
    calendar = TermCalendar(((b1, b1 + int(rng.integers(5, 40))), (START + 120, START + 127)))
    config = TierConfig(
        risk_silent_days=int(rng.integers(3, 10)),
        churned_silent_days=int(rng.integers(12, 35)),
        risk_score_threshold=float(rng.choice([0.0, 0.5, 0.78, 0.95])),
        new_days=int(rng.integers(3, 10)),
        low_frequency_visit_days=int(rng.integers(2, 6)),
        worth_ltv_fen=int(rng.choice([2_000, 10_000])),
    )
    return events, orders, arrive, erase, calendar, config


def columns_on(events, orders, arrive, erase, as_of: int):
    """What production loads on `as_of` for the users registered and not erased, numbered in
    id order: events of the look-back, orders all time, first and last seen all time."""
    live = np.flatnonzero((arrive <= as_of) & (erase > as_of))
    number = np.full(N, -1)
    number[live] = np.arange(live.size)
    ev = _take(events, (events.day <= as_of) & (number[events.user] >= 0))
    od = _take(orders, (orders.day <= as_of) & (number[orders.user] >= 0))
    ev = dataclasses.replace(ev, user=number[ev.user])
    od = dataclasses.replace(od, user=number[od.user])
    first_seen = arrive[live].copy()
    last_seen = np.full(live.size, -(10**6), dtype=np.int64)
    np.maximum.at(last_seen, ev.user, ev.day)
    last_seen = np.where(last_seen < 0, arrive[live], last_seen)
    recent = _take(ev, ev.day >= as_of - LOOKBACK_DAYS)
    return live, recent, ev, od, first_seen, last_seen


def differences(oracle, state_scores) -> list[str]:
    """Fields that are not bit-identical (dtype, shape and every value; NaN equals NaN)."""
    bad = []
    pairs = [("", oracle, state_scores)]
    pairs += [("features.", oracle.features, state_scores.features)]
    pairs += [("activity.", oracle.activity, state_scores.activity)]
    for prefix, a_obj, b_obj in pairs:
        for f in dataclasses.fields(a_obj):
            a, b = getattr(a_obj, f.name), getattr(b_obj, f.name)
            if not isinstance(a, np.ndarray):
                continue
            same = a.dtype == b.dtype and a.shape == b.shape
            same = same and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
            if not same:
                bad.append(prefix + f.name)
    if oracle.params != state_scores.params:
        bad.append("params")
    return bad


def run(seed: int, check_rows: bool = True) -> dict:
    """Advance a state over the seed's history, comparing it with score_users every day."""
    events, orders, arrive, erase, calendar, config = history(seed)
    rng = np.random.default_rng(seed + 1000)
    state = ScoreState(0)
    live_before = np.zeros(0, dtype=np.int64)
    last_fit, params = None, None
    seen = {"compared": 0, "refits": 0, "erased": 0, "added": 0, "warnings": 0, "alive": 0}
    for day in range(START, START + DAYS):
        live, recent, ev, od, first_seen, last_seen = columns_on(events, orders, arrive, erase, day)
        keep = np.isin(live_before, live)
        added = live.size - int(keep.sum())
        state.resize(keep, added)
        seen["erased"] += int((~keep).sum())
        seen["added"] += added
        live_before = live
        state.add_day(DayTotals.from_columns(day, ev, od))
        refit = refit_due(last_fit, day)
        fit = day % 17 != 5  # now and then a night without a model at all
        kwargs = {
            "first_seen": first_seen,
            "last_seen": last_seen,
            "params": None if refit else params,
            "fit": fit,
        }
        oracle = score_users(recent, od, live.size, day, calendar, config, **kwargs)
        ours = state.scores(calendar, config, **kwargs)
        if check_rows and live.size:
            pick = rng.choice(live.size, min(live.size, 40), replace=False)
            for name in ("p_alive", "expected_orders", "value_fen", "worth_recalling", "r"):
                got, want = ours.rows(name, pick), getattr(oracle, name)[pick]
                assert np.array_equal(got, want, equal_nan=want.dtype.kind == "f"), (day, name)
        assert differences(oracle, ours) == [], day
        if refit and fit and oracle.params is not None:
            params, last_fit = oracle.params, day
            seen["refits"] += 1
        seen["compared"] += 1
        seen["warnings"] += int(oracle.activity.warning.sum())
        seen["alive"] += int(np.count_nonzero(oracle.p_alive < 1))
    return seen


@pytest.mark.parametrize("seed", range(8))
def test_state_equals_score_users_day_after_day(seed):
    seen = run(seed, check_rows=seed < 4)
    # The histories exercise what they should: refits, erasures, new students, warnings,
    # repeat buyers with P(alive) below 1.
    assert seen["compared"] == DAYS
    assert seen["refits"] >= 3 and seen["erased"] > 0 and seen["added"] > 0
    assert seen["warnings"] > 0 and seen["alive"] > 0


def test_the_comparison_can_fail(monkeypatch):
    """A state that churns the silent for another reason, or reads P(alive) on the wrong
    rows, is caught (seed 0 has repeat buyers near the risk threshold)."""
    monkeypatch.setattr(score_state, "SILENT_LONG", 3)
    with pytest.raises(AssertionError):
        run(0, check_rows=False)
    monkeypatch.undo()
    real = score_state.bgnbd.p_alive_rows

    def reversed_rows(params, x, t_x, big_t, rows):
        return real(params, x, t_x, big_t, rows[::-1])

    monkeypatch.setattr(score_state.bgnbd, "p_alive_rows", reversed_rows)
    with pytest.raises(AssertionError):
        run(0, check_rows=False)


def test_lazy_columns_are_worked_out_once_and_kept():
    events, orders, arrive, erase, calendar, config = history(3)
    state = ScoreState.from_columns(
        *columns_on(events, orders, arrive, erase, START + 60)[2:4],
        n_users=int(((arrive <= START + 60) & (erase > START + 60)).sum()),
        as_of=START + 60,
    )
    scores = state.scores(calendar, config)
    assert not set(ON_READ) & set(scores.__dict__)
    first = scores.value_fen
    assert scores.value_fen is first and "expected_orders" in scores.__dict__
    with pytest.raises(AttributeError):
        scores.no_such_column  # noqa: B018
