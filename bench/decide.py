"""The nightly decision for a million users, for each preset nightly policy.

    .venv/bin/python bench/decide.py            # under a minute, no arguments needed

The data (seeded, generated untimed, vectorised numpy), one campus of USERS users:

* Silence: term days since the last visit, 0–90: half the users visited in the last week,
  a third are 7–29 days silent, the rest 30–90. Tiers follow the scoring rules on it:
  churned from 30 days, churn-risk from 7 (plus a few flagged earlier by P(alive) or the
  early warning), otherwise new / active / low-frequency. RFM segments, "worth recalling"
  (~35%), a lognormal future value in fen and P(alive) (Beta, 3% unknown) alongside.
* Usual hours from a meal-time profile with late-night snacking, so quiet hours bite.
* Reach: every user can get in-app cards; ~45% follow the Official Account, ~60% have a
  known phone; each subscribe template has 0–3 allowances left (about a third at 0).
* Caps near their limits: recall touches in the last 30 days 0–3 (a quarter at the cap),
  per-channel counts this week up to each channel's ceiling, ignored streaks 0–5; 2% opted
  out.
* Journeys, per policy: ~30% of the users are mid-journey (an arm serving their tier, 1 to
  that arm's touches already sent: last_step 0 to the arm's last); the rest start fresh.
* The uplift preset gets an uplift column (normal, mean 2 points, some NaN).
* Policy state: no arm paused; for Thompson policies the posteriors are learnt (every arm
  above min_samples in every tier), so the bandit's draws are timed too. Coupon face 5 yuan.

What is timed (median of REPEATS runs each, perf_counter, same process, after an untimed
warm-up call): `decide(policy, users, state, ...)` for each of the nightly presets, and a
baseline in the same run: one plain numpy pass over the same input columns (the eligibility
filters with np.isin and comparisons, the 30-day and weekly caps, reach, allowance, streak
and quiet-hour tests combined into one mask). `ratio_vs_baseline` is the slowest decide over
the baseline: what the whole decision costs next to just reading its inputs once.

The last line of output is one JSON object; the target is decide_1m_s (the slowest preset's
median) under 2 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from timing import timed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.core import seeds  # noqa: E402
from backend.core.policy.decide import (  # noqa: E402
    HOLDOUT,
    SEND,
    SKIPPED,
    STATUSES,
    PolicyState,
    UserState,
    decide,
)
from backend.core.policy.spec import (  # noqa: E402
    CHANNELS,
    MAX_PER_CHANNEL_WEEK,
    SUBSCRIBE,
    Policy,
    parse_policy,
)
from backend.core.rfm import SEGMENT_NAMES  # noqa: E402
from backend.core.tiers import ACTIVE, CHURNED, LOW, NEW, RISK, TIERS  # noqa: E402

SEED = 20260310
USERS = 1_000_000
REPEATS = 3
DAY = 20522  # 2026-03-10, a term-time Tuesday
SALT = "bench-campus"
TARGET_S = 2.0
POLICIES = ["tiered", "golden_window", "coupon_blast", "uplift"]
COUPON_FACE_FEN = 500

# Share of users whose usual China hour is each hour: meals, and late-night snacks.
HOUR_PROFILE = np.array(
    [3, 1.5, 0.7, 0.3, 0.2, 0.3, 1, 4, 5, 3, 4, 9, 10, 5, 3, 3, 4, 8, 9, 6, 5, 6, 6, 5],
    dtype=np.float64,
)
SEGMENT_SHARES = np.array([0.08, 0.12, 0.10, 0.12, 0.06, 0.14, 0.18, 0.20])


def load_policies() -> dict[str, Policy]:
    return {
        name: parse_policy(seeds.preset_path(name).read_text(encoding="utf-8")) for name in POLICIES
    }


def subscribe_templates(policies: dict[str, Policy]) -> list[str]:
    out = set()
    for p in policies.values():
        for arm in p.arms:
            for t in arm.touches:
                if t.channel == SUBSCRIBE:
                    out.add(p.messages[t.message].template_id)
    return sorted(out)


def generate_base(n: int, templates: list[str], rng: np.random.Generator) -> dict:
    """The policy-independent columns, as the module docstring says."""
    band = rng.choice(3, size=n, p=[0.5, 0.33, 0.17])
    silent = np.select(
        [band == 0, band == 1],
        [rng.integers(0, 7, n), rng.integers(7, 30, n)],
        default=rng.integers(30, 91, n),
    ).astype(np.int64)
    p_alive = rng.beta(2.0, 1.5, n)
    p_alive[rng.random(n) < 0.03] = np.nan
    recent = rng.choice([NEW, ACTIVE, LOW], size=n, p=[0.1, 0.5, 0.4])
    flagged = (np.nan_to_num(1 - p_alive) >= 0.78) | (rng.random(n) < 0.03)
    tier = np.select(
        [silent >= 30, silent >= 7, flagged],
        [CHURNED, RISK, RISK],
        default=recent,
    ).astype(np.int8)
    hour = rng.choice(24, size=n, p=HOUR_PROFILE / HOUR_PROFILE.sum())
    reachable = np.ones((n, len(CHANNELS)), dtype=bool)
    reachable[:, CHANNELS.index("oa_template")] = rng.random(n) < 0.45
    reachable[:, CHANNELS.index("sms")] = rng.random(n) < 0.60
    week = np.zeros((n, len(CHANNELS)), dtype=np.int64)
    for i, ch in enumerate(CHANNELS):
        top = MAX_PER_CHANNEL_WEEK[ch]
        weights = 0.5 ** np.arange(top + 1)  # fewer at the cap, but plenty
        week[:, i] = rng.choice(top + 1, size=n, p=weights / weights.sum())
    allowance = {
        t: np.where(rng.random(n) < 0.33, 0, rng.integers(1, 4, n)).astype(np.int64)
        for t in templates
    }
    return {
        "user_key": rng.permutation(np.arange(1, n + 1, dtype=np.int64) * 7 + 100_000),
        "tier": tier,
        "segment": rng.choice(len(SEGMENT_NAMES), size=n, p=SEGMENT_SHARES).astype(np.int8),
        "worth_recalling": rng.random(n) < 0.35,
        "value_fen": np.rint(rng.lognormal(np.log(3000), 1.0, n)).astype(np.int64),
        "p_alive": p_alive,
        "term_days_silent": silent,
        "usual_hour": hour.astype(np.int64),
        "opted_out": rng.random(n) < 0.02,
        "touches_30d": rng.choice(4, size=n, p=[0.35, 0.22, 0.18, 0.25]).astype(np.int64),
        "channel_week": week,
        "reachable": reachable,
        "allowance": allowance,
        "ignored_streak": np.minimum(rng.geometric(0.55, n) - 1, 5).astype(np.int64),
    }


def journeys(policy: Policy, tier: np.ndarray, rng: np.random.Generator):
    """(last_step, journey_arm): ~30% mid-journey on an arm that serves their tier."""
    n = tier.size
    k = len(policy.arms)
    arm = np.full(n, -1, dtype=np.int64)
    last = np.full(n, -1, dtype=np.int64)
    serves = np.zeros((len(TIERS), k), dtype=bool)
    for i, a in enumerate(policy.arms):
        serves[list(a.tiers) if a.tiers else slice(None), i] = True
    ongoing = np.flatnonzero((rng.random(n) < 0.3) & serves[tier].any(axis=1))
    weights = serves[tier[ongoing]].astype(np.float64)
    cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    chosen = np.minimum((cum <= rng.random(ongoing.size)[:, None]).sum(axis=1), k - 1)
    arm[ongoing] = chosen
    n_touches = np.array([len(a.touches) for a in policy.arms])
    last[ongoing] = (rng.random(ongoing.size) * n_touches[chosen]).astype(np.int64)
    return last, arm


def user_state(base: dict, policy: Policy, rng: np.random.Generator) -> UserState:
    last, arm = journeys(policy, base["tier"], rng)
    n = base["tier"].size
    uplift = None
    if policy.rank_by == "uplift":
        uplift = rng.normal(0.02, 0.05, n)
        uplift[rng.random(n) < 0.01] = np.nan
    return UserState(
        user_key=base["user_key"],
        tier=base["tier"],
        segment=base["segment"],
        worth_recalling=base["worth_recalling"],
        value_fen=base["value_fen"],
        p_alive=base["p_alive"],
        term_days_silent=base["term_days_silent"],
        usual_hour=base["usual_hour"],
        opted_out=base["opted_out"],
        last_step=last,
        journey_arm=arm,
        touches_30d=base["touches_30d"],
        channel_week=base["channel_week"],
        reachable=base["reachable"],
        allowance=base["allowance"],
        ignored_streak=base["ignored_streak"],
        days_since_trigger=None,
        uplift=uplift,
    )


def policy_state(policy: Policy, rng: np.random.Generator) -> PolicyState:
    coupons = {t.coupon: COUPON_FACE_FEN for a in policy.arms for t in a.touches if t.coupon}
    state = PolicyState.fresh(policy, coupons)
    if policy.allocation == "thompson":
        trials = rng.integers(policy.bandit_min_samples + 20, 2000, state.successes.shape)
        rates = rng.uniform(0.05, 0.4, state.successes.shape)
        state.successes[:] = np.rint(trials * rates)
        state.failures[:] = trials - state.successes
    return state


def baseline(policy: Policy, u: UserState, template: str) -> np.ndarray:
    """One plain pass over the same input columns: the eligibility mask, the simple caps and
    reach on the policy's first touch channel, and the risk priority."""
    ch = policy.arms[0].touches[0].channel
    silent = u.term_days_silent
    segments = policy.segments or tuple(range(len(SEGMENT_NAMES)))
    mask = ~u.opted_out & np.isin(u.tier, policy.tiers) & np.isin(u.segment, segments)
    mask &= (silent >= policy.min_days_silent) & (silent <= policy.max_days_silent)
    mask &= u.worth_recalling | (policy.worth_recalling != "yes")
    mask &= u.value_fen >= policy.min_value_fen
    mask &= (u.last_step < policy.max_steps) & (u.journey_arm < len(policy.arms))
    mask &= u.touches_30d < policy.touches_per_30d
    mask &= u.ignored_streak < policy.suppress_after_ignored
    mask &= u.channel_week[:, ch] < policy.per_channel_week[ch]
    mask &= u.reachable[:, ch] & (u.allowance[template] > 0)
    mask &= (u.usual_hour >= 8) & (u.usual_hour < 22) & (u.user_key > 0)
    rank = u.uplift if u.uplift is not None else 1.0 - u.p_alive
    mask &= ~(rank < -1)
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed runs, median kept")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    n, repeats = args.users, max(1, args.repeats)

    policies = load_policies()
    templates = subscribe_templates(policies)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    base = generate_base(n, templates, rng)
    inputs = {
        name: (user_state(base, p, rng), policy_state(p, rng)) for name, p in policies.items()
    }
    gen_s = time.perf_counter() - t0
    tiers = np.bincount(base["tier"], minlength=len(TIERS)) / n
    print(
        f"data: {n} users; tiers "
        + ", ".join(f"{t} {s:.1%}" for t, s in zip(TIERS, tiers, strict=True))
        + f"; at the 30-day cap {np.mean(base['touches_30d'] >= 3):.1%}"
        + f"; generated untimed in {gen_s:.1f} s"
    )

    per_policy, base_times, ratios = {}, {}, {}
    for name, p in policies.items():
        users, state = inputs[name]
        template = next(
            (
                p.messages[t.message].template_id
                for a in p.arms
                for t in a.touches
                if t.channel == SUBSCRIBE
            ),
            templates[0],
        )

        def run(p=p, users=users, state=state):
            return decide(p, users, state, salt=SALT, day=DAY, seed=args.seed)

        def plain(p=p, users=users, template=template):
            return baseline(p, users, template)

        run()  # warm-up, untimed
        plain()
        s, all_s, dec = timed(run, repeats)
        b, _, mask = timed(plain, repeats)
        per_policy[name], base_times[name], ratios[name] = s, b, s / b
        counts = {STATUSES[i]: int(c) for i, c in enumerate(np.bincount(dec.status, minlength=5))}
        top = sorted(dec.reason_counts().items(), key=lambda kv: -kv[1])[:4]
        print(
            f"{name}: decide {s:.3f} s ({n / s:,.0f} users/s; runs "
            f"{', '.join(f'{t:.3f}' for t in all_s)}); baseline {b:.3f} s, ratio {s / b:.1f}x; "
            f"send {counts['send']}, holdout {counts['holdout']}, skipped "
            f"{counts['skipped']}, not due {counts['not_due']}; spend "
            f"{int(dec.cost_fen.sum()) / 100:,.2f} yuan; top reasons "
            + ", ".join(f"{k} {v}" for k, v in top)
            + f" (baseline mask {int(mask.sum())})"
        )
        assert dec.count(SEND) + dec.count(HOLDOUT) + dec.count(SKIPPED) > 0, name

    slowest = max(per_policy, key=per_policy.get)
    decide_s = per_policy[slowest]
    ratio = decide_s / base_times[slowest]
    meets = decide_s < TARGET_S
    print(
        f"slowest preset {slowest}: {decide_s:.3f} s for {n} users, {ratio:.1f}x the plain "
        f"numpy pass over its inputs: {'meets' if meets else 'MISSES'} the < {TARGET_S:g} s "
        "target"
    )
    result = {
        "decide_1m_s": round(decide_s, 4),
        "users_per_s": round(n / decide_s),
        "slowest_policy": slowest,
        "policy_s": {k: round(v, 4) for k, v in per_policy.items()},
        "baseline_s": {k: round(v, 4) for k, v in base_times.items()},
        "ratio_vs_baseline": round(ratio, 2),
        "ratio_vs_baseline_per_policy": {k: round(v, 2) for k, v in ratios.items()},
        "users": n,
        "repeats": repeats,
        "seed": args.seed,
        "target_s": TARGET_S,
        "meets_target": bool(meets),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
