"""Running a simulation for the command line: one policy, its results, a terminal table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from backend.core.policy import Policy, parse_policy
from simulator.model import CampusModel
from simulator.results import summarise

PRESETS = Path(__file__).resolve().parent.parent / "seeds" / "policies"
# The preset policies hand out this coupon; its face value is what a redemption costs.
DEFAULT_COUPONS = {"专属回归券满15减5": 500}


def load_policy(ref: str) -> Policy:
    """A preset name (seeds/policies/NAME.yaml) or a path to a policy file."""
    path = Path(ref)
    if not path.exists():
        path = PRESETS / f"{ref}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        raise ValueError(f"no policy file {ref!r} and no preset of that name; presets: {names}")
    return parse_policy(path.read_text(encoding="utf-8"))


def run_simulation(
    policy: Policy,
    users: int,
    days: int,
    seed: int,
    warmup: int = 28,
    progress: Callable[[int], None] | None = None,
    coupons: dict[str, int] | None = None,
) -> dict:
    faces = dict(DEFAULT_COUPONS if coupons is None else coupons)
    model = CampusModel(
        users=users, seed=seed, policy=policy, coupon_face_fen=faces, warmup_days=warmup
    )
    for _ in range(warmup + days):
        model.step()
        if progress is not None:
            progress(1)
    arms, uplift = summarise(model.campaign, model.day - 1, faces, seed)
    daily = model.datacollector.get_model_vars_dataframe()
    return {
        "config": {
            "policy": policy.name,
            "users": users,
            "days": days,
            "seed": seed,
            "warmup_days": warmup,
        },
        "arms": arms,
        "uplift": uplift,
        "daily": daily.iloc[warmup:].to_dict(orient="list"),
    }


def _pct(x) -> str:
    return "     –" if x is None else f"{100 * x:5.1f}%"


def summary_table(result: dict) -> str:
    c = result["config"]
    lines = [
        f"policy {c['policy']}: {c['users']} simulated users, {c['days']} days after "
        f"{c['warmup_days']} days of history, seed {c['seed']}",
        f"  {'group':<28} {'users':>6} {'recalled':>8} {'rate':>6} {'D7':>6} {'D30':>6} "
        f"{'messages':>8} {'ROI':>6}",
    ]
    for name, g in result["arms"].items():
        roi = "–" if g["roi"] is None else f"{g['roi']:.2f}"
        lines.append(
            f"  {name:<28} {g['users']:>6} {g['recalled']:>8} {_pct(g['recall_rate'])} "
            f"{_pct(g['retention_d7'])} {_pct(g['retention_d30'])} {g['messages']:>8} {roi:>6}"
        )
    lines.append("  effect on recall rate against the holdout (95% interval) vs the truth:")
    for name, u in result["uplift"].items():
        est, truth = u["recall_rate"], u["true_uplift"]["recall_rate"]
        shown = (
            "–"
            if est["diff"] is None
            else f"{100 * est['diff']:+.1f} pp [{100 * est['lo']:+.1f}, {100 * est['hi']:+.1f}]"
        )
        true_text = "–" if truth is None else f"{100 * truth:+.1f} pp"
        note = f"  ({est['note']})" if est["note"] else ""
        lines.append(f"  {name:<28} estimate {shown}; true {true_text}{note}")
    return "\n".join(lines)
