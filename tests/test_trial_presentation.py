"""How a trial reads (issue 15, item 7): a month's effect beside the trial's totals in the
terminal table, `--json` and the HTML report; each policy's holdout power plan and its warning;
and the dashboard's default trial sized so that the presets are told apart."""

from __future__ import annotations

import math

import pytest

from backend.core import paired
from backend.services import simulations
from simulator.html import power_zh, ranking_html, render, verdict_zh, warning_zh
from simulator.run import METRICS, MONTH_DAYS, compare, load_policy, run_simulation
from simulator.terminal import compare_table, summary_table

PRESETS = ("coupon_blast", "tiered", "golden_window")


@pytest.fixture(scope="module")
def small() -> dict:
    """Two presets, 14 trial days: small enough that some pair or holdout is weak."""
    policies = [load_policy(n) for n in ("tiered", "coupon_blast")]
    return compare(policies, 300, 14, 3, warmup=14, replicates=2)


def test_a_month_is_the_trial_total_times_30_over_days(small):
    days = small["config"]["days"]
    k = MONTH_DAYS / days
    assert small["config"]["month_days"] == 30
    assert small["config"]["per_month_scale"] == pytest.approx(k)
    for r in small["ranking"]:
        for m in (*METRICS, "committed_coupon_value"):
            for key in ("value", "lo", "hi"):
                assert r["per_month"][m][key] == pytest.approx(r[m][key] * k, abs=1e-3), (m, key)
            # the totals stay, beside the month
            assert r[m]["lo"] <= r[m]["value"] <= r[m]["hi"]
        assert r["per_month"]["gross_revenue"] == pytest.approx(r["gross_revenue"] * k)
    (v,) = small["verdict"]
    for key, total in (("difference", "difference"), ("lo", "lo"), ("hi", "hi")):
        assert v["per_month"][key] == pytest.approx(v[total] * k, abs=1e-3)
    assert v["per_month"]["min_detectable"] == pytest.approx(v["min_detectable"] * k, abs=1e-3)


def test_the_sentence_and_table_say_a_month_and_how_it_was_scaled(small):
    best = small["ranking"][0]
    students = best["per_month"]["students"]["value"]
    text = small["summary"]
    assert f"brings back about {students:,.0f} more students" in text
    assert (
        "a month than doing nothing (a month = 30 days: the 14-day trial's effect × 30/14" in text
    )
    table = compare_table(small)
    assert table.startswith(text)
    assert "A month (30 days: the 14-day totals above × 30/14" in table
    assert "power plan for tiered's holdout" in table
    zh = verdict_zh(small)
    assert f"比什么都不做每月约多召回 {round(students)} 名学生" in zh
    assert "每月 = 14 天试验的效果 × 30/14" in zh
    (v,) = small["verdict"]
    # The seeded runs tell these two apart: the sentence says who wins, not a tie.
    assert v["significant"] and v["outcome"] == "better" and v["a"] == best["policy"] == "tiered"
    assert "it beats coupon_blast on profit" in text and "cannot be told apart" not in text
    assert "tiered 的利润明显高于 coupon_blast" in zh and "分不出高下" not in zh


@pytest.fixture(scope="module")
def tie() -> dict:
    """The two closest presets on a tiny trial: the seeded run cannot tell them apart."""
    policies = [load_policy(n) for n in ("tiered", "golden_window")]
    return compare(policies, 100, 14, 3, warmup=14, replicates=1)


def test_a_tie_names_the_smallest_resolvable_difference_a_month(tie):
    text, zh = tie["summary"], verdict_zh(tie)
    (v,) = tie["verdict"]
    assert not v["significant"] and v["outcome"] == "cannot_tell"
    least = f"¥{v['per_month']['min_detectable'] / 100:,.0f}"
    assert f"能分辨的最小差异为每月 {least}" in zh
    assert "cannot be told apart" in text and "a month)" in text


def test_the_report_shows_the_month_every_pair_and_the_power_warning_in_chinese(small):
    top = ranking_html(small)
    page = render(small["results"], ranking=top)
    assert "每月多回访学生" in page and "每月增量利润" in page
    assert 'id="pairs"' in page and "这个规模下能分辨的最小差异（每月）" in page
    warned = [r for r in small["ranking"] if r["warning"]]
    assert warned, "a 300-student trial's holdouts are too small for their predicted effects"
    for r in warned:
        said = warning_zh(r["policy"], r["power"])
        assert "测不出它的预期效果" in said
        assert said in top  # beside the ranking
        assert page.count(said) == 2  # and in the policy's own section
    for r in small["ranking"]:
        assert power_zh(r["policy"], r["power"]) in page
        assert r["description"] and r["description"] in page  # the policies' own words
    # Chinese labels, and a percentage point is said in Chinese
    body = page.split("<script")[0]
    assert "个百分点" in body and " pp" not in body
    assert "实际花费" in page and "承诺成本（非实际花费）" not in page  # money spent, drawn


def test_unknowns_are_said_unknown_not_zero():
    from simulator.html import _pp, _pp_true, _rate_n, warning_zh

    assert _rate_n(None, 0) == "未知（n=0）"
    assert _pp({"diff": None, "lo": None, "hi": None, "note": ""}) == "未知"
    assert _pp_true(None) == "未知"
    plan = {"effect": 0.03, "detectable_now": None, "users_needed": None, "users_now": 0}
    assert "只能测出 未知以上" in warning_zh("x", plan) and "无法达到" in warning_zh("x", plan)


def test_simulate_carries_and_prints_its_holdout_power_plan():
    result = run_simulation(load_policy("tiered"), 300, 14, 1, warmup=14)
    plan = result["power"]
    assert plan is not None and plan["holdout_share"] == pytest.approx(0.1)
    assert plan["users_now"] == result["holdout"]["treated"] + result["holdout"]["holdout_users"]
    text = summary_table(result)
    assert "power plan for tiered's holdout (10% held out)" in text
    assert ("warning: tiered's own holdout cannot detect" in text) == bool(result["warning"])
    page = render([result])
    assert power_zh("tiered", plan) in page
    # 300 students for 14 days is too few for tiered's own holdout (seeded): it always warns.
    assert result["warning"] and "warning: tiered's own holdout cannot detect" in text
    assert warning_zh("tiered", plan) in page


# The dashboard's default trial ---------------------------------------------------------------


def test_the_default_size_is_the_smallest_that_resolves_the_closest_presets():
    size = simulations.default_size(4, 28)
    pilot = simulations.PILOT
    # The rule: (z_.975 + z_.8) * sd / sqrt(N * R) <= SAFETY * gap, per student, at 60 days.
    z = paired.min_detectable(1.0)
    need = z * pilot["sd_fen_per_student"] / (simulations.SAFETY * pilot["gap_fen_per_student"])
    assert size.student_runs_needed == math.ceil(need**2)
    assert size.decisive and size.users * size.replicates >= size.student_runs_needed
    assert size.days == pilot["days"] and size.replicates == 1
    assert size.users <= simulations.MAX_USERS and size.seconds <= simulations.TIME_BUDGET_S
    assert size.min_detectable_month_fen <= simulations.SAFETY * size.gap_month_fen + 1
    # the smallest: one step fewer students would not resolve the pair
    smaller = simulations.trial_size(size.users - simulations.USERS_STEP, 60, 1, 4, 28)
    assert not smaller.decisive
    # and the old default (1,000 students, one seed) could not
    assert not simulations.trial_size(1000, 60, 1, 4, 28).decisive


def test_past_the_largest_campus_replicates_make_up_the_student_runs(monkeypatch):
    monkeypatch.setattr(simulations, "MAX_USERS", 2000)
    size = simulations.default_size(4, 28)
    assert size.users <= 2000 and size.replicates == 3 and size.decisive
    monkeypatch.setattr(simulations, "TIME_BUDGET_S", 5)  # a slow machine: the budget wins
    capped = simulations.default_size(4, 28)
    assert not capped.decisive and capped.seconds <= 5


def test_the_default_size_tells_the_presets_apart_on_the_built_in_campus():
    """What the rule promises, run: at the default size every pair of presets is decided."""
    size = simulations.default_size(len(PRESETS), 28)
    out = compare(
        [load_policy(n) for n in PRESETS], size.users, size.days, 0, 28, replicates=size.replicates
    )
    assert [v["outcome"] for v in out["verdict"]] == ["better"] * 3, out["verdict"]
    assert out["ranking"][0]["policy"] == "tiered"
    for v in out["verdict"]:  # the resolvable difference is what the page quotes
        assert v["min_detectable"] < abs(v["difference"])
