"""Calibration: the simulator's parameters fitted to a tenant's own event log.

`calibrate_tenant` is the one entry (the `calibrate` command, the dashboard's trials): it reads
the tenant's log and touches (simulator/calibrate_load.py), fits the organic parameters
(simulator/calibrate_organic.py, whose docstring says what is fitted from what and what is
kept at its default, and why) and the response rates (simulator/calibrate_response.py), and
records what was fitted and what was kept. simulator/calibrate_text.py writes it for a terminal.
"""

from __future__ import annotations

import json
from dataclasses import replace

from backend.core.calendar import day_date
from backend.core.tiers import TierConfig
from simulator.calibrate_load import load_log, load_touches
from simulator.calibrate_organic import FIT_SEED, fit_organic
from simulator.calibrate_response import fit_response
from simulator.params import SimParams


def tenant_calendar(settings: dict) -> tuple[str, str | None]:
    """The seeds/ calendar file the simulator should live, and a note if it is not the
    tenant's own (the simulator reads calendars from files; inline ones are not used)."""
    spec = settings.get("calendar", SimParams().calendar)
    if isinstance(spec, str):
        return spec, None
    return SimParams().calendar, (
        "the tenant's calendar is written inline in its settings; the simulator uses "
        f"seeds/{SimParams().calendar}"
    )


def calibrate_tenant(tenant, as_of: int, base: SimParams | None = None, seed: int = FIT_SEED):
    """Fit a tenant's simulator parameters from its log up to `as_of` (a day number)."""
    base = base or SimParams()
    settings = json.loads(tenant.settings or "{}")
    calendar, calendar_note = tenant_calendar(settings)
    base = replace(base, calendar=calendar)
    log, user_ids = load_log(tenant.id, as_of)
    params, report = fit_organic(log, base, seed=seed)
    touches, policies = load_touches(tenant.id, as_of, user_ids)
    if touches.holdout.any() and (~touches.holdout).any():
        overrides, record = fit_response(
            touches,
            policies,
            params,
            log.first_day,
            log.n_users,
            seed=seed,
            tier_config=TierConfig.from_settings(settings.get("tiers")),
        )
        response_note: dict | str = record
        if not any(row["fitted"] for row in record["kinds"].values()):
            record["kept_at_defaults"] = "too few first decisions per kind and tier"
    else:
        overrides = dict(params.response)
        response_note = (
            "kept at defaults: no attributed touches with a holdout in the tenant's log"
            if touches.user.size == 0
            else "kept at defaults: the touches have no holdout to compare with"
        )
    first, last = day_date(log.first_day), day_date(log.last_day)
    summary = (
        f"calibrated on {tenant.appid}'s log {first} to {last} "
        f"({log.days} days, {log.visitors()} users)"
    )
    kept = dict(KEPT_AT_DEFAULTS)
    for name, note in report.items():
        if isinstance(note, str):  # order values or sigma kept, and why
            kept[name] = note
    if report["observed"]["exam_ratio"] is None:
        kept["exam_factor"] = "no exam weekdays in the log"
    if report["observed"]["break_ratio"] is None:
        kept["break_factor"] = "no week of break in the log"
    if calendar_note:
        kept["calendar"] = calendar_note
    extra = {
        "summary": summary,
        "calibrated_from": {
            "tenant": tenant.appid,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "days": log.days,
            "users": log.visitors(),
            "visit_days": int(log.visit_day.size),
            "orders": int(log.order_user.size),
            "touches": int(touches.user.size),
            "seed": seed,
        },
        "fit": {k: v for k, v in report.items() if not isinstance(v, str)},
        "kept_at_defaults": kept,
        "response": response_note,
    }
    out = replace(params, response=overrides, extra=extra)
    out.check()
    return out


KEPT_AT_DEFAULTS = {
    "share": "persona shares: six overlapping personas are not separable from visit rates "
    "alone (they differ most in how they answer messages)",
    "start_engagement": "only visit_p × engagement is seen",
    "boost": "confounded with order_p and the half-life",
    "churn_base, churn_slope, revive_p": "a churned user and one whose engagement decayed are "
    "both silent; the decline is fitted as the half-life",
    "persona ratios": "each parameter is one factor over all personas (visit_p, half-life, "
    "order_p, aov, sigma): the ratios between personas are the defaults'",
    "friends": "who is whose friend is not in the event log (invites name the inviter only "
    "once): the friend graph and its pull and hazard are the defaults'",
}
