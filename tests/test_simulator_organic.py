"""The organic campus: reproducible, persona mix, decaying engagement, vacations, twins."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date

import numpy as np
import pytest

from backend.core.calendar import day_number
from simulator.campus import DayDraws, PersonaColumns, new_campus, organic_day
from simulator.model import CampusModel
from simulator.params import PERSONAS, Persona, SimParams


def frame(model: CampusModel, days: int):
    for _ in range(days):
        model.step()
    return model.datacollector.get_model_vars_dataframe()


def test_same_seed_same_campus_other_seed_another():
    a = frame(CampusModel(users=3000, seed=7), 40)
    b = frame(CampusModel(users=3000, seed=7), 40)
    c = frame(CampusModel(users=3000, seed=8), 40)
    assert a.equals(b)
    assert not a.equals(c)


def test_persona_mix_follows_the_shares():
    n = 50_000
    state = new_campus(SimParams(), n, np.random.default_rng(1))
    counts = np.bincount(state.persona, minlength=len(PERSONAS))
    for persona, count in zip(PERSONAS, counts, strict=True):
        sd = math.sqrt(n * persona.share * (1 - persona.share))
        assert abs(count - n * persona.share) < 4 * sd, persona.name


def one_persona(**changes) -> SimParams:
    base = replace(PERSONAS[0], share=1.0, **changes)
    return SimParams(personas=(base,), start_engagement=(0.8, 0.8))


def test_engagement_halves_every_half_life_without_good_experiences():
    # No orders, so no boosts: after 2 half-lives of 10 days engagement is 0.8 / 4 = 0.2.
    params = one_persona(half_life_days=10, order_p=0.0, churn_base=0.0, churn_slope=0.0)
    model = CampusModel(users=200, seed=3, params=params)
    frame(model, 20)
    assert np.allclose(model.state.engagement, 0.2)


def test_fading_users_visit_less_and_some_leave():
    params = one_persona(half_life_days=10, order_p=0.0)
    df = frame(CampusModel(users=5000, seed=4, params=params), 42)
    first, last = df["active"].iloc[:7].mean(), df["active"].iloc[-7:].mean()
    assert last < 0.3 * first
    assert df["churned"].iloc[-1] > 0


def test_nobody_leaves_during_a_vacation_and_almost_nobody_visits():
    # Winter break 2026-01-17 .. 2026-03-01 (seeds/campus_calendar.yaml).
    model = CampusModel(users=5000, seed=5, start=date(2026, 1, 12))
    df = frame(model, 20)
    term = df.iloc[:5]  # Mon 12 .. Fri 16 January: exam week, still term
    vacation = df.iloc[5:]
    assert (vacation["left"] == 0).all()
    assert vacation["active"].mean() < 0.15 * term["active"].mean()


def test_weekends_are_quieter():
    df = frame(CampusModel(users=20_000, seed=6), 28)  # four weeks from Monday 2 March
    weekday = df["active"][[i for i in range(28) if i % 7 < 5]].mean()
    weekend = df["active"][[i for i in range(28) if i % 7 >= 5]].mean()
    assert weekend < 0.9 * weekday


def test_a_departed_user_rarely_comes_back_alone():
    # Everybody has left; each day about revive_p (1%) of them come back on their own,
    # at the engagement of someone starting over.
    params = one_persona(revive_p=0.01, churn_base=0.0, churn_slope=0.0)
    rng = np.random.default_rng(9)
    n = 50_000
    state = new_campus(params, n, rng)
    state.churned[:] = True
    cols = PersonaColumns.of(params, state.persona)
    day = day_number(date(2026, 3, 3))
    today = organic_day(state, cols, params, day, 1.0, False, DayDraws.draw(rng, n))
    back = today.revived
    assert abs(back.sum() - 0.01 * n) < 4 * math.sqrt(n * 0.01 * 0.99)
    # They restart at revive_engagement, then live the day: decay, and a boost if they order.
    start = params.revive_engagement * cols.decay + cols.boost * today.ordered
    assert np.allclose(state.engagement[back], start[back])
    assert np.all(~state.churned[back]) and state.churned.sum() == n - back.sum()


def test_twins_with_the_same_draws_live_the_same_day():
    params = SimParams()
    rng = np.random.default_rng(11)
    state = new_campus(params, 4000, rng)
    twin = state.copy()
    cols = PersonaColumns.of(params, state.persona)
    day = day_number(date(2026, 3, 3))
    for d in range(10):
        draws = DayDraws.draw(rng, len(state))
        a = organic_day(state, cols, params, day + d, 1.0, False, draws)
        b = organic_day(twin, cols, params, day + d, 1.0, False, draws)
        assert np.array_equal(a.visited, b.visited) and np.array_equal(a.amount_fen, b.amount_fen)
    assert np.array_equal(state.engagement, twin.engagement)
    # A lift on one twin's visits changes that twin only.
    lift = np.full(len(state), 0.5)
    draws = DayDraws.draw(rng, len(state))
    lifted = organic_day(state, cols, params, day + 10, 1.0, False, draws, visit_lift=lift)
    plain = organic_day(twin, cols, params, day + 10, 1.0, False, draws)
    assert lifted.visited.sum() > plain.visited.sum()
    assert np.all(lifted.visited | ~plain.visited)  # everyone who came anyway still came


def test_params_round_trip_and_refuse_nonsense(tmp_path):
    params = SimParams()
    path = tmp_path / "params.json"
    path.write_text(params.to_json(), encoding="utf-8")
    assert SimParams.load(path) == params
    bad = SimParams(personas=(replace(PERSONAS[0], share=0.5),))
    with pytest.raises(ValueError, match="add up"):
        bad.check()
    worse = SimParams(personas=(Persona("x", 1.0, 1.5, 10, 0.3, 2000, 0.3, 0.1, 0, 0, 0),))
    with pytest.raises(ValueError, match="probability"):
        worse.check()


def test_agents_are_views_of_the_arrays():
    model = CampusModel(users=50, seed=2, with_agents=True)
    frame(model, 5)
    agent = next(iter(model.agents))
    assert agent.engagement == model.state.engagement[agent.row]
    assert agent.persona in {p.name for p in PERSONAS}


def test_the_event_log_holds_what_happened_in_the_backends_shape():
    from backend.core.columns import KIND_CODES

    model = CampusModel(users=2000, seed=12)
    df = frame(model, 30)
    events, orders = model.log.columns()
    assert (events.kind == KIND_CODES["app_open"]).sum() == df["active"].sum()
    assert (events.kind == KIND_CODES["order_paid"]).sum() == df["orders"].sum()
    assert orders.amount_fen.sum() == model.state.spend_fen.sum() == df["revenue_fen"].sum()
    sessions = events.duration_s[events.kind == KIND_CODES["session_end"]]
    assert sessions.size == df["active"].sum() and np.all(sessions > 0)


def test_nightly_scores_come_from_the_production_scoring_function():
    from backend.core.scoring import score_users
    from backend.core.tiers import TIERS

    model = CampusModel(users=1500, seed=13)
    df = frame(model, 45)
    # The DataCollector's tier counts are the last morning's scores.
    last = df.iloc[-1]
    assert [last[f"tier_{t}"] for t in TIERS] == np.bincount(
        model.scores.tier, minlength=len(TIERS)
    ).tolist()
    # Tomorrow morning's job scores the log of every day so far, as production would.
    model.nightly(model.day)
    events, orders = model.log.columns()
    again = score_users(
        events,
        orders,
        1500,
        model.day,
        model.calendar.terms,
        model.tier_config,
        first_seen=model.first_seen,
        last_seen=np.where(model.state.last_visit < 0, model.first_seen, model.state.last_visit),
        params=model.bgnbd,
    )
    assert np.array_equal(again.tier, model.scores.tier)
    seen = model.state.last_visit >= 0
    silent = model.day - model.state.last_visit
    assert np.array_equal(model.scores.features.days_since_visit[seen], silent[seen])


def _two_circles(follows: float, n: int = 20_000):
    """One persona at one engagement. Users 400..half have friends only among a block of
    users who left; users half+400..n only among a block who were out yesterday. The two
    halves throw the same dice (user i and i + half), so any difference is the friends'."""
    persona = replace(PERSONAS[0], name="one", share=1.0, follows_friends=follows)
    params = replace(SimParams(), personas=(persona,))
    state = new_campus(params, n, np.random.default_rng(2))
    day = day_number(date(2026, 3, 10))
    half = n // 2
    gone, around = np.arange(0, 200), np.arange(half, half + 200)
    state.churned[gone] = True
    state.last_visit[around] = day - 1
    state.engagement[:] = 0.4
    k = state.friends.shape[1]
    state.friends[400:half] = gone[np.arange((half - 400) * k) % 200].reshape(-1, k)
    state.friends[half + 400 :] = around[np.arange((half - 400) * k) % 200].reshape(-1, k)
    one = DayDraws.draw(np.random.default_rng(5), half)
    draws = DayDraws(
        *(
            np.concatenate([x, x])
            for x in (one.visit, one.order, one.amount, one.churn, one.session)
        )
    )
    cols = PersonaColumns.of(params, state.persona)
    today = organic_day(state, cols, params, day, 1.0, False, draws)
    return params, today, slice(400, half), slice(half + 400, n)


def test_social_users_follow_their_friends_in_and_out():
    """SEED_DIGEST §1: social users react when more than 15% of their friends leave; and
    friends who were around draw them in."""
    params, today, lonely, friendly = _two_circles(follows=1.0)
    visited_l, visited_f = today.visited[lonely], today.visited[friendly]
    # Friends out yesterday: visit probability × (1 + pull); on the same dice, everyone who
    # came without them comes with them, and more besides.
    assert (visited_f >= visited_l).all()
    p = PERSONAS[0].visit_p * 0.4
    assert visited_l.mean() == pytest.approx(p, abs=0.02)
    assert visited_f.mean() == pytest.approx(p * (1 + params.friend_pull), abs=0.02)
    # All friends gone: the friend hazard on top. On the same dice, among those who stayed
    # in on both sides, whoever left with friends around also left without them.
    both_in = ~visited_l & ~visited_f
    left_l, left_f = today.left[lonely][both_in], today.left[friendly][both_in]
    assert (left_l >= left_f).all()
    assert left_l.mean() - left_f.mean() == pytest.approx(params.friend_leave_hazard, abs=0.008)


def test_users_who_do_not_follow_friends_ignore_them():
    _, today, lonely, friendly = _two_circles(follows=0.0)
    assert (today.visited[lonely] == today.visited[friendly]).all()
    assert (today.left[lonely] == today.left[friendly]).all()


def test_nobody_is_their_own_friend():
    state = new_campus(SimParams(), 5000, np.random.default_rng(3))
    assert state.friends.shape == (5000, SimParams().friends_per_user)
    assert not (state.friends == np.arange(5000)[:, None]).any()
