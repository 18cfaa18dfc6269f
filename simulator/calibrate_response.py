"""Response rates fitted to a tenant's touches and holdouts, by simulated moments.

What a touch log shows. Each decided touch (sent, failed, expired, or held out: intention to
treat, as the live report counts) carries the message kind of its arm and step, the user's
tier when decided, whether it was held out, and whether the user came back inside the
attribution window. Each user is counted once per policy, at their first decision (the
counting rule of issue 15: later touches of a journey reach only those the first did not
bring back, in the treated arm and the holdout differently). Within a cell (message kind ×
tier at decision) the holdout is a random share of the same users, so

    observed effect = return rate of the treated − return rate of the holdout.

How the simulator turns a response rate into an effect (simulator/response.py `respond`,
simulator/model.py `_answer`): a sent message is opened with its channel's open rate; an
opened one brings the user back on the day it lands with probability response[persona][kind]
× golden window (days silent) × fatigue (touches of the last 30 days); a user brought back
counts as an effect only if they would not have come back anyway. The persona mix of a tier,
its days of silence and its organic return all shape that, and none can be read off the log
alone — so the expected effect is measured the way the organic parameters are fitted: the
tenant's own policy runs on a simulated campus with the (organically fitted) parameters, and
each first decision's outcome is paired with the untreated twin's (the same user, the same
dice, never messaged): the simulated effect per treated first decision, per cell.

The model scales with the response table: the effect of a kind is (nearly) proportional to
its column. So each kind's column is multiplied by

    factor = Σ_cells n · observed effect / Σ_cells n · simulated effect

(cells of that kind with at least MIN_TOUCHES first decisions on each side; n: treated first
decisions), shrunk towards 1 (the current table) by its precision — a normal prior of sd
PRIOR_SD on the factor — and capped so no rate passes 1; where a rate would pass 1 the
campus is simulated again with the fitted column and the factor corrected once. Open rates,
the golden window and fatigue are kept (a return rate alone cannot separate them from the
response); a kind without a usable cell keeps its column. The tier is not a dimension of the
model's response (personas are): the cells of a kind are fitted jointly, and each cell's own
ratio and interval are reported so a tier the model gets wrong shows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import numpy as np

from backend.core import metrics
from backend.core.calendar import day_date
from backend.core.policy import Policy
from backend.core.policy.spec import CHANNELS, MESSAGE_KINDS
from backend.core.tiers import TIERS, TierConfig
from backend.core.touches import TouchColumns
from simulator.model import CampusModel
from simulator.params import SimParams
from simulator.touch_log import SENT

MIN_TOUCHES = 50  # first decisions on each side (treated, holdout) of a cell
PRIOR_SD = 2.0  # the factor's prior around the current table: ×0..×5 within 2 sd
SIM_USERS = (8_000, 40_000)  # the simulated campus: 4 × the tenant's users, within these


@dataclass(frozen=True)
class Cell:
    """One message kind × tier: the observed and the simulated effect of its first touches."""

    kind: str
    tier: str
    treated: int = 0
    holdout: int = 0
    returned_treated: int = 0
    returned_holdout: int = 0
    sim_n: int = 0  # treated first decisions in the simulated campus
    sim_sum: float = 0.0  # Σ (returned − the twin returned) over them
    sim_sq: float = 0.0  # Σ of their squares (each is −1, 0 or 1): the simulation's noise

    @property
    def usable(self) -> bool:
        """Enough first decisions on each side, and a simulated effect to scale."""
        return self.treated >= MIN_TOUCHES and self.holdout >= MIN_TOUCHES and self.sim_n > 0

    def rates(self) -> tuple[float, float, float, float]:
        """(treated rate, holdout rate, effect, its standard error)."""
        rt = self.returned_treated / max(self.treated, 1)
        rh = self.returned_holdout / max(self.holdout, 1)
        se = np.sqrt(rt * (1 - rt) / max(self.treated, 1) + rh * (1 - rh) / max(self.holdout, 1))
        return rt, rh, rt - rh, float(se)

    @property
    def simulated(self) -> float:
        """The simulated effect per treated first decision (nan if none was simulated)."""
        return self.sim_sum / self.sim_n if self.sim_n else float("nan")

    @property
    def simulated_se(self) -> float:
        """The simulated effect's standard error: the simulated campus's own noise."""
        if self.sim_n < 2:
            return float("nan")
        mean = self.simulated
        return float(np.sqrt(max(self.sim_sq / self.sim_n - mean**2, 0.0) / self.sim_n))

    def add(self, other: Cell) -> Cell:
        """The two cells' counts and sums together."""
        return replace(
            self,
            treated=self.treated + other.treated,
            holdout=self.holdout + other.holdout,
            returned_treated=self.returned_treated + other.returned_treated,
            returned_holdout=self.returned_holdout + other.returned_holdout,
            sim_n=self.sim_n + other.sim_n,
            sim_sum=self.sim_sum + other.sim_sum,
            sim_sq=self.sim_sq + other.sim_sq,
        )


def observed_cells(touches: TouchColumns) -> dict[tuple[str, str], Cell]:
    """Counts per (kind, tier) over the first decisions of `touches`: the observed side of
    each cell, before any simulation.

    Parameters
    ----------
    touches : decided touches with policy, kind, tier, holdout and returned.

    Returns
    -------
    (kind, tier) -> its Cell, with the treated and holdout counts and their returns.
    """
    first = touches.first_decisions()
    kinds, tiers = first.labels("kind"), first.labels("tier")
    cells: dict[tuple[str, str], Cell] = {}
    for kind, tier in sorted(set(zip(kinds.tolist(), tiers.tolist(), strict=True))):
        mine = (kinds == kind) & (tiers == tier)
        t, h = mine & ~first.holdout, mine & first.holdout
        cells[kind, tier] = Cell(
            kind,
            tier,
            int(t.sum()),
            int(h.sum()),
            int(first.returned[t].sum()),
            int(first.returned[h].sum()),
        )
    return cells


def simulated_effects(
    policy: Policy,
    params: SimParams,
    start_day: int,
    first_day: int,
    last_day: int,
    users: int,
    seed: int,
    tier_config: TierConfig | None = None,
) -> dict[tuple[str, str], tuple[int, float, float]]:
    """`policy` run on a campus of `users` with `params`, living from `start_day` (the log's
    first) and deciding from `first_day` to `last_day` (the days the tenant's touches were
    decided); per (kind, tier): treated first decisions, Σ of their paired effects (returned
    − the untreated twin returned, inside the attribution window) and Σ of their squares.
    Nobody is held out: every decision is a treated one (a holdout adds nothing here)."""
    model = CampusModel(
        users=users,
        seed=seed,
        params=params,
        start=day_date(start_day) if not isinstance(start_day, date) else start_day,
        policy=replace(policy, holdout_share=0.0),
        coupon_face_fen={},  # coupon values do not enter the response to a message
        warmup_days=first_day - start_day,
        keep_log=False,
    )
    if tier_config is not None:
        model.tier_config = tier_config
    for _ in range(last_day - start_day + 1 + policy.attribution_window_days + 1):
        model.step()
    log = model.campaign.log

    def col(name: str) -> np.ndarray:
        return log.column(name, skipped=False)

    sent = col("status") == SENT
    sims = TouchColumns(
        user=col("user"),
        day=col("day"),
        step=col("step").astype(np.int64),
        holdout=~sent,
        returned=col("returned").astype(bool),
        channel=col("channel"),
        kind=model.campaign.kind_of(col("arm"), col("step")),
        tier=col("tier"),
        names={"channel": list(CHANNELS), "kind": list(MESSAGE_KINDS), "tier": list(TIERS)},
    )
    effect = col("returned").astype(float) - col("returned_twin").astype(float)
    pick = metrics.first_per_user(sims.user, sims.order())
    pick = pick[~sims.holdout[pick]]
    out: dict[tuple[str, str], tuple[int, float, float]] = {}
    kinds, tiers = sims.labels("kind")[pick], sims.labels("tier")[pick]
    for k, t, e in zip(kinds, tiers, effect[pick], strict=True):
        n, s, q = out.get((k, t), (0, 0.0, 0.0))
        out[k, t] = (n + 1, s + float(e), q + float(e) ** 2)
    return out


def fit_factors(cells: dict[tuple[str, str], Cell]) -> dict[str, dict]:
    """Per message kind: the factor on its column of the response table, from its usable
    cells (see the module's docstring), with the raw ratio, its standard error, the shrunk
    value used and why a kind was kept."""
    out: dict[str, dict] = {}
    for kind in MESSAGE_KINDS:
        mine = [c for c in cells.values() if c.kind == kind]
        use = [c for c in mine if c.usable and c.simulated > 0]
        row: dict = {"cells": len(mine), "cells_used": len(use), "fitted": False}
        out[kind] = row
        if not mine:
            row["why_not"] = "no touches of this kind"
            continue
        if not use:
            row["why_not"] = (
                f"no cell with {MIN_TOUCHES} first decisions on each side and a simulated effect"
            )
            continue
        num = sum(c.treated * c.rates()[2] for c in use)
        den = sum(c.treated * c.simulated for c in use)
        raw = num / den
        # Delta method: the holdout comparison's noise and the simulated campus's.
        var_num = sum((c.treated * c.rates()[3]) ** 2 for c in use)
        var_den = sum((c.treated * c.simulated_se) ** 2 for c in use)
        se = float(np.sqrt(var_num + raw**2 * var_den) / den)
        weight = PRIOR_SD**2 / (PRIOR_SD**2 + se**2)  # precision-weighted towards 1
        factor = max(0.0, 1.0 + weight * (raw - 1.0))
        row.update(
            {
                "treated": sum(c.treated for c in use),
                "holdout": sum(c.holdout for c in use),
                "observed_effect": round(num / sum(c.treated for c in use), 5),
                "simulated_effect": round(den / sum(c.treated for c in use), 5),
                "raw_factor": round(raw, 4),
                "factor_se": round(se, 4),
                "lo": round(raw - metrics.Z95 * se, 4),
                "hi": round(raw + metrics.Z95 * se, 4),
                "shrinkage": round(1.0 - weight, 4),
                "factor": round(factor, 4),
                "fitted": True,
            }
        )
    return out


def scaled_response(
    response: dict[str, tuple[float, ...]], factors: dict[str, dict]
) -> tuple[dict[str, list[float]], bool]:
    """The response table with each fitted kind's column × its factor (rates capped at 1);
    and whether any rate hit the cap."""
    table = {p: list(v) for p, v in response.items()}
    capped = False
    for k, kind in enumerate(MESSAGE_KINDS):
        row = factors.get(kind, {})
        if not row.get("fitted"):
            continue
        for p in table:
            want = table[p][k] * row["factor"]
            capped |= want > 1.0
            table[p][k] = round(float(min(1.0, want)), 4)
    return table, capped


def cell_rows(cells: dict[tuple[str, str], Cell], factors: dict[str, dict]) -> list[dict]:
    """One record per cell for the file and the terminal: n, rates, effect with its
    interval, the simulated effect at the starting table, the cell's own ratio, and whether
    it went into its kind's factor or was left out (and why)."""
    rows = []
    for (kind, tier), c in sorted(cells.items(), key=lambda x: (MESSAGE_KINDS.index(x[0][0]),)):
        rt, rh, eff, se = c.rates()
        sim = c.simulated
        row = {
            "kind": kind,
            "tier": tier,
            "treated": c.treated,
            "holdout": c.holdout,
            "treated_rate": round(rt, 4),
            "holdout_rate": round(rh, 4),
            "effect": round(eff, 4),
            "lo": round(eff - metrics.Z95 * se, 4),
            "hi": round(eff + metrics.Z95 * se, 4),
            "simulated_effect": None if not np.isfinite(sim) else round(sim, 5),
            "simulated_n": c.sim_n,
            "ratio": round(eff / sim, 3) if np.isfinite(sim) and sim > 0 else None,
            "used": bool(c.usable and np.isfinite(sim) and sim > 0),
        }
        if not row["used"]:
            row["why_not"] = (
                f"fewer than {MIN_TOUCHES} first decisions on a side"
                if c.treated < MIN_TOUCHES or c.holdout < MIN_TOUCHES
                else "no simulated effect to scale (nothing opened in the simulated campus)"
            )
        row["kind_factor"] = factors.get(kind, {}).get("factor") if row["used"] else None
        rows.append(row)
    return rows


def fit_response(
    touches: TouchColumns,
    policies: dict[object, Policy],
    params: SimParams,
    start_day: int,
    n_users: int,
    seed: int = 0,
    tier_config: TierConfig | None = None,
) -> tuple[dict, dict]:
    """Fit the response table's columns to the touches (see the module's docstring).

    `policies`: the policies that decided the touches, by their label in `touches.policy`
    (the policy's name for a tenant's touches);
    `params`: the campus the touches are simulated on (the organically fitted one);
    `start_day`: the log's first day. Returns (the `SimParams.response` overrides, the record
    for the file: per kind and per cell)."""
    cells = observed_cells(touches)
    users = int(np.clip(4 * n_users, *SIM_USERS))
    spans = {}
    for code in np.unique(touches.policy).tolist():
        label = touches.names["policy"][code]
        if label in policies:
            days = touches.day[touches.policy == code]
            spans[label] = (int(days.min()), int(days.max()))

    def simulate(p: SimParams) -> dict[tuple[str, str], Cell]:
        out = {key: replace(c, sim_n=0, sim_sum=0.0, sim_sq=0.0) for key, c in cells.items()}
        for pid, (first, last) in spans.items():
            sim = simulated_effects(
                policies[pid], p, start_day, first, last, users, seed, tier_config
            )
            for key, (n, s, q) in sim.items():
                if key in out:
                    c = out[key]
                    out[key] = replace(
                        c, sim_n=c.sim_n + n, sim_sum=c.sim_sum + s, sim_sq=c.sim_sq + q
                    )
        return out

    rp = params.response_params()
    cells = simulate(params)
    factors = fit_factors(cells)
    table, capped = scaled_response(rp.response, factors)
    rounds = 1
    if capped:  # the cap bends the proportionality: correct once on the fitted table
        fitted = replace(params, response={**params.response, "response": table})
        again = simulate(fitted)
        for kind, row in factors.items():
            if not row.get("fitted"):
                continue
            use = [c for c in again.values() if c.kind == kind and c.usable]
            den = sum(c.treated * c.simulated for c in use if c.sim_n)
            num = sum(c.treated * c.rates()[2] for c in use)
            if den > 0:
                row["factor"] = round(max(0.0, row["factor"] * (1 + (num / den - 1))), 4)
        table, _ = scaled_response(rp.response, factors)
        rounds = 2
    overrides = dict(params.response)
    if any(row.get("fitted") for row in factors.values()):
        overrides["response"] = table
    record = {
        "first_decisions": int(sum(c.treated + c.holdout for c in cells.values())),
        "simulated_users": users,
        "rounds": rounds,
        "kinds": factors,
        "cells": cell_rows(cells, factors),
    }
    return overrides, record
