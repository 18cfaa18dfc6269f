"""Scoring core on small hand-checked cases: calendar, features, activity, RFM, tiers, value,
and score_users end to end. Pure numpy: no database, no app fixtures.

Reference day: D = 2026-03-10, a Tuesday (day number 20522). The test calendar has one break,
2026-02-01 .. 2026-02-28 (28 days) = D−37 .. D−10. Weekdays used below:
  D Tue, D−1 Mon, D−2 Sun, D−3 Sat, D−4 Fri, D−5 Thu, D−7 Tue, D−29 Mon, D−30 Sun,
  D−39 Fri (2026-01-30), D−45 Sat (2026-01-24), D−60 Fri (2026-01-09), D−100 Sun (2025-11-30).
BG/NBD itself is tested in test_core_bgnbd.py.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from scipy.stats import rankdata

from backend.core import bgnbd, scoring
from backend.core import rfm as rfm_module
from backend.core.activity import activity_index, compute_activity, early_warning
from backend.core.calendar import (
    TermCalendar,
    china_day,
    china_hour,
    day_date,
    day_number,
    day_start_ms,
)
from backend.core.columns import KIND_CODES, NEVER, EventColumns, OrderColumns
from backend.core.features import compute_features
from backend.core.rfm import SEGMENT_NAMES, quintile_scores, rfm_scores, segments
from backend.core.tiers import ACTIVE, CHURNED, LOW, NEW, REASONS, RISK, TierConfig, assign_tiers
from backend.core.value import expected_value_fen, worth_recalling

D = day_number(date(2026, 3, 10))
CAL = TermCalendar.from_dates([(date(2026, 2, 1), date(2026, 2, 28))])


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def ev(rows) -> EventColumns:
    """Events from (user, day, hour, kind name, duration_s) rows."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * 5
    return EventColumns(
        user=np.array(cols[0], dtype=np.int64),
        day=np.array(cols[1], dtype=np.int64),
        hour=np.array(cols[2], dtype=np.int64),
        kind=np.array([KIND_CODES.get(k, 0) for k in cols[3]], dtype=np.int8),
        duration_s=np.array(cols[4], dtype=np.float64),
    )


def od(rows) -> OrderColumns:
    """Orders from (user, day, amount_fen, used_coupon) rows."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * 4
    return OrderColumns(
        user=np.array(cols[0], dtype=np.int64),
        day=np.array(cols[1], dtype=np.int64),
        amount_fen=np.array(cols[2], dtype=np.int64),
        used_coupon=np.array(cols[3], dtype=bool),
    )


# ---------------------------------------------------------------- calendar


def test_reference_day():
    assert D == 20522
    assert day_date(D) == date(2026, 3, 10)
    assert day_number(date(1970, 1, 1)) == 0
    assert day_date(0) == date(1970, 1, 1)


def test_china_day_and_hour():
    # 2026-03-10T16:30Z is 2026-03-11 00:30 in China (UTC+8): the next day, hour 0.
    assert int(china_day(ms(2026, 3, 10, 16, 30))) == D + 1
    assert int(china_hour(ms(2026, 3, 10, 16, 30))) == 0
    # One millisecond before China midnight: still D, hour 23.
    assert int(china_day(ms(2026, 3, 10, 16, 0) - 1)) == D
    assert int(china_hour(ms(2026, 3, 10, 16, 0) - 1)) == 23
    # 2026-03-10T01:00Z = 09:00 China, same date.
    stamps = np.array([ms(2026, 3, 10, 1), ms(2026, 3, 9, 23, 59), ms(1970, 1, 1)])
    assert china_day(stamps).tolist() == [D, D, 0]
    # 23:59 UTC is 07:59 China the next day; 1970-01-01T00:00Z is 08:00 China.
    assert china_hour(stamps).tolist() == [9, 7, 8]


def test_day_start_ms():
    # 00:00 China on 2026-03-11 is 16:00 UTC on 2026-03-10.
    assert day_start_ms(D + 1) == ms(2026, 3, 10, 16)
    assert int(china_day(day_start_ms(D))) == D
    assert int(china_day(day_start_ms(D) - 1)) == D - 1
    assert int(china_hour(day_start_ms(D))) == 0


def test_term_days_between_across_a_break():
    jan = day_number(date(2026, 1, 25))
    # (Jan 25, Mar 5]: Jan 26..31 (6) + Mar 1..5 (5); all of February is the break.
    assert int(CAL.term_days_between(jan, day_number(date(2026, 3, 5)))) == 11
    # A gap entirely inside the break counts nothing.
    assert int(CAL.term_days_between(day_number(date(2026, 2, 3)), D - 10)) == 0
    # Into the break: (Jan 25, Feb 10] = Jan 26..31 = 6.
    assert int(CAL.term_days_between(jan, day_number(date(2026, 2, 10)))) == 6
    # Out of the break: (Feb 10, Mar 5] = Mar 1..5 = 5.
    assert int(CAL.term_days_between(day_number(date(2026, 2, 10)), D - 5)) == 5
    # The break's edges are inclusive: (Jan 31, Mar 1] = just Mar 1.
    assert int(CAL.term_days_between(D - 38, D - 9)) == 1
    # Without breaks it is a plain difference; vectorised.
    assert TermCalendar().term_days_between(np.array([D - 50, D]), D).tolist() == [50, 0]
    assert CAL.term_days_between(np.array([D - 50, D - 5, D - 20]), D).tolist() == [22, 5, 10]


def test_two_breaks_and_from_dates_sorting():
    cal = TermCalendar.from_dates(
        [(date(2026, 7, 1), date(2026, 8, 31)), (date(2026, 2, 1), date(2026, 2, 28))]
    )
    assert cal.breaks[0] == (day_number(date(2026, 2, 1)), day_number(date(2026, 2, 28)))
    # (Jan 31, Sep 1] = 213 calendar days − 28 (Feb) − 62 (Jul+Aug) = 123 term days.
    start, end = day_number(date(2026, 1, 31)), day_number(date(2026, 9, 1))
    assert end - start == 213
    assert int(cal.term_days_between(start, end)) == 123
    assert cal.is_break([D - 37, D - 10, D - 9, D - 38]).tolist() == [True, True, False, False]


# ---------------------------------------------------------------- features

EVENTS = ev(
    [
        # user 0: a regular with a bit of everything
        (0, D, 23, "app_open", 0),
        (0, D, 1, "session_end", 600),  # 10 min, same day as the app_open
        (0, D - 1, 12, "like", 0),
        (0, D - 2, 13, "share", 0),  # Sunday
        (0, D - 7, 20, "session_end", 1200),  # 20 min; just outside the 7-day window
        (0, D - 29, 0, "invite", 0),  # last day inside the 30-day window
        (0, D - 30, 10, "comment", 0),  # Sunday; just outside the 30-day window
        (0, D + 1, 12, "review", 0),  # after as_of: ignored
        # user 1: visits, never buys; first seen before the break
        (1, D - 45, 9, "app_open", 0),  # Saturday
        (1, D - 5, 9, "app_open", 0),  # Thursday
        # user 2: bought twice before the break, silent since
        (2, D - 60, 12, "order_paid", 0),
        (2, D - 39, 12, "order_paid", 0),
        # user 3: only a row after as_of: never seen as of D
        (3, D + 3, 12, "review", 0),
        # user 4: two events late at night on a Saturday; one of a type scoring ignores
        (4, D - 3, 23, "app_open", 0),
        (4, D - 3, 1, "page_view", 0),
        # user 5: hours 22 and 4 on a Friday
        (5, D - 4, 22, "app_open", 0),
        (5, D - 4, 4, "app_open", 0),
    ]
)
ORDERS = od(
    [
        (0, D, 1234, True),
        (0, D, 100, False),  # second order the same day
        (0, D - 10, 500, True),
        (0, D - 40, 999, False),
        (0, D - 100, 2000, False),  # outside 90 days
        (0, D + 2, 77777, True),  # after as_of: ignored
        (2, D - 60, 2500, False),
        (2, D - 39, 1500, True),
    ]
)
N = 6


@pytest.fixture(scope="module")
def feats():
    return compute_features(EVENTS, ORDERS, N, D, CAL)


def test_feature_recency_and_age(feats):
    assert feats.days_since_visit.tolist() == [0, 5, 39, NEVER, 3, 4]
    # User 2: (D−39, D] holds the 28 break days → 39 − 28 = 11 term days.
    assert feats.term_days_since_visit.tolist() == [0, 5, 11, NEVER, 3, 4]
    assert feats.days_since_order.tolist() == [0, NEVER, 39, NEVER, NEVER, NEVER]
    # From the first visit (user 0: D−30; user 3 was never seen: 0).
    assert feats.age_days.tolist() == [30, 45, 60, 0, 3, 4]


def test_feature_visit_days_count_days_not_events(feats):
    # User 0 visited on D (2 events), D−1, D−2 | D−7 | D−29 | D−30.
    assert feats.visit_days_7.tolist() == [3, 1, 0, 0, 1, 1]
    assert feats.visit_days_14.tolist() == [4, 1, 0, 0, 1, 1]
    assert feats.visit_days_30.tolist() == [5, 1, 0, 0, 1, 1]
    assert feats.visit_days_90.tolist() == [6, 2, 2, 0, 1, 1]


def test_feature_orders_and_spend(feats):
    # User 0: D (1234 + 100), D−10 (500), D−40 (999), D−100 (2000); D+2 is ignored.
    assert feats.orders_7.tolist() == [2, 0, 0, 0, 0, 0]
    assert feats.orders_14.tolist() == [3, 0, 0, 0, 0, 0]
    assert feats.orders_30.tolist() == [3, 0, 0, 0, 0, 0]
    assert feats.orders_90.tolist() == [4, 0, 2, 0, 0, 0]
    assert feats.orders_total.tolist() == [5, 0, 2, 0, 0, 0]
    # 1234 + 100 + 500 = 1834; + 999 = 2833; + 2000 = 4833. User 2: 2500 + 1500.
    assert feats.spend_fen_30.tolist() == [1834, 0, 0, 0, 0, 0]
    assert feats.spend_fen_90.tolist() == [2833, 0, 4000, 0, 0, 0]
    assert feats.spend_fen_total.tolist() == [4833, 0, 4000, 0, 0, 0]
    for col in (feats.spend_fen_30, feats.spend_fen_90, feats.spend_fen_total):
        assert col.dtype.kind == "i"  # integer fen, never float yuan
    # Coupons: user 0 on 2 of 5 orders, user 2 on 1 of 2; no orders → 0.
    assert feats.coupon_orders_total.tolist() == [2, 0, 1, 0, 0, 0]
    assert feats.coupon_order_share.tolist() == [0.4, 0.0, 0.5, 0.0, 0.0, 0.0]


def test_feature_sessions_interactions_content(feats):
    # 600 s on D → 10 min in 7 days; + 1200 s on D−7 → 30 min in 30 days.
    assert feats.session_min_7.tolist() == [10.0, 0, 0, 0, 0, 0]
    assert feats.session_min_30.tolist() == [30.0, 0, 0, 0, 0, 0]
    # 7 days: like (D−1), share (D−2). 30 days: + invite (D−29); the comment (D−30) and the
    # review after as_of are outside; user 4's unknown event type is no interaction.
    assert feats.interactions_7.tolist() == [2, 0, 0, 0, 0, 0]
    assert feats.interactions_30.tolist() == [3, 0, 0, 0, 0, 0]
    assert feats.invites_total.tolist() == [1, 0, 0, 0, 0, 0]
    # All-time content: the comment on D−30 counts; reviews after as_of (users 0, 3) do not.
    assert feats.content_total.tolist() == [1, 0, 0, 0, 0, 0]


def test_feature_time_of_day_and_week(feats):
    # User 0's 7 events: hours 23, 1, 12, 13, 20, 0, 10 → night (21–01): 23, 1, 0 = 3/7.
    # Weekend: D−2 and D−30 are Sundays = 2/7.
    assert feats.night_share == pytest.approx([3 / 7, 0, 0, 0, 1.0, 0.5])
    # User 1: Sat + Thu = 1/2; user 2: two Fridays; user 4: Saturday; user 5: Friday.
    assert feats.weekend_share == pytest.approx([2 / 7, 0.5, 0, 0, 1.0, 0])
    # Circular means. User 4: hours 23 and 1 → 0 (the arithmetic mean would be 12).
    # User 5: 22 and 4 → angles 330° and 60°, resultant at 15° → hour 1 (arithmetic: 13).
    # User 0: Σsin = −0.625, Σcos = 0.600 → atan2 → 20.92 h → 21 (arithmetic: 11.3).
    # User 3 has no events → −1.
    assert feats.usual_hour.tolist() == [21, 9, 12, -1, 0, 1]


def test_feature_repeat_purchase_summary(feats):
    # User 0: order days D−100, D−40, D−10, D (two orders on D count once) → 3 repeats;
    # (D−100, D] holds the 28 break days → recency = T = 72 term days.
    # User 1: no orders, counted from the first visit D−45: 45 − 28 = 17, frequency 0.
    # User 2: D−60 and D−39 (before the break) → recency 21; T = 60 − 28 = 32.
    # User 3: never seen → T 0. Users 4, 5: from the first visit, no break since.
    assert feats.frequency.tolist() == [3, 0, 1, 0, 0, 0]
    assert feats.recency.tolist() == [72, 0, 21, 0, 0, 0]
    assert feats.T.tolist() == [72, 17, 32, 0, 3, 4]


def test_rows_after_as_of_are_ignored(feats):
    keep = EVENTS.day <= D
    okeep = ORDERS.day <= D
    trimmed_events = EventColumns(
        EVENTS.user[keep], EVENTS.day[keep], EVENTS.hour[keep], EVENTS.kind[keep],
        EVENTS.duration_s[keep],
    )  # fmt: skip
    trimmed_orders = OrderColumns(
        ORDERS.user[okeep], ORDERS.day[okeep], ORDERS.amount_fen[okeep], ORDERS.used_coupon[okeep]
    )
    other = compute_features(trimmed_events, trimmed_orders, N, D, CAL)
    for name in feats.names():
        np.testing.assert_array_equal(getattr(feats, name), getattr(other, name), err_msg=name)


def test_features_as_of_an_earlier_day():
    # As of D−1, user 0's orders on D and events on D are in the future.
    f = compute_features(EVENTS, ORDERS, N, D - 1, CAL)
    assert f.days_since_visit[0] == 0  # the like on D−1
    assert f.orders_total[0] == 3  # D−10, D−40, D−100
    assert f.spend_fen_total[0] == 500 + 999 + 2000
    assert f.frequency[0] == 2
    # Last order D−10 (a break day) → recency = term days in (D−100, D−10] = 90 − 28 = 62;
    # T = term days in (D−100, D−1] = 62 + (D−9 .. D−1 = 9) = 71.
    assert f.recency[0] == 62
    assert f.T[0] == 71


def test_first_seen_and_last_seen_extend_the_event_window():
    events = ev([(1, D - 2, 10, "app_open", 0)])
    orders = od([])
    first_seen = np.array([D - 200, D - 20, D - 1])
    last_seen = np.array([D - 50, D - 2, D + 5])
    f = compute_features(events, orders, 3, D, CAL, first_seen=first_seen, last_seen=last_seen)
    # User 0 has no event in the window but was last seen D−50: 50 days, 50 − 28 = 22 term
    # days; age 200 calendar days; T from the first visit = 200 − 28 = 172 term days.
    # User 1: (D−20, D] holds the break days D−19 .. D−10 (10) → T = 10, age 20.
    # User 2: last_seen after as_of is clamped to as_of.
    assert f.days_since_visit.tolist() == [50, 2, 0]
    assert f.term_days_since_visit.tolist() == [22, 2, 0]
    assert f.age_days.tolist() == [200, 20, 1]
    assert f.T.tolist() == [172, 10, 1]
    assert f.frequency.tolist() == [0, 0, 0]
    assert f.usual_hour.tolist() == [-1, 10, -1]  # from events only


# ---------------------------------------------------------------- activity


def test_activity_index_hand_values():
    e1 = 1 - math.exp(-1)  # 0.63212: each saturating part at its saturation point
    cases = [
        ((7, 0, 0, 0), 40.0),  # a visit every day, nothing else
        ((0, 0, 0, 0), 0.0),
        ((0, 60, 0, 0), 20 * e1),  # 12.642
        ((0, 0, 2, 0), 25 * e1),  # 15.803
        ((0, 0, 0, 3), 15 * e1),  # 9.482
        ((7, 60, 2, 3), 40 + 60 * e1),  # 77.927
        ((3.5, 0, 0, 0), 20.0),  # visits are linear
        ((14, 1e6, 1e6, 1e6), 100.0),  # visits clip at 7, the rest saturates at its weight
        ((-1, -5, -1, -1), 0.0),  # negatives count as nothing
    ]
    for args, expected in cases:
        assert float(activity_index(*args)) == pytest.approx(expected, abs=1e-9), args
    # Vectorised over users.
    got = activity_index([7, 0], [0, 60], [0, 0], [0, 0])
    assert got == pytest.approx([40.0, 20 * e1])


def test_early_warning_rules():
    base = np.full(6, 50.0)
    base[3] = 9.9  # baseline not meaningful
    base[4] = 10.0  # exactly the minimum: meaningful
    recent = np.array(
        [
            # user: 0    1    2     3    4    5
            [9.0, 9.0, 10.0, 0.0, 1.9, 0.0],  # today
            [9.0, 9.0, 0.0, 0.0, 1.9, 0.0],  # yesterday
            [9.0, 11.0, 0.0, 0.0, 1.9, 0.0],  # the day before
        ]
    )
    # 20% of 50 = 10: user 0 below on all 3 days; user 1 only 2 days; user 2 is at 10 today
    # (not below); user 3's baseline is < 10; user 4: 1.9 < 2 with baseline exactly 10;
    # user 5: nothing at all against 50.
    assert early_warning(recent, base, in_break=False).tolist() == [
        True, False, False, False, True, True,
    ]  # fmt: skip
    assert not early_warning(recent, base, in_break=True).any()


def test_compute_activity_after_four_weeks_daily():
    # User 0: an app_open every day D−30 .. D−3 (28 days), silent the last 3 days.
    # User 1: the same 28 days, D−36 .. D−9: silent 9 days.
    # User 2: on D a 30-min session, on D−1 a share and an order.
    rows = [(0, d, 10, "app_open", 0) for d in range(D - 30, D - 2)]
    rows += [(1, d, 10, "app_open", 0) for d in range(D - 36, D - 8)]
    rows += [(2, D, 10, "session_end", 1800), (2, D - 1, 10, "share", 0)]
    events, orders = ev(rows), od([(2, D - 1, 1000, False)])
    act = compute_activity(events, orders, 3, D, TermCalendar())

    # User 0, 7-day windows ending D, D−1, D−2 hold 4, 5, 6 visit days → 40·v/7.
    assert act.recent[:, 0] == pytest.approx([160 / 7, 200 / 7, 240 / 7])  # 22.9, 28.6, 34.3
    assert act.index[0] == pytest.approx(160 / 7)
    # Baseline: windows ending D−7, D−14, D−21 are full (40 each); the one ending D−28
    # holds D−30, D−29, D−28 = 3 days → (3·40 + 120/7) / 4 = 240/7 = 34.29.
    assert act.baseline[0] == pytest.approx(240 / 7)
    # Index 22.9 is far above 20% of 34.3 (6.9): three silent days are no warning yet.
    assert not act.warning[0]

    # User 1: nothing in the windows ending D, D−1, D−2; baseline windows ending D−7 (holds
    # D−13 .. D−9 = 5 days), D−14, D−21, D−28 (full) → (200/7 + 120)/4 = 37.14. Warning.
    assert act.recent[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert act.baseline[1] == pytest.approx(1040 / 28)
    assert act.warning[1]

    # User 2 today: v = 2 (D, D−1), m = 30, o = 1, i = 1.
    expected = 100 * (
        0.40 * 2 / 7
        + 0.20 * (1 - math.exp(-30 / 60))
        + 0.25 * (1 - math.exp(-1 / 2))
        + 0.15 * (1 - math.exp(-1 / 3))
    )  # 11.43 + 7.87 + 9.84 + 4.25 = 33.39
    assert act.index[2] == pytest.approx(expected)
    assert act.baseline[2] == 0.0
    assert not act.warning[2]

    # No warning when one of the last 3 days is a break; a break further back is no matter.
    in_break = TermCalendar(((D - 1, D - 1),))
    assert not compute_activity(events, orders, 3, D, in_break).warning.any()
    earlier = TermCalendar(((D - 20, D - 10),))
    assert compute_activity(events, orders, 3, D, earlier).warning.tolist() == [
        False, True, False,
    ]  # fmt: skip


# ---------------------------------------------------------------- RFM


def test_quintiles_of_ten_distinct_values():
    values = [5, 50, 10, 90, 70, 20, 30, 60, 40, 80]
    scores = quintile_scores(values)
    # Rank k of 10 scores ceil(5(k − 0.5)/10): ranks 1,2 → 1; 3,4 → 2; ... 9,10 → 5.
    assert scores.tolist() == [1, 3, 1, 5, 4, 2, 2, 4, 3, 5]
    assert np.bincount(scores).tolist() == [0, 2, 2, 2, 2, 2]


def test_quintiles_ties_lone_and_pairs():
    # Four tied at the bottom share rank 1 → ceil(0.25) = 1, not a middling average rank.
    assert quintile_scores([0, 0, 0, 0, 7]).tolist() == [1, 1, 1, 1, 5]
    # Ties at the top take the lowest of their ranks: ranks 1, 2, 2 → 1, ceil(2.5) = 3.
    assert quintile_scores([1, 9, 9]).tolist() == [1, 3, 3]
    assert quintile_scores([42]).tolist() == [3]
    assert quintile_scores([1, 2]).tolist() == [2, 4]
    assert quintile_scores([]).size == 0


def test_recency_scores_fewer_days_higher():
    # Days since the last visit 0, 10, 100 → R = 5, 3, 1 (ranks 3, 2, 1 of 3).
    r, _, _ = rfm_scores([0, 10, 100], [1, 1, 1], [100, 100, 100])
    assert r.tolist() == [5, 3, 1]
    assert quintile_scores([0, 10, 100], higher_is_better=False).tolist() == [5, 3, 1]


def test_rfm_no_orders_scores_one():
    # A lone user ranks in the middle (3) on everything, except F and M without orders.
    r, f, m = rfm_scores([4], [0], [0])
    assert (r.tolist(), f.tolist(), m.tolist()) == ([3], [1], [1])
    r, f, m = rfm_scores([4], [2], [900])
    assert (r.tolist(), f.tolist(), m.tolist()) == ([3], [3], [3])
    # A free order (spend 0): F from the ranks, M pinned to 1.
    r, f, m = rfm_scores([1, 2], [1, 3], [0, 500])
    assert f.tolist() == [2, 4]
    assert m.tolist() == [1, 4]


def test_segments_table():
    cases = [  # (R, F, M) → segment; FM = (F + M)/2 rounded half up
        ((5, 5, 5), "champions"),
        ((4, 4, 3), "champions"),  # FM 3.5 → 4
        ((3, 4, 5), "loyal"),  # R 3 is not champion
        ((4, 3, 3), "loyal"),
        ((4, 3, 2), "loyal"),  # FM 2.5 → 3
        ((5, 1, 2), "promising"),  # FM 1.5 → 2
        ((3, 2, 2), "need_attention"),
        ((2, 5, 4), "cant_lose"),  # FM 4.5 → 5
        ((1, 4, 4), "cant_lose"),
        ((1, 3, 3), "at_risk"),
        ((2, 2, 3), "at_risk"),  # FM 2.5 → 3
        ((2, 2, 2), "hibernating"),
        ((2, 1, 1), "hibernating"),
        ((1, 1, 2), "lost"),
        ((1, 1, 1), "lost"),
    ]
    r, f, m = (np.array(c, dtype=np.int8) for c in zip(*[c for c, _ in cases], strict=True))
    got = [SEGMENT_NAMES[i] for i in segments(r, f, m)]
    assert got == [name for _, name in cases]


def reference_quintiles(values, higher_is_better=True) -> np.ndarray:
    """The definition, by ranking: ceil(5 · (rank − 0.5) / n), ties at their lowest rank."""
    v = np.asarray(values, dtype=np.float64)
    ranks = rankdata(v if higher_is_better else -v, method="min")
    return np.clip(np.ceil(5 * (ranks - 0.5) / v.size), 1, 5).astype(np.int8)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_quintiles_without_a_sort_equal_the_ranking(higher_is_better):
    # Whole numbers go through a bincount, wide or fractional ones through np.partition;
    # both must give the ranking's scores exactly, ties (lots of them) included.
    rng = np.random.default_rng(4)
    for n in [*range(1, 40), 97, 1000, 5003, 20_000]:
        for spread in (1, 3, 10, 1000):
            v = rng.integers(-spread, spread + 1, n) * rng.integers(1, 3)
            want = reference_quintiles(v, higher_is_better)
            for values in (v, v * 10**9, v + 0.5, v.astype(np.float32), v.tolist()):
                got = quintile_scores(values, higher_is_better)
                assert got.dtype == np.int8
                np.testing.assert_array_equal(got, want, err_msg=f"n={n} spread={spread}")


def test_rfm_scores_equal_the_ranking_with_the_no_order_floor():
    rng = np.random.default_rng(5)
    for n in (1, 2, 7, 300, 10_000):
        days = rng.integers(0, 40, n)
        orders = rng.poisson(0.7, n)
        spend = orders * rng.integers(0, 3000, n)  # some free orders: spend 0, orders > 0
        r, f, m = rfm_scores(days, orders, spend)
        np.testing.assert_array_equal(r, reference_quintiles(days, higher_is_better=False))
        np.testing.assert_array_equal(f, np.where(orders == 0, 1, reference_quintiles(orders)))
        np.testing.assert_array_equal(m, np.where(spend == 0, 1, reference_quintiles(spend)))
        for score in (r, f, m):
            assert score.dtype == np.int8


def test_segments_by_table_equal_the_rules():
    # Every (R, F, M) in 0..5 (0 is not a score, but the table must not care), many users.
    r, f, m = (g.ravel().astype(np.int8) for g in np.meshgrid(*[np.arange(6)] * 3))
    r, f, m = (np.tile(c, 5) for c in (r, f, m))
    np.testing.assert_array_equal(segments(r, f, m), rfm_module._segment_rules(r, f, m))
    # Out-of-range values fall back to the rules.
    odd = np.full(100, 7, dtype=np.int64)
    np.testing.assert_array_equal(segments(odd, odd, odd), rfm_module._segment_rules(odd, odd, odd))


def test_activity_index_tables_equal_the_formula():
    # Whole-number columns go through tables of the part; floats through the formula.
    rng = np.random.default_rng(6)
    n = 10_000
    v, o, i = rng.integers(-1, 9, n), rng.poisson(1.0, n), rng.poisson(0.5, n)
    m = rng.exponential(30.0, n)
    by_table = activity_index(v, m, o, i)
    by_formula = activity_index(v.astype(float), m, o.astype(float), i.astype(float))
    np.testing.assert_array_equal(by_table, by_formula)
    # A column of one value, and all zeros.
    np.testing.assert_array_equal(
        activity_index(v, m, np.zeros(n, dtype=np.int64), np.full(n, 2)),
        activity_index(v.astype(float), m, np.zeros(n), np.full(n, 2.0)),
    )
    assert activity_index(*(np.zeros(n, dtype=np.int64),) * 4).tolist() == [0.0] * n


# ---------------------------------------------------------------- tiers


def tiers_of(rows, config=None):
    """rows: (term days silent, age days, visit days in 30, risk score, warning)."""
    cols = [np.array(c) for c in zip(*rows, strict=True)]
    tier, reason = assign_tiers(*cols, config=config or TierConfig())
    return tier.tolist(), [REASONS[i] for i in reason]


def test_tier_rules_and_precedence():
    nan = float("nan")
    rows = [
        (30, 500, 0, 0.99, True),  # churned beats every risk signal
        (29, 500, 0, 0.0, False),  # silent 7..29 → risk
        (7, 500, 20, 0.0, False),
        (6, 500, 20, 0.78, False),  # 1 − P(alive) at the threshold → risk
        (6, 500, 20, 0.7799, False),  # just under → active
        (0, 500, 20, nan, True),  # no model (NaN) but the early warning → risk
        (0, 500, 20, nan, False),  # no model, nothing wrong → active
        (0, 7, 1, 0.0, False),  # seen 7 days ago at most → new (before low_frequency)
        (0, 8, 3, 0.0, False),  # < 4 visit days in 30 → low_frequency
        (0, 8, 4, 0.0, False),  # 4 → active
        (0, 2, 2, 0.9, False),  # new but risky → risk
        (7, 2, 2, 0.0, False),  # new but silent a week → risk (silence)
        (6, 2, 2, 0.0, True),  # new with warning → risk (warning)
    ]
    tier, reason = tiers_of(rows)
    assert tier == [
        CHURNED, RISK, RISK, RISK, ACTIVE, RISK, ACTIVE, NEW, LOW, ACTIVE, RISK, RISK, RISK,
    ]  # fmt: skip
    assert reason == [
        "silent_long",
        "silent_term_days",
        "silent_term_days",
        "low_p_alive",
        "visits_regularly",
        "early_warning",
        "visits_regularly",
        "first_seen_recently",
        "visits_rarely",
        "visits_regularly",
        "low_p_alive",
        "silent_term_days",
        "early_warning",
    ]


def test_tier_config_overrides():
    assert TierConfig.from_settings(None) == TierConfig()
    assert TierConfig.from_settings({}) == TierConfig()
    cfg = TierConfig.from_settings(
        {"churned_silent_days": 60, "risk_score_threshold": 1, "new_days": 14.0}
    )
    assert cfg.churned_silent_days == 60
    assert cfg.risk_score_threshold == 1.0 and isinstance(cfg.risk_score_threshold, float)
    assert cfg.new_days == 14 and isinstance(cfg.new_days, int)
    assert cfg.risk_silent_days == 7  # untouched
    # The overrides take effect: silent 45 term days is churned by default, at risk here; a
    # risk score of 0.9 no longer flags; age 10 is new.
    rows = [(45, 500, 20, 0.0, False), (0, 500, 20, 0.9, False), (0, 10, 1, 0.0, False)]
    assert tiers_of(rows)[0] == [CHURNED, RISK, LOW]
    assert tiers_of(rows, cfg)[0] == [RISK, ACTIVE, NEW]


def test_tier_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="churn_days"):
        TierConfig.from_settings({"churn_days": 10})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("new_days", "7"),
        ("new_days", None),
        ("new_days", True),
        ("churned_silent_days", -1),
        ("risk_score_threshold", -0.1),
        ("risk_score_threshold", [0.5]),
        # Non-finite numbers are no usable threshold (Flask's JSON parser accepts both).
        ("churned_silent_days", float("inf")),
        ("risk_score_threshold", float("nan")),
    ],
)
def test_tier_config_rejects_bad_values(key, value):
    with pytest.raises(ValueError):
        TierConfig.from_settings({key: value})


def test_student_silent_over_winter_break_is_not_churned():
    # Winter break 2026-01-17 .. 2026-02-28; as of Tuesday 2026-03-03. The student visited
    # every day from 2025-09-01 to 2026-01-16 (the last day of term), then went home.
    winter = TermCalendar.from_dates([(date(2026, 1, 17), date(2026, 2, 28))])
    as_of = day_number(date(2026, 3, 3))
    first, last = day_number(date(2025, 9, 1)), day_number(date(2026, 1, 16))
    # User 1 stopped on 2025-12-01 instead: (Dec 1, Mar 3] has 46 term days (Dec 2 .. Jan 16)
    # + 3 (Mar 1 .. 3).
    stop = day_number(date(2025, 12, 1))
    rows = [(0, d, 12, "app_open", 0) for d in range(first, last + 1)]
    rows += [(1, d, 12, "app_open", 0) for d in range(first, stop + 1)]
    events, orders = ev(rows), od([])

    def tiers(calendar):
        f = compute_features(events, orders, 2, as_of, calendar)
        act = compute_activity(events, orders, 2, as_of, calendar)
        risk = np.full(2, np.nan)
        return f, assign_tiers(
            f.term_days_since_visit, f.age_days, f.visit_days_30, risk, act.warning, TierConfig()
        )

    f, (tier, reason) = tiers(winter)
    # 46 calendar days since Jan 16, but only Mar 1, 2, 3 are term days.
    assert f.days_since_visit.tolist() == [46, 92]
    assert f.term_days_since_visit.tolist() == [3, 49]
    # Not churned, not at risk (3 < 7): just no visits in the last 30 days → low_frequency.
    assert tier.tolist() == [LOW, CHURNED]
    assert REASONS[reason[0]] == "visits_rarely"
    # Counted in calendar days the same student would be churned.
    _, (tier, _) = tiers(TermCalendar())
    assert tier.tolist() == [CHURNED, CHURNED]


# ---------------------------------------------------------------- value


def test_worth_recalling_two_of_three():
    # (spend, invites, content) → at least 2 of: spend > 10000 fen, invited, produced content.
    table = [
        ((0, 0, 0), False),
        ((10_001, 0, 0), False),
        ((0, 1, 0), False),
        ((0, 0, 3), False),
        ((10_001, 1, 0), True),
        ((10_001, 0, 1), True),
        ((0, 2, 1), True),
        ((10_001, 1, 1), True),
        ((10_000, 1, 0), False),  # 100 yuan exactly is not *above* the threshold
    ]
    spend, invites, content = (np.array(c) for c in zip(*[c for c, _ in table], strict=True))
    got = worth_recalling(spend, invites, content, 10_000)
    assert got.tolist() == [w for _, w in table]


def test_expected_value_fen():
    # Tenant AOV = (3000 + 1001) / (3 + 1) = 1000.25 fen.
    expected = np.array([2.0, 1.5, 0.25, np.nan])
    spend = np.array([3000, 0, 1001, 0])
    orders = np.array([3, 0, 1, 0])
    got = expected_value_fen(expected, spend, orders)
    # Own AOV 1000 × 2 = 2000; newcomer 1.5 × 1000.25 = 1500.4 → 1500; 0.25 × 1001 = 250.25
    # → 250; NaN expected orders → 0.
    assert got.tolist() == [2000, 1500, 250, 0]
    assert got.dtype == np.int64
    # A tenant where nobody ordered yet values everyone at 0.
    assert expected_value_fen([1.0, 2.0], [0, 0], [0, 0]).tolist() == [0, 0]


# ---------------------------------------------------------------- score_users

TINY_EVENTS = ev(
    [
        # user 0: a buyer visiting often, with an invite and a review
        (0, D - 20, 10, "app_open", 0),
        (0, D - 10, 10, "app_open", 0),
        (0, D - 5, 10, "invite", 0),
        (0, D - 3, 10, "order_paid", 0),
        (0, D - 1, 10, "order_paid", 0),
        (0, D - 1, 11, "review", 0),
        (1, D - 50, 10, "app_open", 0),  # user 1: silent 50 days, 22 of them term days
        (2, D - 2, 10, "app_open", 0),  # user 2: arrived 2 days ago
        (3, D - 100, 10, "app_open", 0),  # user 3: silent 100 days, 72 term days
    ]
)
TINY_ORDERS = od([(0, D - 3, 2000, False), (0, D - 1, 3000, True)])


def test_score_users_tiny_tenant_without_model():
    s = scoring.score_users(TINY_EVENTS, TINY_ORDERS, 4, D, CAL, TierConfig())
    assert s.params is None  # 1 buyer < 30: no fit
    assert np.isnan(s.p_alive).all()
    # Fallback: orders in the last 90 days × 30/90.
    assert s.expected_orders == pytest.approx([2 / 3, 0, 0, 0])
    # Own AOV 2500 fen × 2/3 = 1666.7 → 1667.
    assert s.value_fen.tolist() == [1667, 0, 0, 0]
    # User 0: silent 1, 5 visit days in 30, baseline ≈ 2.9 (no warning) → active;
    # user 1: 22 term days silent → churn_risk; user 2 → new; user 3: 72 → churned.
    assert s.tier.tolist() == [ACTIVE, RISK, NEW, CHURNED]
    assert [REASONS[i] for i in s.reason] == [
        "visits_regularly",
        "silent_term_days",
        "first_seen_recently",
        "silent_long",
    ]
    # Days since visit 1, 50, 2, 100 → R 5, 2, 4, 1; only user 0 ordered → F = M = 5, 1, 1, 1.
    assert s.r.tolist() == [5, 2, 4, 1]
    assert s.f.tolist() == [5, 1, 1, 1]
    assert s.m.tolist() == [5, 1, 1, 1]
    assert [SEGMENT_NAMES[i] for i in s.segment] == [
        "champions",
        "hibernating",
        "promising",
        "lost",
    ]
    # User 0: spend 5000 ≤ 10000 but invited and reviewed → 2 of 3.
    assert s.worth_recalling.tolist() == [True, False, False, False]
    assert s.features.frequency.tolist() == [1, 0, 0, 0]
    assert not s.activity.warning.any()


def test_score_users_with_given_params_or_without_fit():
    params = bgnbd.BgNbdParams(r=0.5, alpha=10.0, a=0.5, b=2.0)
    s = scoring.score_users(TINY_EVENTS, TINY_ORDERS, 4, D, CAL, TierConfig(), params=params)
    assert s.params is params
    # User 0: x = 1, t_x = 2, T = 3 (D−3 → D−1 → D):
    # P(alive) = 1 / (1 + 0.5/2 · (13/12)^1.5) = 1 / (1 + 0.25 · 1.12760) = 0.78010.
    alive0 = 1 / (1 + 0.25 * (13 / 12) ** 1.5)
    assert s.p_alive == pytest.approx([alive0, 1.0, 1.0, 1.0])
    assert s.expected_orders == pytest.approx(
        bgnbd.expected_purchases(params, 30, [1, 0, 0, 0], [2, 0, 0, 0], [3, 22, 2, 72])
    )
    off = scoring.score_users(TINY_EVENTS, TINY_ORDERS, 4, D, CAL, TierConfig(), fit=False)
    assert off.params is None
    assert np.isnan(off.p_alive).all()


def test_no_fit_without_repeat_buyers():
    # 40 buyers with one order each: enough buyers, but nobody repeated → no model.
    events = ev([(u, D - u, 10, "order_paid", 0) for u in range(40)])
    orders = od([(u, D - u, 1000, False) for u in range(40)])
    s = scoring.score_users(events, orders, 40, D, TermCalendar(), TierConfig())
    assert s.params is None
    assert np.isnan(s.p_alive).all()


def synthetic_tenant(seed: int, truth: bgnbd.BgNbdParams, buyers: int, visitors: int):
    """Buyers drawn from BG/NBD on a daily grid (first order T days before D), plus visits.
    Returns events, orders and each buyer's intended (x, t_x, T)."""
    rng = np.random.default_rng(seed)
    big_t = rng.integers(60, 241, buyers)
    x, t_x = bgnbd.simulate(truth, big_t.astype(float), rng)
    last = np.ceil(t_x).astype(np.int64)  # the last repeat's day, counted from the first
    x = np.minimum(x, last)  # at most one order a day (rare with ~0.1 orders a day)
    users, days = [], []
    for i in range(buyers):
        start = D - big_t[i]
        mine = [start]
        if x[i] > 0:
            between = np.arange(start + 1, start + last[i])
            mine += list(rng.choice(between, x[i] - 1, replace=False)) + [start + last[i]]
        users += [i] * len(mine)
        days += mine
    ou, odays = np.array(users, dtype=np.int64), np.array(days, dtype=np.int64)
    # Visitors who never order; and every 10th buyer still opens the app (yesterday) whatever
    # their orders say, so silence alone does not decide their tier.
    browsers = np.arange(0, buyers, 10)
    vu = np.concatenate([np.arange(buyers, buyers + visitors), browsers])
    vd = np.concatenate([D - rng.integers(0, 100, visitors), np.full(browsers.size, D - 1)])
    visitors = vu.size
    n_orders = ou.size
    events = EventColumns(
        user=np.concatenate([ou, vu]),
        day=np.concatenate([odays, vd]),
        hour=np.full(n_orders + visitors, 12),
        kind=np.concatenate(
            [np.full(n_orders, KIND_CODES["order_paid"]), np.full(visitors, 1)]
        ).astype(np.int8),
        duration_s=np.zeros(n_orders + visitors),
    )
    orders = OrderColumns(
        ou, odays, rng.integers(500, 5000, n_orders), np.zeros(n_orders, dtype=bool)
    )
    return events, orders, (x, np.where(x > 0, last, 0), big_t)


def test_score_users_fits_on_a_bigger_tenant():
    truth = bgnbd.BgNbdParams(r=0.8, alpha=8.0, a=0.9, b=3.0)  # days; ~0.1 orders a day
    buyers, visitors = 3000, 500
    events, orders, (x, t_x, big_t) = synthetic_tenant(7, truth, buyers, visitors)
    s = scoring.score_users(events, orders, buyers + visitors, D, TermCalendar(), TierConfig())
    f = s.features

    # The features rebuild exactly the (x, t_x, T) the orders were laid out from.
    assert f.frequency[:buyers].tolist() == x.tolist()
    assert f.recency[:buyers].tolist() == t_x.tolist()
    assert f.T[:buyers].tolist() == big_t.tolist()
    assert (f.frequency[buyers:] == 0).all()

    # The model is fitted on the buyers only (visitors would add fake non-repeaters).
    assert s.params is not None and s.params.converged
    assert s.params.n == buyers
    direct = bgnbd.fit_bgnbd(x, t_x, big_t)
    assert s.params == direct
    # Near the truth. At n = 3000 the standard errors from the observed information are
    # 3%, 4.6%, 6.5% and 9% of r, α, a, b; the bounds are ~4 SE. Rounding purchase times up
    # to whole days moves t_x by < 1 day against T of 60–240 days: small next to that.
    for name, rtol in (("r", 0.15), ("alpha", 0.2), ("a", 0.3), ("b", 0.4)):
        assert getattr(s.params, name) == pytest.approx(getattr(truth, name), rel=rtol), name

    # Everyone gets a probability and a tier; the model's risk feeds the tiers.
    assert np.all((s.p_alive >= 0) & (s.p_alive <= 1))
    assert (s.p_alive[buyers:] == 1.0).all()  # no repeat purchase: alive by the model
    assert s.expected_orders == pytest.approx(
        bgnbd.expected_purchases(s.params, 30, f.frequency, f.recency, f.T)
    )
    assert set(np.unique(s.tier)) <= {NEW, ACTIVE, LOW, RISK, CHURNED}
    flagged = (1 - s.p_alive >= 0.78) & (f.term_days_since_visit < 7)
    assert flagged.sum() > 10  # browsing buyers whose orders stopped long ago
    assert (s.tier[flagged] == RISK).all()
    assert (flagged == (np.array(REASONS)[s.reason] == "low_p_alive")).all()
    # Silence decides the rest: ≥ 30 term days is churned.
    assert (s.tier[f.term_days_since_visit >= 30] == CHURNED).all()
    assert s.value_fen.dtype == np.int64
    assert (s.value_fen >= 0).all()


def test_chronology_helpers_agree_with_datetime():
    # A sanity check on the weekday comments at the top of this file.
    assert date(2026, 3, 10).weekday() == 1  # Tuesday
    for k, weekday in ((2, 6), (3, 5), (30, 6), (45, 5), (60, 4), (39, 4)):
        assert (date(2026, 3, 10) - timedelta(days=k)).weekday() == weekday
