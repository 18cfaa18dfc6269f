"""The campaign job on the simulated campus: production's decide, the books it keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.core.policy import parse_policy
from backend.core.policy.allocation import salt_of, stable_unit
from simulator.model import CampusModel
from simulator.touch_log import HELD_OUT, SENT

ROOT = Path(__file__).resolve().parent.parent


def preset(name: str):
    return parse_policy((ROOT / "seeds" / "policies" / f"{name}.yaml").read_text("utf-8"))


def run(policy, users=3000, days=60, seed=1):
    model = CampusModel(users=users, seed=seed, policy=policy)
    for _ in range(days):
        model.step()
    return model


def test_never_more_than_three_touches_in_thirty_days():
    model = run(preset("golden_window"))
    log = model.campaign.log
    user, day, status = log.column("user"), log.column("day"), log.column("status")
    counted = status != 2  # sent and held out count against the cap; skips do not
    assert counted.sum() > 100
    for u in np.unique(user[counted]):
        days = np.sort(day[counted & (user == u)])
        # any 30-day window holds at most 3
        assert all(np.sum((days >= d) & (days < d + 30)) <= 3 for d in days), u


def test_the_holdout_is_the_stable_hash_of_production():
    policy = preset("golden_window")
    model = run(policy)
    log = model.campaign.log
    user, status = log.column("user"), log.column("status")
    key = model.campaign.user_key[user]
    held = stable_unit(key, salt_of(model.campaign.salt, policy.name, "holdout"))
    held = held < policy.holdout_share
    decided = status != 2
    assert np.array_equal(held[decided], status[decided] == HELD_OUT)


def test_subscribe_sends_spend_allowances_and_never_go_below_zero():
    model = run(preset("coupon_blast"))
    for left in model.campaign.permissions.allowance.values():
        assert left.min() >= 0
    log = model.campaign.log
    assert (log.column("status") == SENT).sum() > 0


def test_same_seed_same_decisions():
    a = run(preset("tiered"), users=1500, days=40, seed=3)
    b = run(preset("tiered"), users=1500, days=40, seed=3)
    for column in ("user", "day", "step", "arm", "status"):
        assert np.array_equal(a.campaign.log.column(column), b.campaign.log.column(column))


def test_the_untreated_twin_lives_exactly_the_campus_without_a_policy():
    # Common random numbers: the twin of a campus running a policy is, day for day, the
    # campus that never ran one — so treated minus twin is the policy's true effect.
    with_policy = run(preset("golden_window"), users=1500, days=30, seed=4)
    without = run(None, users=1500, days=30, seed=4)
    assert np.array_equal(with_policy.twin.last_visit, without.state.last_visit)
    assert np.array_equal(with_policy.twin.churned, without.state.churned)


def test_messages_bring_users_back_compared_with_their_twins():
    model = run(preset("coupon_blast"), users=4000, days=75, seed=1)
    log = model.campaign.log
    sent = log.column("status") == SENT
    treated = log.returned[sent].mean()
    untreated = log.returned_twin[sent].mean()  # the same touches, had they not been sent
    assert treated > untreated + 0.01
    # Sleeping dogs who were messaged left sooner than their untouched twins.
    dogs = [p.name for p in model.params.personas].index("sleeping_dog")
    messaged = np.zeros(len(model.state), dtype=bool)
    messaged[log.column("user")[sent]] = True
    mask = messaged & (model.state.persona == dogs)
    assert mask.sum() > 20
    # (Most users have left after 75 days either way; the messaged dogs went sooner, so they
    # visited less than their untouched twins.)
    assert model.state.visits[mask].sum() < model.twin.visits[mask].sum()


def test_simulate_command_writes_the_contract_json_and_is_reproducible(tmp_path):
    import json

    from backend.app import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "TESTING": True})
    outputs = []
    for name in ("a.json", "b.json"):
        path = tmp_path / name
        result = app.test_cli_runner().invoke(
            args=[
                "simulate",
                "--policy",
                "coupon_blast",
                "--users",
                "1500",
                "--days",
                "30",
                "--seed",
                "5",
                "--json",
                str(path),
            ]
        )
        assert result.exit_code == 0, result.output
        assert "effect on recall rate" in result.output
        outputs.append(path.read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1]  # same seed, same numbers
    data = json.loads(outputs[0])
    assert data["config"] == {
        "policy": "coupon_blast",
        "description": "一刀切发券：所有流失用户同一天收到同一张券（用作对照的朴素做法）",
        "users": 1500,
        "days": 30,
        "seed": 5,
        "warmup_days": 28,
    }
    keys = {
        "users",
        "targeted",
        "recalled",
        "recall_rate",
        "retention_d7",
        "retention_d30",
        "messages",
        "coupon_cost",
        "message_cost",
        "revenue",
        "roi",
    }
    assert set(data["arms"]) == {"holdout", "same_coupon"}
    for arm in data["arms"].values():
        assert keys <= set(arm)
    up = data["uplift"]["same_coupon"]
    assert {"diff", "lo", "hi"} <= set(up["recall_rate"]) and "true_uplift" in up
    assert up["recall_rate"]["lo"] <= up["recall_rate"]["diff"] <= up["recall_rate"]["hi"]


def test_an_unknown_policy_is_a_clear_error(tmp_path):
    from backend.app import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "TESTING": True})
    result = app.test_cli_runner().invoke(args=["simulate", "--policy", "nope"])
    assert result.exit_code != 0
    assert "presets" in result.output


def test_compare_ranks_policies_on_the_same_campus(tmp_path):
    import json

    from backend.app import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "TESTING": True})
    path = tmp_path / "cmp.json"
    args = ["compare", "--policy", "coupon_blast", "--policy", "golden_window"]
    args += ["--users", "1200", "--days", "30", "--seed", "2", "--json", str(path)]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    out = json.loads(path.read_text(encoding="utf-8"))
    assert out["config"]["rank_by"] == "profit" and out["config"]["margin"] == 0.2
    ranked = [r["profit"]["value"] for r in out["ranking"]]
    assert ranked == sorted(ranked, reverse=True)
    for r in out["ranking"]:
        for m in ("students", "orders", "revenue", "cost", "profit"):
            assert r[m]["lo"] <= r[m]["value"] <= r[m]["hi"], (r["policy"], m)
        assert r["holdout"]["true_incremental"] is not None
        assert "power" in r
    (verdict,) = out["verdict"]
    assert {verdict["a"], verdict["b"]} == {"coupon_blast", "golden_window"}
    assert verdict["significant"] == (verdict["lo"] > 0 or verdict["hi"] < 0)
    assert verdict["min_detectable"] > 0
    assert out["summary"] in result.output  # the table leads with the verdict
    assert "a month than doing nothing (a month = 30 days" in result.output
    assert {r["policy"] for r in out["ranking"]} == {"coupon_blast", "golden_window"}
    assert [r["config"]["policy"] for r in out["results"]] == ["coupon_blast", "golden_window"]


@pytest.mark.slow
def test_the_holdout_interval_covers_the_true_effect_about_95_percent_of_the_time():
    # The truth is each run's own: treated users' returns minus their untreated twins'.
    # If the interval really is a 95% one, the number of seeds (of 120) whose interval covers
    # the truth is Binomial(120, 0.95): mean 114. Bounds from that distribution, each tail
    # under 0.5%: P(count <= 106) = 0.28% (intervals too narrow, or biased) and
    # P(count = 120) = 0.95**120 = 0.21% (intervals too wide: one that always covers fails).
    # Together a true 95% interval fails here with probability 0.49%; the seeds are fixed,
    # so the count is too (118 today).
    from dataclasses import replace

    from scipy.stats import binom

    from simulator.replicates import replicates
    from simulator.run import load_policy

    seeds, lowest, highest = 120, 107, 119
    assert binom.cdf(lowest - 1, seeds, 0.95) < 0.005 and binom.sf(highest, seeds, 0.95) < 0.005
    policy = replace(load_policy("coupon_blast"), holdout_share=0.5)
    covered, widths = [], []
    runs = replicates(policy, 800, 25, range(seeds), warmup=14)
    assert [r["seed"] for r in runs] == list(range(seeds))
    for run in runs:
        up = run["result"]["uplift"]["same_coupon"]
        est, truth = up["recall_rate"], up["true_uplift"]["recall_rate"]
        covered.append(est["lo"] <= truth <= est["hi"])
        widths.append(est["hi"] - est["lo"])
    assert lowest <= sum(covered) <= highest, sum(covered)
    assert np.mean(widths) < 0.4  # informative intervals, not trivially wide


def test_html_report_is_one_offline_file_with_the_charts(tmp_path):
    import re

    from backend.app import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "TESTING": True})
    path = tmp_path / "report.html"
    args = ["simulate", "--policy", "golden_window", "--users", "1000", "--days", "20"]
    result = app.test_cli_runner().invoke(args=[*args, "--html", str(path)])
    assert result.exit_code == 0, result.output
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for title in ("各组每日活跃用户", "各组召回率", "召回后留存", "累计成本", "护栏"):
        assert title in page
    assert len(re.findall(r'<div class="chart" data-chart="golden_window:', page)) == 6
    # Nothing to fetch: plotly.js and the renderer are inline; no linked scripts, styles, images.
    assert not re.search(r"<script[^>]*\bsrc=|<link|<img", page)
    assert page.count("<script>") == 2 and "Plotly.newPlot" in page
    assert "golden_window" in page and "multi_touch" in page


def test_compare_needs_two_policies(tmp_path):
    from backend.app import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "TESTING": True})
    result = app.test_cli_runner().invoke(args=["compare", "--policy", "tiered"])
    assert result.exit_code != 0 and "at least two" in result.output


def test_defaults_reproduce_the_playbooks_blanket_and_retention_figures():
    """SEED_DIGEST §6, counted as the report counts (recall among the lapsed at decision,
    first decisions, the holdout's lapsed beside): blanket recall ~15%, and coupon-recalled
    students keep about half the D30 retention of content-recalled ones (19% vs 38%). Pooled
    over three seeds, with two-sided bands. Tiered's ~35% is not met (about 4%: its lapsed first
    decisions are the backlog silent 11-28 days at the trial's start, not a response-model
    matter; docs/simulator.md) and is not asserted."""
    from simulator.targets import measure

    runs = [measure(users=4000, days=120, seed=s) for s in (1, 2, 3)]
    mean = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
    assert 0.12 <= mean["blanket_recall"] <= 0.25, runs
    assert mean["blanket_holdout"] < mean["blanket_recall"], runs
    assert 0.35 <= mean["coupon_d30"] / mean["content_d30"] <= 0.75, runs
    assert 0.10 <= mean["coupon_d30"] <= 0.35 and 0.25 <= mean["content_d30"] <= 0.55, runs


def test_the_daily_money_spent_adds_up_to_the_results_cost():
    """The report's cost line draws money actually spent (fees of the messages sent, face
    value of the coupons redeemed) day by day; over the run it is the results' cost, which is
    not the committed value of every coupon sent."""
    from simulator.run import load_policy, run_simulation

    out = run_simulation(load_policy("coupon_blast"), users=800, days=30, seed=2)
    spent = sum(out["daily"]["spent_cost_fen"])
    cost = sum(g["coupon_cost"] + g["message_cost"] for g in out["arms"].values())
    assert spent == cost > 0
    assert spent < sum(out["daily"]["committed_cost_fen"])
