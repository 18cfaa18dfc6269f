"""Running a simulation for the command line: one policy, its results, a terminal table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from backend.core import metrics
from backend.core.display import pct as _pct
from backend.core.display import pp, pp_interval, ratio
from backend.core.policy import Policy, parse_policy
from simulator.model import CampusModel
from simulator.params import SimParams
from simulator.results import play

PRESETS = Path(__file__).resolve().parent.parent / "seeds" / "policies"
# The preset policies hand out this coupon; its face value is what a redemption costs.
DEFAULT_COUPONS = {"专属回归券满15减5": (500, 1500)}  # face value, minimum spend


def policy_path(ref: str) -> Path:
    """A preset name (seeds/policies/NAME.yaml) or a path to a policy file."""
    path = Path(ref)
    if not path.exists():
        path = PRESETS / f"{ref}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        raise ValueError(f"no policy file {ref!r} and no preset of that name; presets: {names}")
    return path


def load_policy(ref: str) -> Policy:
    return parse_policy(policy_path(ref).read_text(encoding="utf-8"))


def run_simulation(
    policy: Policy,
    users: int,
    days: int,
    seed: int,
    warmup: int = 28,
    progress: Callable[[int], None] | None = None,
    coupons: dict[str, tuple[int, int]] | None = None,
    params: SimParams | None = None,
) -> dict:
    """`params`: the campus's parameters (a calibrated file, `SimParams.load`); None for the
    defaults. Its response overrides, if any, drive the answers to messages."""
    faces = dict(DEFAULT_COUPONS if coupons is None else coupons)
    model = CampusModel(
        users=users,
        seed=seed,
        policy=policy,
        coupon_face_fen=faces,
        warmup_days=warmup,
        params=params,
    )
    arms, uplift, daily = play(model, warmup + days, progress)
    config = {
        "policy": policy.name,
        "users": users,
        "days": days,
        "seed": seed,
        "warmup_days": warmup,
    }
    if params is not None:
        config["params"] = params.extra.get("summary", "custom parameters")
    return {
        "config": config,
        "arms": arms,
        "uplift": uplift,
        "daily": daily.iloc[warmup:].to_dict(orient="list"),
    }


def summary_table(result: dict) -> str:
    c = result["config"]
    lines = [
        f"policy {c['policy']}: {c['users']} simulated users, {c['days']} days after "
        f"{c['warmup_days']} days of history, seed {c['seed']}",
        f"  {'group':<28} {'users':>6} {'recalled':>8} {'rate':>6} {'D7':>6} {'D30':>6} "
        f"{'messages':>8} {'ROI':>6}",
    ]
    if "params" in c:
        lines.insert(1, f"  campus parameters: {c['params']}")
    for name, g in result["arms"].items():
        roi = ratio(g["roi"])
        lines.append(
            f"  {name:<28} {g['users']:>6} {g['recalled']:>8} {_pct(g['recall_rate'])} "
            f"{_pct(g['retention_d7'])} {_pct(g['retention_d30'])} {g['messages']:>8} {roi:>6}"
        )
    lines.append("  effect on recall rate against the holdout (95% interval) vs the truth:")
    for name, u in result["uplift"].items():
        est, truth = u["recall_rate"], u["true_uplift"]["recall_rate"]
        shown, true_text = pp_interval(est), pp(truth)
        note = f"  ({est['note']})" if est["note"] else ""
        lines.append(f"  {name:<28} estimate {shown}; true {true_text}{note}")
    return "\n".join(lines)


def pooled(result: dict) -> dict:
    """All arms of a policy together: treated users and recalled, against the holdout."""
    arms = [g for name, g in result["arms"].items() if name != "holdout"]
    treated = sum(g["users"] for g in arms)
    recalled = sum(g["recalled"] for g in arms)
    held = result["arms"]["holdout"]
    true = [
        (u["true_uplift"]["recall_rate"], result["arms"][name]["users"])
        for name, u in result["uplift"].items()
        if u["true_uplift"]["recall_rate"] is not None
    ]
    weight = sum(n for _, n in true)
    return {
        "treated": treated,
        "recalled": recalled,
        "incremental": metrics.newcombe_diff(
            recalled, treated, held["recalled"], held["users"]
        ).as_dict(),
        "true_incremental": sum(t * n for t, n in true) / weight if weight else None,
        "messages": sum(g["messages"] for g in arms),
        "cost": sum(g["coupon_cost"] + g["message_cost"] for g in arms),
        "revenue": sum(g["revenue"] for g in arms),
    }


def compare(
    policies: list[Policy],
    users: int,
    days: int,
    seed: int,
    warmup: int = 28,
    progress: Callable[[int], None] | None = None,
    params: SimParams | None = None,
    coupons: dict[str, tuple[int, int]] | None = None,
) -> dict:
    """Every policy on the same population and the same organic dice (same seed), ranked by
    incremental recall against its own holdout; pairs whose difference is not significant
    are said so. `coupons`: name -> (face value, minimum spend) in fen (the presets' by
    default)."""
    results = [
        run_simulation(p, users, days, seed, warmup, progress, coupons, params=params)
        for p in policies
    ]
    rows = [{"policy": r["config"]["policy"], **pooled(r)} for r in results]
    rows.sort(key=lambda r: -(r["incremental"]["diff"] or float("-inf")))
    verdicts = []
    for a, b in zip(rows, rows[1:], strict=False):
        da, db = a["incremental"], b["incremental"]
        if da["diff"] is None or db["diff"] is None:
            continue
        # Two independent holdout estimates: their difference's interval (Newcombe-style
        # square-root combination of each side's half-widths).
        d = da["diff"] - db["diff"]
        lo = d - ((da["diff"] - da["lo"]) ** 2 + (db["hi"] - db["diff"]) ** 2) ** 0.5
        hi = d + ((da["hi"] - da["diff"]) ** 2 + (db["diff"] - db["lo"]) ** 2) ** 0.5
        verdicts.append(
            {
                "better": a["policy"],
                "than": b["policy"],
                "difference": d,
                "lo": lo,
                "hi": hi,
                "significant": lo > 0,
            }
        )
    config = {
        "policies": [p.name for p in policies],
        "users": users,
        "days": days,
        "seed": seed,
        "warmup_days": warmup,
    }
    if params is not None:
        config["params"] = results[0]["config"]["params"]
    return {
        "config": config,
        "ranking": rows,
        "verdicts": verdicts,
        "results": results,
    }


def compare_table(out: dict) -> str:
    c = out["config"]
    lines = [
        f"{len(c['policies'])} policies on the same {c['users']} simulated users and dice, "
        f"{c['days']} days after {c['warmup_days']} of history, seed {c['seed']}",
        f"  {'rank':<4} {'policy':<16} {'treated':>7} {'recall':>7} "
        f"{'incremental recall [95%]':<28} {'true':>8} {'messages':>8} {'cost ¥':>8} "
        f"{'revenue ¥':>10}",
    ]
    if "params" in c:
        lines.insert(1, f"  campus parameters: {c['params']}")
    for i, r in enumerate(out["ranking"], 1):
        est, true = pp_interval(r["incremental"]), pp(r["true_incremental"])
        rate = r["recalled"] / r["treated"] if r["treated"] else None
        lines.append(
            f"  {i:<4} {r['policy']:<16} {r['treated']:>7} {_pct(rate):>7} {est:<28} "
            f"{true:>8} {r['messages']:>8} {r['cost'] / 100:>8.2f} {r['revenue'] / 100:>10.2f}"
        )
    for v in out["verdicts"]:
        verdict = "better" if v["significant"] else "not significantly better"
        lines.append(
            f"  {v['better']} is {verdict} than {v['than']}: {100 * v['difference']:+.1f} pp "
            f"[{100 * v['lo']:+.1f}, {100 * v['hi']:+.1f}]"
        )
    return "\n".join(lines)
