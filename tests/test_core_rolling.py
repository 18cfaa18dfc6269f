"""The nightly fold (backend/core/rolling.py) against the batch path it stands in for.

A few thousand users over ~200 days of random events and orders (several events a day, every
kind, interactions, invites, reviews, coupon orders, buyers who never open the app, silent
users, users who arrive late, a calendar with breaks) are folded day by day; on many days
every field of Features, Activity and Scores must equal what production computes from the
columns as it loads them (events of the last LOOKBACK_DAYS + 1 days, orders all time,
first/last seen all time): integers exactly, floats to 1e-9 relative.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backend.core import bgnbd, rolling, scoring
from backend.core.activity import compute_activity
from backend.core.calendar import TermCalendar
from backend.core.columns import KIND_CODES, EventColumns, OrderColumns, until
from backend.core.day_totals import DayTotals
from backend.core.features import LOOKBACK_DAYS, compute_features
from backend.core.rolling import DailyFold
from backend.core.score_state import ScoreState
from backend.core.tiers import TierConfig

START = 20_400  # 2025-11-07
DAYS = 200
N = 2500
CAL = TermCalendar(((START + 60, START + 95), (START + 150, START + 156)))
CONFIG = TierConfig()
PARAMS = bgnbd.BgNbdParams(r=0.6, alpha=12.0, a=0.7, b=2.5)


def _events(rows: dict[str, np.ndarray]) -> EventColumns:
    return EventColumns(
        user=rows["user"].astype(np.int64),
        day=rows["day"].astype(np.int64),
        hour=rows["hour"].astype(np.int64),
        kind=rows["kind"].astype(np.int8),
        duration_s=rows["duration_s"].astype(np.float64),
    )


def campus(seed: int = 0):
    """Random columns over DAYS days from START, and each user's first-seen day."""
    rng = np.random.default_rng(seed)
    arrive = START + np.where(rng.random(N) < 0.3, rng.integers(0, DAYS, N), 0)
    rate = rng.gamma(0.6, 0.5, N)  # visit days per day, many near 0
    rate[rng.random(N) < 0.1] = 0.0  # silent users: an account and nothing else
    visits = rng.poisson(rate * (START + DAYS - arrive))
    user = np.repeat(np.arange(N), visits)
    day = arrive[user] + (rng.random(user.size) * (START + DAYS - arrive[user])).astype(int)
    # Each visit: one to four events at random hours, of every kind (0 = one scoring ignores).
    per_visit = rng.integers(1, 5, user.size)
    e_user = np.repeat(user, per_visit)
    e_day = np.repeat(day, per_visit)
    kind = rng.choice(9, e_user.size, p=[0.05, 0.35, 0.25, 0.05, 0.08, 0.04, 0.06, 0.08, 0.04])
    # Durations in fractional seconds, some sub-millisecond: whole milliseconds are summed.
    duration = np.where(kind == KIND_CODES["session_end"], rng.random(e_user.size) * 1800, 0.0)
    events = _events(
        {
            "user": e_user,
            "day": e_day,
            "hour": rng.integers(0, 24, e_user.size),
            "kind": kind,
            "duration_s": duration,
        }
    )
    # Orders: on some visit days (sometimes two a day), plus buyers who order without events.
    buys = rng.random(user.size) < 0.15
    o_user = np.concatenate([user[buys], user[buys][::5]])
    o_day = np.concatenate([day[buys], day[buys][::5]])
    ghosts = rng.choice(N, 40, replace=False)
    o_user = np.concatenate([o_user, ghosts])
    o_day = np.concatenate([o_day, arrive[ghosts] + rng.integers(0, 30, 40)])
    o_day = np.minimum(o_day, START + DAYS - 1)
    orders = OrderColumns(
        user=o_user.astype(np.int64),
        day=o_day.astype(np.int64),
        amount_fen=rng.integers(100, 20_000, o_user.size),
        used_coupon=rng.random(o_user.size) < 0.3,
    )
    return events, orders, arrive


def production_inputs(events: EventColumns, orders: OrderColumns, arrive, as_of: int):
    """What backend/services/scoring.py loads for `as_of`: events of the last LOOKBACK_DAYS
    + 1 days, all orders, first seen (account creation or an earlier event) and last seen
    (the last event, or creation) all time."""
    all_events, all_orders = until(events, orders, as_of)
    keep = all_events.day >= as_of - LOOKBACK_DAYS
    recent = EventColumns(*(getattr(all_events, f.name)[keep] for f in dataclasses.fields(events)))
    first_seen = arrive.copy()
    np.minimum.at(first_seen, all_events.user, all_events.day)
    last_seen = np.full(N, -(10**6), dtype=np.int64)
    np.maximum.at(last_seen, all_events.user, all_events.day)
    last_seen = np.where(last_seen < 0, arrive, last_seen)
    return recent, all_orders, first_seen, last_seen


def mismatches(batch, fold) -> list[str]:
    """Names of fields that differ: integers and booleans exactly, floats beyond 1e-9."""
    bad = []
    for f in dataclasses.fields(batch):
        a, b = getattr(batch, f.name), getattr(fold, f.name)
        if not isinstance(a, np.ndarray):
            continue
        if a.shape != b.shape:
            bad.append(f.name)
        elif a.dtype.kind == "f":
            if not np.allclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True):
                bad.append(f.name)
        elif a.dtype != b.dtype or not np.array_equal(a, b):
            bad.append(f.name)
    return bad


def fold_scores(fold: DailyFold, calendar, config, **kwargs):
    """The night's scores from this fold, as the scoring state gives them (its `scores` is
    the one path from a fold to Scores)."""
    state = ScoreState(fold.n_users)
    state.fold = fold
    return state.scores(calendar, config, **kwargs)


def score_both(events, orders, arrive, fold: DailyFold, as_of: int, **kwargs):
    recent, all_orders, first_seen, last_seen = production_inputs(events, orders, arrive, as_of)
    seen = {"first_seen": first_seen, "last_seen": last_seen}
    batch = scoring.score_users(recent, all_orders, N, as_of, CAL, CONFIG, **seen, **kwargs)
    rolled = fold_scores(fold, CAL, CONFIG, **seen, **kwargs)
    return batch, rolled


def compare_scores(batch, rolled) -> list[str]:
    bad = [f"features.{name}" for name in mismatches(batch.features, rolled.features)]
    bad += [f"activity.{name}" for name in mismatches(batch.activity, rolled.activity)]
    bad += mismatches(batch, rolled)
    if batch.params != rolled.params:
        bad.append("params")
    return bad


@pytest.fixture(scope="module")
def data():
    return campus()


def checkpoints() -> list[int]:
    days = set(range(START + 3, START + DAYS, 11))
    days |= {START, START + 7, START + 28, START + 29, START + 90, START + 121, START + 122}
    days |= {START + DAYS - 1, START + 61, START + 96, START + 151}  # breaks begin and end
    return sorted(days)


def test_fold_equals_the_batch_path_day_after_day(data):
    events, orders, arrive = data
    fold = DailyFold(N)
    wanted = set(checkpoints())
    compared = warnings = fitted = 0
    for day in range(START, START + DAYS):
        fold.add_day(DayTotals.from_columns(day, events, orders))
        if day not in wanted:
            continue
        batch, rolled = score_both(events, orders, arrive, fold, day, params=PARAMS)
        assert compare_scores(batch, rolled) == [], day
        compared += 1
        warnings += int(batch.activity.warning.sum())
        if day % 3 == 0:  # fitting BG/NBD on the features: the same fit
            batch, rolled = score_both(events, orders, arrive, fold, day)
            assert compare_scores(batch, rolled) == [], day
            fitted += batch.params is not None
    assert compared == len(wanted)
    # The data exercise what they should: warnings fire, a model gets fitted.
    assert warnings > 0 and fitted > 0


def test_the_comparison_can_fail(data, monkeypatch):
    """A fold whose 7-day window is one day too wide is caught, and so is a fold that loses
    the day leaving the look-back."""
    events, orders, arrive = data
    for broken in (
        {**rolling.WINDOWED, 8: rolling.WINDOWED[7]} | {7: ()},
        {**rolling.WINDOWED, rolling.LOOKBACK_WIDTH + 1: rolling.WINDOWED[rolling.LOOKBACK_WIDTH]}
        | {rolling.LOOKBACK_WIDTH: ()},
    ):
        with monkeypatch.context() as patch:
            patch.setattr(rolling, "WINDOWED", broken)
            fold = DailyFold(N)
            for day in range(START, START + 130):
                fold.add_day(DayTotals.from_columns(day, events, orders))
            batch, rolled = score_both(events, orders, arrive, fold, START + 129, params=PARAMS)
            assert compare_scores(batch, rolled) != []


def test_features_without_first_and_last_seen_and_with_changing_ones(data):
    """Without first/last seen the fold matches columns that hold every day since it started
    (within the look-back the batch path then sees the same visits): users never seen yet
    start their repeat-purchase clock on the day itself, day after day. And a first_seen
    that changes between nights is taken as given."""
    events, orders, arrive = data
    fold = DailyFold(N)
    rng = np.random.default_rng(1)
    for day in range(START, START + 100):
        fold.add_day(DayTotals.from_columns(day, events, orders))
        if day % 4:
            continue
        cut_events, cut_orders = until(events, orders, day)
        batch = compute_features(cut_events, cut_orders, N, day, CAL)
        assert mismatches(batch, fold.features(CAL, as_of=day)) == [], day
        act = compute_activity(cut_events, cut_orders, N, day, CAL)
        assert mismatches(act, fold.activity(CAL, as_of=day)) == [], day
        if day % 8 == 0:  # some first-seen days in the future: capped at the day
            first_seen = arrive - rng.integers(-30, 30, N)
            batch = compute_features(cut_events, cut_orders, N, day, CAL, first_seen=first_seen)
            assert mismatches(batch, fold.features(CAL, first_seen=first_seen)) == [], day


def test_empty_days_are_fine_and_gaps_are_refused(data):
    events, orders, arrive = data
    fold = DailyFold(N)
    quiet = set(range(START + 40, START + 52)) | {START + 70}
    for day in range(START, START + 130):
        fold.add_day(
            DayTotals.empty(day) if day in quiet else DayTotals.from_columns(day, events, orders)
        )
    keep = ~np.isin(events.day, list(quiet))
    okeep = ~np.isin(orders.day, list(quiet))
    ev = EventColumns(*(getattr(events, f.name)[keep] for f in dataclasses.fields(events)))
    od = OrderColumns(*(getattr(orders, f.name)[okeep] for f in dataclasses.fields(orders)))
    batch, rolled = score_both(ev, od, arrive, fold, START + 129, params=PARAMS)
    assert compare_scores(batch, rolled) == []

    with pytest.raises(ValueError, match="cannot follow"):
        fold.add_day(DayTotals.empty(START + 131))  # a day missing
    fold.add_day(DayTotals.empty(START + 129))  # more of the same day: nothing more here
    assert (
        compare_scores(batch, score_both(ev, od, arrive, fold, START + 129, params=PARAMS)[1]) == []
    )
    with pytest.raises(ValueError, match="cannot follow"):
        fold.add_day(DayTotals.empty(START + 100))  # back in time
    with pytest.raises(ValueError, match="not"):
        fold.features(CAL, as_of=START + 128)  # the fold is at its last day only
    assert fold.day == START + 129  # refused days changed nothing
    fold.add_day(DayTotals.empty(START + 130))


def test_features_are_copies_unless_asked_not_to_be(data):
    events, orders, _ = data
    fold = DailyFold(N)
    for day in range(START, START + 20):
        fold.add_day(DayTotals.from_columns(day, events, orders))
    kept = fold.features(CAL)
    lent = fold.features(CAL, copy=False)
    assert mismatches(kept, lent) == []
    assert not lent.visit_days_30.flags.writeable and not lent.frequency.flags.writeable
    assert kept.visit_days_30.flags.writeable
    before = kept.visit_days_7.copy()
    fold.add_day(DayTotals.from_columns(START + 20, events, orders))
    np.testing.assert_array_equal(kept.visit_days_7, before)  # a copy: unchanged
    assert not np.array_equal(lent.visit_days_7, before)  # the fold's own: moved on


def test_rows_must_be_sorted_unique_users():
    fold = DailyFold(10)
    for user in ([3, 1], [2, 2], [-1, 4], [4, 10]):
        with pytest.raises(ValueError, match="sorted"):
            fold.add_day(DayTotals(START, np.array(user), events=np.ones(2, dtype=np.int64)))
    with pytest.raises(ValueError, match="one value per user"):
        fold.add_day(DayTotals(START, np.array([1, 2]), events=np.ones(3, dtype=np.int64)))
    with pytest.raises(ValueError, match="no day"):
        fold.activity(CAL)


def test_one_hour_totals_match_the_simulators_event_rows():
    """The simulator logs, per visitor, an app_open and a session_end at their usual hour, and
    an order_paid per order: DayTotals.at_hours builds the same totals without the rows."""
    rng = np.random.default_rng(3)
    n = 5000
    usual = rng.integers(0, 24, n)
    for day in (START + 1, START + 2):  # a Saturday and a Sunday
        visited = np.sort(rng.choice(n, 1500, replace=False))
        buyers = visited[rng.random(visited.size) < 0.2]
        session_s = np.rint(rng.lognormal(5, 1, visited.size))
        amount = rng.integers(500, 5000, buyers.size)
        k = visited.size
        events = _events(
            {
                "user": np.concatenate([visited, visited, buyers]),
                "day": np.full(2 * k + buyers.size, day),
                "hour": usual[np.concatenate([visited, visited, buyers])],
                "kind": np.concatenate(
                    [np.full(k, 1), np.full(k, 2), np.full(buyers.size, KIND_CODES["order_paid"])]
                ),
                "duration_s": np.concatenate([np.zeros(k), session_s, np.zeros(buyers.size)]),
            }
        )
        coupon = rng.random(buyers.size) < 0.5
        orders = OrderColumns(buyers, np.full(buyers.size, day), amount, coupon)
        ordered = np.isin(visited, buyers)
        direct = DayTotals.at_hours(
            day,
            visited,
            usual[visited],
            2 + ordered,
            session_ms=np.rint(session_s * 1000).astype(np.int64),
            orders=ordered.astype(np.int64),
            spend_fen=np.where(ordered, np.bincount(buyers, amount, n)[visited], 0).astype(
                np.int64
            ),
            coupon_orders=np.bincount(buyers, coupon, n)[visited].astype(np.int64),
        )
        grouped = DayTotals.from_columns(day, events, orders)
        for f in dataclasses.fields(DayTotals):
            a, b = getattr(grouped, f.name), getattr(direct, f.name)
            if f.name == "weekend_events" and b is None:
                assert not np.any(a), day
            elif f.name in ("interactions", "invites", "content"):
                assert b is None and not np.any(a)
            else:
                np.testing.assert_array_equal(a, b, err_msg=f.name)


def test_fold_matches_on_a_simulated_campus():
    """Simulator-shaped days built directly (DayTotals.at_hours), folded for 130 days, equal
    the batch path on the event rows the simulator's log would hold."""
    rng = np.random.default_rng(11)
    n = 3000
    usual = rng.integers(0, 24, n)
    p = rng.beta(0.6, 1.4, n)
    fold = DailyFold(n)
    rows: list[dict[str, np.ndarray]] = []
    order_rows = []
    for day in range(START, START + 130):
        visited = np.flatnonzero(rng.random(n) < p)
        ordered = rng.random(visited.size) < 0.1
        session_s = np.rint(rng.lognormal(5, 0.8, visited.size))
        amount = rng.integers(800, 4000, visited.size)
        fold.add_day(
            DayTotals.at_hours(
                day,
                visited,
                usual[visited],
                2 + ordered,
                session_ms=np.rint(session_s * 1000).astype(np.int64),
                orders=ordered.astype(np.int64),
                spend_fen=np.where(ordered, amount, 0),
            )
        )
        buyers = visited[ordered]
        k = visited.size
        rows.append(
            {
                "user": np.concatenate([visited, visited, buyers]),
                "day": np.full(2 * k + buyers.size, day),
                "hour": usual[np.concatenate([visited, visited, buyers])],
                "kind": np.concatenate(
                    [np.full(k, 1), np.full(k, 2), np.full(buyers.size, KIND_CODES["order_paid"])]
                ),
                "duration_s": np.concatenate([np.zeros(k), session_s, np.zeros(buyers.size)]),
            }
        )
        order_rows.append((buyers, np.full(buyers.size, day), amount[ordered]))
    as_of = START + 129
    recent = [r for r in rows if r["day"].size and r["day"][0] >= as_of - LOOKBACK_DAYS]
    events = _events({k: np.concatenate([r[k] for r in recent]) for k in recent[0]})
    ou, od, oa = (np.concatenate(c) for c in zip(*order_rows, strict=True))
    orders = OrderColumns(ou, od, oa, np.zeros(ou.size, dtype=bool))
    # As the simulator passes them: everyone exists from the start; last seen all time.
    first_seen = np.full(n, START)
    last_seen = first_seen.copy()
    for r in rows:
        last_seen[r["user"]] = r["day"]
    seen = {"first_seen": first_seen, "last_seen": last_seen}
    batch = scoring.score_users(events, orders, n, as_of, CAL, CONFIG, **seen, params=PARAMS)
    rolled = fold_scores(fold, CAL, CONFIG, **seen, params=PARAMS)
    assert compare_scores(batch, rolled) == []
    # The fold knows every visit it was given: the creation day is all it needs as last seen
    # (for users who never came), which is what production's last_seen falls back to.
    alone = fold_scores(
        fold, CAL, CONFIG, first_seen=first_seen, last_seen=first_seen, params=PARAMS
    )
    assert compare_scores(batch, alone) == []


def test_a_day_scored_in_the_morning_then_filled_in_equals_the_batch_path(data):
    # The simulator's (and a nightly job's) order: each morning the fold gets an empty day and
    # is scored as of it, from the days before; the day's activity then arrives, here in two
    # parts whose users overlap, which must still count one visit day each.
    events, orders, arrive = data
    fields = dataclasses.fields
    am, pm = events.hour < 12, events.hour >= 12
    morning = EventColumns(*(getattr(events, f.name)[am] for f in fields(events)))
    evening = EventColumns(*(getattr(events, f.name)[pm] for f in fields(events)))
    no_orders = OrderColumns(*(getattr(orders, f.name)[:0] for f in fields(orders)))
    fold = DailyFold(N)
    wanted = set(checkpoints())
    for day in range(START, START + DAYS):
        fold.add_day(DayTotals.empty(day))
        if day in wanted:
            before = until(events, orders, day - 1)  # nothing of today in the database yet
            recent, all_orders, first, last = production_inputs(*before, arrive, day)
            seen = {"first_seen": first, "last_seen": last, "params": PARAMS}
            batch = scoring.score_users(recent, all_orders, N, day, CAL, CONFIG, **seen)
            rolled = fold_scores(fold, CAL, CONFIG, **seen)
            assert compare_scores(batch, rolled) == [], ("morning", day)
        fold.add_day(DayTotals.from_columns(day, morning, orders))
        fold.add_day(DayTotals.from_columns(day, evening, no_orders))
        if day in wanted:
            batch, rolled = score_both(events, orders, arrive, fold, day, params=PARAMS)
            assert compare_scores(batch, rolled) == [], ("evening", day)
