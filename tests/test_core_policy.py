"""The pure policy layer on small hand-checked cases: policy files (spec), the decision function
and its guard rails (decide, guards), holdout and arm allocation (allocation), and the uplift
learner. Pure numpy: no database, no app fixtures.

Conventions below: a test policy has lapse_after_days 7 and a default user is silent 7 term
days, so its journey day is 0 and a day-0 touch is due; holdout_share is 0 unless a test is
about the holdout, so SEND/SKIPPED are exact.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from scipy.special import expit

from backend.core import seeds
from backend.core.policy import guards
from backend.core.policy.allocation import pick_by_weight, salt_of, stable_unit, thompson
from backend.core.policy.decide import (
    HOLDOUT,
    NOT_DUE,
    NOT_ELIGIBLE,
    REASONS,
    SEND,
    SKIPPED,
    PolicyState,
    UserState,
    decide,
)
from backend.core.policy.spec import (
    CHANNELS,
    IN_APP,
    OA_TEMPLATE,
    SMS,
    SUBSCRIBE,
    PolicyError,
    parse_policy,
)
from backend.core.rfm import SEGMENT_NAMES
from backend.core.tiers import ACTIVE, LOW, RISK
from backend.core.uplift import fit_logistic, fit_two_model, predict_uplift

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(seeds.POLICIES_DIR.glob("*.yaml"))
R = {name: i for i, name in enumerate(REASONS)}
SALT = "tenant-1"
DAY = 20522  # 2026-03-10


def preset(name: str) -> dict:
    return yaml.safe_load((ROOT / "seeds" / "policies" / f"{name}.yaml").read_text("utf-8"))


def load(preset_name: str, /, **changes):
    """A preset policy, with top-level fields replaced."""
    d = preset(preset_name)
    d.update(changes)
    return parse_policy(d)


# --- test data helpers ------------------------------------------------------------------

MESSAGES = {
    "m_sub": {"kind": "reminder", "template_id": "tmpl_sub", "fields": {"thing1": "hi"}},
    "m_oa": {"kind": "caring", "template_id": "tmpl_oa", "fields": {"thing1": "hi"}},
    "m_sms": {"kind": "caring", "text": "come back"},
    "m_app": {"kind": "reminder", "text": "come back"},
}
CHANNEL_MESSAGE = {"subscribe": "m_sub", "oa_template": "m_oa", "sms": "m_sms", "in_app": "m_app"}
# Every subscribe template of the presets and of make_policy, so default users are allowed.
TEMPLATES = ["tmpl_sub", "tmpl_shop_update", "tmpl_coupon_arrived", "tmpl_saved_items"]


def make_policy(channel: str = "oa_template", arms=None, **sections) -> object:
    """A one-arm nightly policy touching on journey day 0 on `channel`; `sections` replace or
    extend top-level sections (dicts are merged one level deep)."""
    d = {
        "name": "test-policy",
        "eligibility": {"tiers": ["low_frequency", "churn_risk"], "max_days_silent": 60},
        "timing": {"lapse_after_days": 7, "send_hour": 12, "grace_days": 1},
        "holdout_share": 0.0,
        "arms": arms
        or [
            {
                "name": "only",
                "touches": [{"day": 0, "channel": channel, "message": CHANNEL_MESSAGE[channel]}],
            }
        ],
        "messages": copy.deepcopy(MESSAGES),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(d.get(key), dict):
            d[key] = {**d[key], **value}
        else:
            d[key] = value
    return parse_policy(d)


def make_users(n: int = 1, **cols) -> UserState:
    """n users, by default churn-risk, silent 7 term days, reachable everywhere with one
    allowance left for every template, no touches yet. Keyword columns override (scalars
    broadcast; `allowance` replaces the whole dict)."""
    col = {
        "user_key": np.arange(n, dtype=np.int64) + 1000,
        "tier": np.full(n, RISK, dtype=np.int8),
        "segment": np.full(n, SEGMENT_NAMES.index("at_risk"), dtype=np.int8),
        "worth_recalling": np.ones(n, dtype=bool),
        "value_fen": np.full(n, 5_000, dtype=np.int64),
        "p_alive": np.full(n, 0.5),
        "term_days_silent": np.full(n, 7, dtype=np.int64),
        "usual_hour": np.full(n, 12, dtype=np.int64),
        "opted_out": np.zeros(n, dtype=bool),
        "last_step": np.full(n, -1, dtype=np.int64),
        "journey_arm": np.full(n, -1, dtype=np.int64),
        "touches_30d": np.zeros(n, dtype=np.int64),
        "channel_week": np.zeros((n, len(CHANNELS)), dtype=np.int64),
        "reachable": np.ones((n, len(CHANNELS)), dtype=bool),
        "ignored_streak": np.zeros(n, dtype=np.int64),
        "days_since_trigger": None,
        "uplift": None,
    }
    allowance = cols.pop("allowance", {t: np.ones(n, dtype=np.int64) for t in TEMPLATES})
    for key, value in cols.items():
        if value is None:
            col[key] = None
            continue
        shape = col[key].shape if col[key] is not None else (n,)
        col[key] = np.broadcast_to(np.asarray(value), shape).copy()
    return UserState(
        user_key=col["user_key"],
        tier=col["tier"],
        segment=col["segment"],
        worth_recalling=col["worth_recalling"],
        value_fen=col["value_fen"],
        p_alive=col["p_alive"],
        term_days_silent=col["term_days_silent"],
        usual_hour=col["usual_hour"],
        opted_out=col["opted_out"],
        last_step=col["last_step"],
        journey_arm=col["journey_arm"],
        touches_30d=col["touches_30d"],
        channel_week=col["channel_week"],
        reachable=col["reachable"],
        allowance=allowance,
        ignored_streak=col["ignored_streak"],
        days_since_trigger=col["days_since_trigger"],
        uplift=col["uplift"],
    )


def week(n: int, **per_channel) -> np.ndarray:
    out = np.zeros((n, len(CHANNELS)), dtype=np.int64)
    for ch, count in per_channel.items():
        out[:, CHANNELS.index(ch)] = count
    return out


def run(policy, users, state=None, *, salt=SALT, day=DAY, seed=0):
    return decide(policy, users, state or PolicyState.fresh(policy), salt=salt, day=day, seed=seed)


def acting(dec) -> np.ndarray:
    return (dec.status == SEND) | (dec.status == HOLDOUT)


def reasons(dec) -> list[str]:
    return [REASONS[r] for r in dec.reason]


# --- parse_policy -----------------------------------------------------------------------

BASE_YAML = """\
name: t
eligibility:
  tiers: [churn_risk]
timing:
  send_hour: 12
arms:
  - name: a
    touches:
      - {day: 0, channel: oa_template, message: m}
messages:
  m:
    kind: caring
    template_id: tmpl
    fields:
      thing1: "hi {days_silent}"
"""


def refused(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    return info.value


def test_every_preset_parses():
    assert len(PRESETS) >= 5
    for path in PRESETS:
        p = parse_policy(path.read_text("utf-8"))
        assert p.name == path.stem
        assert p.touches_per_30d <= 3 and p.per_channel_week[SMS] <= 2
        for arm in p.arms:
            assert [t.day for t in arm.touches] == sorted({t.day for t in arm.touches})
    assert parse_policy(BASE_YAML).messages["m"].template_id == "tmpl"


def test_unknown_field_names_field_and_line():
    text = BASE_YAML.replace("  - name: a\n", "  - name: a\n    colour: red\n")
    assert text.splitlines()[7] == "    colour: red"  # line 8
    err = refused(text)
    assert "line 8" in str(err) and "arms[0].colour" in str(err) and "unknown field" in str(err)
    assert (err.field, err.line) == ("arms[0].colour", 8)
    # and an unknown field at line 7 of a top-level section
    err = refused(BASE_YAML.replace("arms:\n", "caps:\n  per_day: 2\narms:\n", 1))
    assert "line 7" in str(err) and "caps.per_day" in str(err)


def test_wrong_type_names_field_and_line():
    err = refused(BASE_YAML.replace("timing:\n", "holdout_share: lots\ntiming:\n"))
    assert "line 4" in str(err) and "holdout_share" in str(err) and "number" in str(err)


def test_touch_with_unknown_message_is_refused():
    err = refused(BASE_YAML.replace("message: m}", "message: nope}"))
    assert "line 9" in str(err) and "arms[0].touches[0].message" in str(err)
    assert "nope" in str(err)


def test_duplicate_keys_are_refused():
    err = refused(BASE_YAML.replace("  send_hour: 12\n", "  send_hour: 12\n  send_hour: 9\n"))
    assert "line 6" in str(err) and "send_hour" in str(err) and "duplicate" in str(err)


def test_touch_days_must_increase():
    two = (
        "      - {day: 3, channel: oa_template, message: m}\n"
        "      - {day: 3, channel: oa_template, message: m}\n"
    )
    err = refused(BASE_YAML.replace("      - {day: 0, channel: oa_template, message: m}\n", two))
    assert "line 10" in str(err) and "arms[0].touches[1].day" in str(err)


def test_caps_above_playbook_ceilings_are_refused():
    err = refused(BASE_YAML + "caps:\n  touches_per_30d: 4\n")
    assert "line 17" in str(err) and "caps.touches_per_30d" in str(err)
    err = refused(BASE_YAML + "caps:\n  per_channel_week:\n    sms: 3\n")
    assert "line 18" in str(err) and "caps.per_channel_week.sms" in str(err)
    # stricter than the playbook is fine
    p = parse_policy(BASE_YAML + "caps:\n  touches_per_30d: 2\n  per_channel_week: {sms: 1}\n")
    assert p.touches_per_30d == 2 and p.per_channel_week[SMS] == 1
    assert p.per_channel_week[SUBSCRIBE] == 3  # unset channels keep the ceiling


def test_invalid_yaml_gives_the_line():
    err = refused(BASE_YAML.replace("    kind: caring", "    kind: caring: warm"))
    assert "not valid YAML" in str(err) and "line 12" in str(err)
    assert err.line == 12


def test_send_now_needs_a_trigger():
    err = refused(BASE_YAML.replace("send_hour: 12", "send_hour: now"))
    assert "line 5" in str(err) and "timing.send_hour" in str(err)
    triggered = BASE_YAML.replace("send_hour: 12", "send_hour: now")
    p = parse_policy("trigger: {event: payment_failed}\n" + triggered)
    assert p.send_now and p.trigger == "payment_failed"


def test_unknown_placeholder_in_message_field_is_refused():
    err = refused(BASE_YAML.replace("{days_silent}", "{nickname}"))
    assert "line 15" in str(err) and "messages.m.fields.thing1" in str(err)
    assert "{nickname}" in str(err)


# --- eligibility ------------------------------------------------------------------------


def test_opted_out_users_are_never_sent_or_held_out():
    p = make_policy(holdout_share=0.5)
    n = 2_000
    opted = np.arange(n) % 2 == 0
    dec = run(p, make_users(n, opted_out=opted))
    assert not acting(dec)[opted].any()
    assert (dec.status[opted] == NOT_ELIGIBLE).all()
    assert {REASONS[r] for r in dec.reason[opted]} == {"opted_out"}
    # the others go out, both as treated and as holdout
    assert acting(dec)[~opted].all()
    assert dec.count(SEND) > 0 and dec.count(HOLDOUT) > 0


def test_eligibility_filters_name_their_reason():
    p = make_policy(
        eligibility={
            "tiers": ["low_frequency", "churn_risk"],
            "segments": ["at_risk", "cant_lose"],
            "min_days_silent": 7,
            "max_days_silent": 20,
            "worth_recalling": "yes",
            "min_value_fen": 1000,
        }
    )
    seg = SEGMENT_NAMES.index
    cases = [  # (tier, segment, silent, worth, value) -> reason
        ((RISK, seg("at_risk"), 7, True, 5000), ""),
        ((LOW, seg("cant_lose"), 20, True, 1000), ""),
        ((ACTIVE, seg("at_risk"), 7, True, 5000), "tier"),
        ((RISK, seg("champions"), 7, True, 5000), "segment"),
        ((RISK, seg("at_risk"), 6, True, 5000), "silence"),
        ((RISK, seg("at_risk"), 21, True, 5000), "silence"),
        ((RISK, seg("at_risk"), 7, False, 5000), "not_worth"),
        ((RISK, seg("at_risk"), 7, True, 999), "low_value"),
        ((ACTIVE, seg("champions"), 99, False, 0), "tier"),  # the first failed rule
    ]
    cols = list(zip(*[c for c, _ in cases], strict=True))
    n = len(cases)
    dec = run(
        p,
        make_users(
            n,
            tier=cols[0],
            segment=cols[1],
            term_days_silent=cols[2],
            worth_recalling=cols[3],
            value_fen=cols[4],
        ),
    )
    assert reasons(dec) == [r for _, r in cases]
    ok = np.array([r == "" for _, r in cases])
    assert (dec.status[ok] == SEND).all() and (dec.status[~ok] == NOT_ELIGIBLE).all()
    # worth_recalling: "no" is the opposite filter
    q = make_policy(eligibility={"worth_recalling": "no"})
    dec = run(q, make_users(2, worth_recalling=[True, False]))
    assert reasons(dec) == ["not_worth", ""]


# --- guard rails ------------------------------------------------------------------------


def test_touches_per_30d_cap():
    p = make_policy(holdout_share=0.3)
    dec = run(p, make_users(4, touches_30d=[0, 2, 3, 5]))
    assert acting(dec)[:2].all()
    assert list(dec.status[2:]) == [SKIPPED, SKIPPED]
    assert reasons(dec)[2:] == ["capped_30d", "capped_30d"]
    # a stricter policy cap
    q = make_policy(caps={"touches_per_30d": 1})
    assert reasons(run(q, make_users(2, touches_30d=[0, 1]))) == ["", "capped_30d"]


def test_per_channel_weekly_cap():
    p = make_policy("sms")
    n = 3
    dec = run(p, make_users(n, channel_week=week(n, sms=[1, 2, 0], oa_template=[0, 0, 3])))
    assert reasons(dec) == ["", "capped_channel", ""]  # other channels' counts do not matter
    assert list(dec.status) == [SEND, SKIPPED, SEND]
    q = make_policy("oa_template")
    dec = run(q, make_users(2, channel_week=week(2, oa_template=[2, 3])))
    assert reasons(dec) == ["", "capped_channel"]


def test_quiet_hours_defer_to_eight_in_the_morning():
    p = make_policy(timing={"send_hour": "usual"})
    hours = [23, 3, 12, 22, 8, 21, 7, 0]
    dec = run(p, make_users(len(hours), usual_hour=hours))
    assert (dec.status == SEND).all()
    assert list(dec.send_hour) == [8, 8, 12, 8, 8, 21, 8, 8]
    assert list(dec.defer_days) == [1, 0, 0, 1, 0, 0, 0, 0]
    assert list(dec.quiet_deferred) == [True, True, False, True, False, False, True, True]
    # a fixed hour in quiet hours is moved too
    late = make_policy(timing={"send_hour": 22})
    dec = run(late, make_users(1))
    assert (dec.send_hour[0], dec.defer_days[0], dec.quiet_deferred[0]) == (8, 1, True)


def test_next_allowed_ms_respects_china_quiet_hours():
    def ms(*args) -> int:
        return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)

    # 23:30 China = 15:30 UTC -> 08:00 China next day = 00:00 UTC next day
    assert guards.next_allowed_ms(ms(2026, 3, 10, 15, 30)) == ms(2026, 3, 11, 0, 0)
    # 03:00 China (19:00 UTC the day before) -> 08:00 China the same China day
    assert guards.next_allowed_ms(ms(2026, 3, 10, 19, 0)) == ms(2026, 3, 11, 0, 0)
    # 12:00 China = 04:00 UTC: allowed as it is
    noon = ms(2026, 3, 10, 4, 0) + 12_345
    assert guards.next_allowed_ms(noon) == noon
    # 21:59 China is still allowed, 22:00 is not
    assert guards.next_allowed_ms(ms(2026, 3, 10, 13, 59)) == ms(2026, 3, 10, 13, 59)
    assert guards.next_allowed_ms(ms(2026, 3, 10, 14, 0)) == ms(2026, 3, 11, 0, 0)


def test_subscribe_needs_allowance_for_the_template():
    p = make_policy("subscribe")
    n = 3
    dec = run(p, make_users(n, allowance={"tmpl_sub": np.array([1, 0, 2])}))
    assert reasons(dec) == ["", "no_permission", ""]
    # no allowance recorded for that template at all
    dec = run(p, make_users(n, allowance={"tmpl_other": np.ones(n, dtype=np.int64)}))
    assert reasons(dec) == ["no_permission"] * n
    assert (dec.status == SKIPPED).all()


def test_oa_and_sms_need_reachability():
    n = 2
    for channel, col in (("oa_template", OA_TEMPLATE), ("sms", SMS)):
        reach = np.ones((n, len(CHANNELS)), dtype=bool)
        reach[1, col] = False
        dec = run(make_policy(channel), make_users(n, reachable=reach))
        assert reasons(dec) == ["", "no_permission"], channel
    # in-app cards need nothing
    reach = np.zeros((n, len(CHANNELS)), dtype=bool)
    dec = run(make_policy("in_app"), make_users(n, reachable=reach, allowance={}))
    assert (dec.status == SEND).all() and (dec.channel == IN_APP).all()


def test_suppression_after_ignored_touches():
    p = make_policy()
    dec = run(p, make_users(4, ignored_streak=[0, 2, 3, 7]))
    assert reasons(dec) == ["", "", "suppressed", "suppressed"]
    q = make_policy(stop={"suppress_after_ignored": 1})
    assert reasons(run(q, make_users(2, ignored_streak=[0, 1]))) == ["", "suppressed"]


def test_paused_arm_is_stopped():
    arms = [
        {"name": "one", "touches": [{"day": 0, "channel": "oa_template", "message": "m_oa"}]},
        {"name": "two", "touches": [{"day": 0, "channel": "sms", "message": "m_sms"}]},
    ]
    p = make_policy(arms=arms)
    state = PolicyState.fresh(p)
    state.paused[0] = True
    dec = run(p, make_users(400), state)
    one, two = dec.arm == 0, dec.arm == 1
    assert one.sum() > 100 and two.sum() > 100
    assert (dec.status[one] == SKIPPED).all() and {REASONS[r] for r in dec.reason[one]} == {
        "stop_loss"
    }
    assert (dec.status[two] == SEND).all()


def test_stop_loss_on_hand_numbers():
    cost = np.array([100, 400, 400, 1000, 300])
    value = np.array([1000, 1000, 1000, 1000, 1000])
    touches = np.array([100, 100, 49, 50, 100])
    paused = guards.stop_loss(cost, value, touches, ratio=0.3, min_touches=50)
    # 10% of value: fine; 40%: paused; too few touches to judge; 100%: paused; exactly 30%: fine
    assert list(paused) == [False, True, False, True, False]
    # an arm that brought back nothing but cost something is paused once judged
    assert list(guards.stop_loss([1], [0], [50], 0.3, 50)) == [True]


def test_run_budget_goes_to_the_highest_risk_users():
    face = {"welcome_back": 300}
    arms = [
        {
            "name": "coupon",
            "touches": [
                {"day": 0, "channel": "subscribe", "message": "m_sub", "coupon": "welcome_back"}
            ],
        }
    ]
    p = make_policy(arms=arms, caps={"run_budget_fen": 1000})
    n = 8
    p_alive = np.array([0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.4, 0.7])  # risk order: 1 5 3 6 2 7 4 0
    dec = run(p, make_users(n, p_alive=p_alive), PolicyState.fresh(p, face))
    sent = np.flatnonzero(dec.status == SEND)
    assert sorted(sent) == [1, 3, 5]  # three coupons of 3 yuan fit in 10 yuan
    assert dec.cost_fen.sum() == 900 and (dec.cost_fen[sent] == 300).all()
    assert reasons(dec).count("budget") == 5


def test_holdout_costs_nothing_but_is_cut_at_the_same_rank():
    arms = [{"name": "sms", "touches": [{"day": 0, "channel": "sms", "message": "m_sms"}]}]
    p = make_policy(arms=arms, holdout_share=0.5, caps={"run_budget_fen": 50})
    n = 60
    rng = np.random.default_rng(3)
    p_alive = rng.permutation(n) / n
    users = make_users(n, p_alive=p_alive)
    dec = run(p, users)
    by_risk = np.argsort(p_alive)  # highest risk (lowest P(alive)) first
    act = acting(dec)[by_risk]
    cut = int(act.sum())
    assert act[:cut].all() and not act[cut:].any()  # a prefix of the ranking
    assert dec.count(SEND) == 10 and dec.cost_fen.sum() == 50  # 10 SMS at 5 fen
    assert dec.count(HOLDOUT) > 0 and (dec.cost_fen[dec.status == HOLDOUT] == 0).all()
    # beyond the cut, would-be holdout users are skipped for the budget like treated ones
    held = stable_unit(users.user_key, salt_of(SALT, p.name, "holdout")) < 0.5
    beyond = by_risk[cut:]
    assert held[beyond].any() and (~held[beyond]).any()
    assert {REASONS[r] for r in dec.reason[beyond]} == {"budget"}
    assert (dec.status[beyond] == SKIPPED).all()


def test_top_share_targets_the_highest_ranked_new_journeys():
    p = load("uplift")  # rank_by uplift, top_share 0.3, holdout 0.2
    n = 10
    uplift = np.array([0.05, 0.30, np.nan, 0.10, 0.20, 0.00, 0.25, -0.1, 0.15, 0.01])
    dec = run(p, make_users(n, uplift=uplift))
    assert set(np.flatnonzero(acting(dec))) == {1, 6, 4}  # 0.30, 0.25, 0.20
    rest = ~acting(dec)
    assert (dec.status[rest] == SKIPPED).all()
    assert {REASONS[r] for r in dec.reason[rest]} == {"not_targeted"}
    with pytest.raises(ValueError, match="uplift"):
        run(p, make_users(n))


# --- holdout ----------------------------------------------------------------------------


def test_holdout_share_over_many_users():
    p = load("coupon_blast")  # holdout_share 0.1, one arm, no budget
    n = 100_000
    dec = run(p, make_users(n, tier=LOW))
    decided = dec.count(SEND) + dec.count(HOLDOUT)
    assert decided == n
    share = dec.count(HOLDOUT) / decided
    sigma = np.sqrt(0.1 * 0.9 / decided)
    assert abs(share - 0.1) < 4 * sigma


def test_holdout_is_stable_across_days_and_seeds():
    p = load("golden_window")  # thompson: the seed drives arm draws once arms are learnt
    state = PolicyState.fresh(p)
    state.successes[:] = 50
    state.failures[:] = 50
    n = 20_000
    users = make_users(n, term_days_silent=p.lapse_after_days + 1)
    a = run(p, users, state, day=DAY, seed=1)
    b = run(p, users, state, day=DAY + 9, seed=2)
    assert (a.status == HOLDOUT).sum() > 1_500
    np.testing.assert_array_equal(a.status == HOLDOUT, b.status == HOLDOUT)
    assert (a.arm != b.arm).any()  # the draws did change; the holdout did not


def test_holdout_differs_by_policy_name_and_tenant():
    n = 100_000
    users = make_users(n, tier=LOW)
    base = run(load("coupon_blast"), users).status == HOLDOUT
    renamed = run(load("coupon_blast", name="coupon_blast_v2"), users).status == HOLDOUT
    other_tenant = run(load("coupon_blast"), users, salt="tenant-2").status == HOLDOUT
    for other in (renamed, other_tenant):
        assert abs(other.mean() - 0.1) < 0.005
        # roughly independent: of the users held out under one, about 10% under the other
        overlap = (base & other).sum() / base.sum()
        assert abs(overlap - 0.1) < 0.02


def test_holdout_users_pass_the_same_guard_rails():
    p = make_policy(holdout_share=0.5)
    n = 1_000
    capped = run(p, make_users(n, touches_30d=3))
    assert capped.count(HOLDOUT) == 0 and capped.count(SKIPPED) == n
    assert set(reasons(capped)) == {"capped_30d"}
    free = run(p, make_users(n))
    assert 400 < free.count(HOLDOUT) < 600
    # the would-have-sent touch is planned like a real one
    held = free.status == HOLDOUT
    assert (free.step[held] == 0).all() and (free.channel[held] == OA_TEMPLATE).all()
    assert (free.send_hour[held] == 12).all() and (free.cost_fen[held] == 0).all()


def test_arms_are_balanced_inside_and_outside_the_holdout():
    p = load("uplift", targeting={"rank_by": "risk", "top_share": 1.0})  # two equal arms
    n = 40_000
    dec = run(p, make_users(n))
    for group in (SEND, HOLDOUT):
        share_arm0 = (dec.arm[dec.status == group] == 0).mean()
        assert abs(share_arm0 - 0.5) < 0.03


# --- sequences --------------------------------------------------------------------------


def test_golden_window_sequence_steps():
    p = load("golden_window")
    lapse, grace = p.lapse_after_days, p.grace_days
    n_touches = len(p.arms[0].touches)
    silent = [lapse + 1, lapse + 7, lapse + 14, lapse + 7 + grace + 1, lapse + 3, lapse + 14]
    last = [-1, 0, n_touches - 1, 0, 0, 1]  # the step last sent in this journey; -1 none
    arm = [-1, 0, 0, 0, 0, 1]
    dec = run(
        p,
        make_users(6, term_days_silent=silent, last_step=last, journey_arm=arm),
    )
    assert dec.status[0] in (SEND, HOLDOUT) and dec.step[0] == 0
    assert dec.status[1] in (SEND, HOLDOUT) and (dec.step[1], dec.arm[1]) == (1, 0)
    assert dec.channel[1] == SUBSCRIBE  # multi_touch's day-7 touch
    assert dec.status[2] == NOT_DUE and REASONS[dec.reason[2]] == "journey_done"
    assert dec.status[3] == NOT_DUE and REASONS[dec.reason[3]] == "missed"
    assert dec.status[4] == NOT_DUE and REASONS[dec.reason[4]] == "waiting"
    assert dec.status[5] in (SEND, HOLDOUT) and (dec.step[5], dec.arm[5]) == (2, 1)
    assert dec.channel[5] == SUBSCRIBE  # subscribe_only's day-14 touch


def test_late_started_journey_does_not_repeat_a_touch():
    """A user first due on journey day 7 (say capped earlier in the week) starts at the day-7
    touch. The next night, still inside the grace days, that touch is not planned again; the
    day-14 touch follows, once, and the journey is done."""
    p = load("golden_window", holdout_share=0.0)
    lapse = p.lapse_after_days

    def night(jd: int, last: int, arm: int):
        users = make_users(1, term_days_silent=lapse + jd, last_step=last, journey_arm=arm)
        return run(p, users, day=DAY + jd)

    first = night(7, -1, -1)
    assert first.status[0] == SEND and first.step[0] == 1
    arm = int(first.arm[0])
    again = night(8, 1, arm)
    assert again.status[0] == NOT_DUE and REASONS[again.reason[0]] == "waiting"
    last = night(14, 1, arm)
    assert last.status[0] == SEND and (last.step[0], last.arm[0]) == (2, arm)
    after = night(15, 2, arm)
    assert after.status[0] == NOT_DUE and REASONS[after.reason[0]] == "journey_done"


# --- determinism and the bandit ---------------------------------------------------------


def test_same_inputs_and_seed_give_identical_decisions():
    p = load("golden_window")
    state = PolicyState.fresh(p)
    state.successes[:] = [[30, 30, 30, 30, 30], [20, 20, 20, 20, 20]]
    state.failures[:] = 40
    rng = np.random.default_rng(11)
    n = 5_000
    users = make_users(
        n,
        tier=rng.choice([ACTIVE, LOW, RISK], n),
        term_days_silent=rng.integers(5, 30, n),
        usual_hour=rng.integers(0, 24, n),
        touches_30d=rng.integers(0, 4, n),
        p_alive=rng.random(n),
    )
    a = run(p, users, state, seed=5)
    b = run(p, users, state, seed=5)
    for name in a.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    c = run(p, users, state, seed=6)
    assert (a.arm != c.arm).any()


def _bandit_state(p, s0, f0, s1, f1) -> PolicyState:
    state = PolicyState.fresh(p)
    state.successes[0, :], state.failures[0, :] = s0, f0
    state.successes[1, :], state.failures[1, :] = s1, f1
    return state


def test_thompson_policy_sends_most_traffic_to_the_winner():
    p = load("golden_window")  # thompson, floor 0.1, min_samples 30, two arms
    n = 20_000
    tiers = np.where(np.arange(n) % 2 == 0, LOW, RISK)
    users = make_users(n, tier=tiers, term_days_silent=p.lapse_after_days + 1)
    state = _bandit_state(p, 60, 40, 10, 90)  # 60% vs 10% recall, 100 touches each per tier
    dec = run(p, users, state)
    arm = dec.arm[acting(dec)]
    assert arm.size == n
    share1 = (arm == 1).mean()
    assert (arm == 0).mean() > 0.85
    assert share1 > 0.1 - 4 * np.sqrt(0.1 * 0.9 / n)  # keeps about the floor
    assert share1 < 0.13


def test_thompson_policy_follows_fixed_shares_below_min_samples():
    p = load("golden_window")
    n = 20_000
    users = make_users(n, term_days_silent=p.lapse_after_days + 1)
    state = _bandit_state(p, 18, 2, 1, 19)  # 20 touches each: below min_samples 30
    dec = run(p, users, state)
    assert abs((dec.arm[acting(dec)] == 0).mean() - 0.5) < 0.02
    # one tier learnt, the other not
    tiers = np.where(np.arange(n) % 2 == 0, LOW, RISK)
    users = make_users(n, tier=tiers, term_days_silent=p.lapse_after_days + 1)
    state.successes[:, RISK] = [60, 10]
    state.failures[:, RISK] = [40, 90]
    dec = run(p, users, state)
    low, risk = tiers == LOW, tiers == RISK
    assert abs((dec.arm[low] == 0).mean() - 0.5) < 0.03
    assert (dec.arm[risk] == 0).mean() > 0.85


def test_thompson_allocation_alone():
    n = 50_000
    rng = np.random.default_rng(7)
    allowed = np.ones((n, 2), dtype=bool)
    s = np.broadcast_to([60.0, 10.0], (n, 2))
    f = np.broadcast_to([40.0, 90.0], (n, 2))
    arm = thompson(allowed, s, f, 0.1, rng)
    share1 = (arm == 1).mean()
    assert abs(share1 - 0.1) < 0.01  # the loser keeps the floor and no more
    # an even posterior splits evenly; arms not allowed are never picked
    even = thompson(allowed, np.full((n, 2), 50.0), np.full((n, 2), 50.0), 0.1, rng)
    assert abs((even == 0).mean() - 0.5) < 0.01
    only1 = allowed.copy()
    only1[:, 0] = False
    assert (thompson(only1, s, f, 0.1, rng) == 1).all()
    # no floor: the winner takes (almost) everything
    assert (thompson(allowed, s, f, 0.0, rng) == 0).mean() > 0.999


# --- allocation helpers -----------------------------------------------------------------


def test_stable_unit_is_uniform_and_stable():
    keys = np.arange(1, 200_001, dtype=np.int64)
    salt = salt_of("tenant-1", "golden_window", "holdout")
    u = stable_unit(keys, salt)
    assert u.min() >= 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    counts = np.bincount((u * 100).astype(int), minlength=100)
    assert stats.chisquare(counts).pvalue > 1e-3
    # the same for the same key and salt: across calls, key order and key dtype
    np.testing.assert_array_equal(u, stable_unit(keys, salt))
    np.testing.assert_array_equal(u[::-1], stable_unit(keys[::-1], salt))
    np.testing.assert_array_equal(u[:1000], stable_unit(keys[:1000].astype(np.int32), salt))
    assert salt_of("tenant-1", "golden_window", "holdout") == salt
    assert salt_of("tenant-2", "golden_window", "holdout") != salt
    # independent of the salt: another salt reshuffles
    assert abs(np.corrcoef(u, stable_unit(keys, salt_of("x")))[0, 1]) < 0.01


def test_pick_by_weight_respects_weights():
    n = 100_000
    u = stable_unit(np.arange(n), salt_of("pick"))
    w = np.broadcast_to([1.0, 2.0, 0.0, 7.0], (n, 4))
    pick = pick_by_weight(w, u)
    freq = np.bincount(pick, minlength=4) / n
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.0, 0.7], atol=0.006)
    # per row, and zero-weight columns are never chosen even at the edges of u
    rows = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    edges = np.array([0.0, 0.999999, 0.5])
    assert list(pick_by_weight(rows, edges)) == [1, 0, 2]


def test_ignored_streaks_on_a_touch_history():
    # (user, time, ignored), deliberately out of order
    history = [
        (0, 4, True),
        (1, 1, True),
        (0, 1, True),
        (2, 3, False),
        (0, 3, True),
        (1, 2, True),
        (0, 2, False),
        (2, 1, True),
        (1, 3, True),
        (2, 2, True),
        (4, 5, False),
        (4, 6, True),
    ]
    user, when, ignored = (np.array(c) for c in zip(*history, strict=True))
    streak = guards.ignored_streaks(user, when, ignored, n_users=5)
    # 0: answered at t=2, ignored t=3,4 -> 2; 1: all three ignored; 2: answered last -> 0;
    # 3: never touched; 4: answered at t=5, ignored t=6 -> 1
    assert list(streak) == [2, 3, 0, 0, 1]
    assert list(guards.ignored_streaks([], [], [], 3)) == [0, 0, 0]


# --- uplift -----------------------------------------------------------------------------


def test_two_model_uplift_finds_who_is_moved():
    rng = np.random.default_rng(2024)
    n = 40_000
    high = rng.random(n) < 0.5  # treatment helps only these users
    noise = rng.normal(size=n)
    x = np.column_stack([high.astype(float), noise])
    treated = rng.random(n) < 0.5
    logit = -1.0 + np.where(treated & high, 3.0, 0.0)
    returned = rng.random(n) < expit(logit)
    model = fit_two_model(x, treated, returned)
    true_high = expit(2.0) - expit(-1.0)  # 0.61
    up = predict_uplift(model, np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert abs(up[0] - true_high) < 0.04
    assert abs(up[1]) < 0.03
    # ranking: every high-feature user above every other one
    pred = predict_uplift(model, x)
    assert pred[high].min() > pred[~high].max()
    assert model.n_treated == treated.sum() and model.n_control == (~treated).sum()


def test_two_model_needs_enough_outcomes():
    x = np.zeros((30, 2))
    treated = np.arange(30) < 25  # only 5 holdout outcomes
    with pytest.raises(ValueError):
        fit_two_model(x, treated, np.arange(30) % 2 == 0)
    with pytest.raises(ValueError):
        fit_two_model(x, ~treated, np.arange(30) % 2 == 0)


def test_fit_logistic_recovers_known_coefficients():
    rng = np.random.default_rng(99)
    n = 200_000
    beta = np.array([-0.5, 1.0, -2.0, 0.5])
    x = rng.normal(size=(n, 3))
    design = np.column_stack([np.ones(n), x])
    y = rng.random(n) < expit(design @ beta)
    fitted = fit_logistic(x, y)
    # standard errors from the Fisher information at the fit
    p = expit(design @ fitted)
    se = np.sqrt(np.diag(np.linalg.inv((design * (p * (1 - p))[:, None]).T @ design)))
    assert (np.abs(fitted - beta) < 4 * se).all(), (fitted, se)
