"""Commands behind the dashboard: its password, and the worker that runs a trial."""

from __future__ import annotations

import json
import logging

import click
from flask import Flask, current_app

log = logging.getLogger(__name__)

TWIN_CACHE_MS = 24 * 3600 * 1000  # a tenant's calibrated twin is reused for a day
PLOTLY_URL = "/admin/assets/plotly.min.js"
RENDER_URL = "/admin/assets/charts.js"


def _now_ms() -> int:
    return current_app.config["CLOCK"].now_ms()


def register(app: Flask) -> None:
    @app.cli.command("set-dashboard-password")
    @click.option("--tenant", "appid", required=True, help="the tenant's appid")
    @click.password_option(help="the new password (asked for when not given)")
    def set_dashboard_password(appid: str, password: str):
        """Set the password that opens this tenant's dashboard at /admin (with its appid)."""
        from backend.errors import ApiError
        from backend.services import tenants

        tenant = tenants.by_appid(appid)
        if tenant is None:
            raise click.ClickException(f"no tenant with appid {appid}")
        try:
            tenants.set_dashboard_password(tenant, password)
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
        click.echo(f"dashboard password set for {appid}; sessions made with the old one end")

    @app.cli.command("run-simulation", hidden=True)
    @click.argument("run_id", type=int)
    def run_simulation(run_id: int):
        """The dashboard's trial worker: compare on the tenant's twin, progress into the row."""
        from backend.services import simulations

        now = _now_ms
        try:
            row = simulations.claim(run_id, now())
        except Exception as exc:  # noqa: BLE001 - nothing to record it in but the log
            raise click.ClickException(str(exc)) from None
        try:
            result, page = _trial(
                row, lambda frac, twin=None: simulations.heartbeat(run_id, frac, now(), twin)
            )
        except Exception as exc:  # noqa: BLE001 - any failure is the run's, shown on its page
            log.exception("simulation %s failed", run_id)
            simulations.fail(run_id, f"{type(exc).__name__}: {exc}", now())
            raise click.ClickException(str(exc)) from None
        simulations.finish(run_id, result, page, now())
        click.echo(f"simulation {run_id} done")


def _trial(row, report) -> tuple[dict, str]:
    """Calibrate (or reuse) the twin, run every policy on it, render the report."""
    from backend.services.policies import parse
    from backend.store.models import CouponTemplate
    from simulator.html import power_zh, ranking_html, render, verdict_zh, warning_zh
    from simulator.run import DEFAULT_COUPONS, compare, load_policy

    request = json.loads(row.request)
    policies = [
        parse(p["source"]) if p.get("source") else load_policy(p["name"])
        for p in request["policies"]
    ]
    params, twin = _twin(row.tenant, request["day"])
    # The tenant's own coupons (face value, minimum spend), beside the presets' coupon.
    coupons = dict(DEFAULT_COUPONS)
    templates = CouponTemplate.select().where(CouponTemplate.tenant == row.tenant_id)
    coupons.update({t.name: (t.amount_off_fen, t.min_spend_fen) for t in templates})
    report(0.0, twin)
    replicates = request.get("replicates", 1)
    total = (request["warmup"] + request["days"]) * len(policies) * replicates
    done = 0
    last = 0.0

    def progress(steps: int) -> None:
        nonlocal done, last
        done += steps
        if done / total - last >= 0.01:  # a write per percent: the page's bar and heartbeat
            last = done / total
            report(min(last, 0.99))

    out = compare(
        policies,
        request["users"],
        request["days"],
        request["seed"],
        request["warmup"],
        progress=progress,
        params=params,
        coupons=coupons,
        replicates=replicates,
    )
    out["twin"] = twin
    # The page's words: the verdict (a month), each policy's holdout power and its warning.
    out["summary_zh"] = verdict_zh(out)
    out["power_zh"] = {r["policy"]: power_zh(r["policy"], r["power"]) for r in out["ranking"]}
    out["warnings_zh"] = {
        r["policy"]: warning_zh(r["policy"], r["power"]) for r in out["ranking"] if r["warning"]
    }
    page = render(out["results"], ranking=ranking_html(out), script_urls=(PLOTLY_URL, RENDER_URL))
    return out, page


def _twin(tenant, day: int):
    """The tenant's calibrated parameters as of the day before `day` (or its last scored day,
    if the log stops earlier), cached for a day; the built-in campus when its log is too short
    to fit (and the page says so)."""
    from backend.services.scoring import latest_day
    from backend.store.models import KeyValue
    from simulator.calibrate import calibrate_tenant
    from simulator.calibrate_organic import NotEnoughHistory
    from simulator.params import SimParams

    as_of = min(day - 1, latest_day(tenant.id) or day - 1)
    key = f"twin:{tenant.id}:{as_of}"
    cached = KeyValue.get_or_none(KeyValue.key == key)
    if cached is not None and (cached.expires_ms or 0) > _now_ms():
        stored = json.loads(cached.value)
        params = SimParams.from_json(stored["params"]) if stored["params"] else None
        return params, stored["twin"]
    try:
        params = calibrate_tenant(tenant, as_of)
        twin = {"source": "calibrated", "note": params.extra.get("summary", "")}
    except NotEnoughHistory as exc:
        params = None
        twin = {"source": "defaults", "note": f"built-in campus: {exc}"}
    value = json.dumps({"params": params.to_json() if params else None, "twin": twin})
    KeyValue.insert(key=key, value=value, expires_ms=_now_ms() + TWIN_CACHE_MS).on_conflict(
        conflict_target=[KeyValue.key],
        update={KeyValue.value: value, KeyValue.expires_ms: _now_ms() + TWIN_CACHE_MS},
    ).execute()
    return params, twin
