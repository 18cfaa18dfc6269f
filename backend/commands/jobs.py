"""The nightly jobs a scheduler runs, and the report they are judged by: `score`,
`run-campaigns`, `report`. Each runs every tenant (or `--tenant`); one tenant's failure is
logged and listed, the others still run, and the command then exits 1.

The services are called through their modules (`scoring.score_tenant`), so a test that
patches one for a tenant (tests/test_job_isolation.py) reaches the job."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from backend.commands.arguments import day_and_tenants, day_or_none, now_ms
from backend.commands.campaign_text import campaign_text
from backend.commands.report_text import render
from backend.services import reports, scoring, telemetry
from backend.services.campaigns import job, nightly, run_lock


def _fail_if_any(command: str, failed: list[dict], tenants: int) -> None:
    """List the tenants that failed on stderr and exit 1 (a scheduler sees the run failed)."""
    if failed:
        lines = [f"{command} failed for {len(failed)} of {tenants} tenants:"]
        lines += [f"  {f['tenant']}: {f['error']}" for f in failed]
        click.echo("\n".join(lines), err=True)
        click.get_current_context().exit(1)


def _fit_text(model: dict | None) -> str:
    """The day's BG/NBD fit in one clause (or why there is none)."""
    if not model:
        return "BG/NBD not fitted (too few buyers)"
    return (
        f"BG/NBD r={model['r']:.3g} alpha={model['alpha']:.3g} a={model['a']:.3g} "
        f"b={model['b']:.3g}"
    )


@click.command("score")
@click.option("--date", "on", default=None, help="YYYY-MM-DD China date (default: today)")
@click.option("--tenant", "appid", default=None, help="only this appid (default: all)")
@click.option("--json", "as_json", is_flag=True, help="print the summaries as JSON")
@with_appcontext
def score(on: str | None, appid: str | None, as_json: bool) -> None:
    """Compute and store every user's scores and tier for a day (idempotent per day)."""
    day, tenants = day_and_tenants(on, appid, now_ms())
    results, failed = [], []
    for t in tenants:
        # One tenant's failure must not leave every later tenant unscored.
        try:
            results.append(scoring.score_tenant(t, day))
        except Exception as exc:
            current_app.logger.exception("score failed for tenant %s", t.appid)
            failed.append({"tenant": t.appid, "error": f"{type(exc).__name__}: {exc}"})
    if as_json:
        click.echo(
            json.dumps(
                {"tenants": results, "failed": failed} if failed else results,
                ensure_ascii=False,
            )
        )
    for r in [] if as_json else results:
        tiers = ", ".join(f"{k} {v}" for k, v in r["tiers"].items())
        click.echo(
            f"{r['tenant']} {r['date']}: {r['users']} users; {tiers}; {_fit_text(r['model'])}"
        )
    _fail_if_any("score", failed, len(tenants))


@click.command("run-campaigns")
@click.option("--date", "on", default=None, help="YYYY-MM-DD China date (default: today)")
@click.option("--tenant", "appid", default=None, help="only this appid (default: all)")
@click.option("--dry-run", is_flag=True, help="decide and show, write and send nothing")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option("--seed", default=0, show_default=True, help="seed of the bandit's draws")
@with_appcontext
def run_campaigns(
    on: str | None, appid: str | None, dry_run: bool, as_json: bool, seed: int
) -> None:
    """The daily recall job: score if needed, decide, queue, deliver. Safe to run twice."""
    day, tenants = day_and_tenants(on, appid, now_ms())
    app = current_app._get_current_object()
    results, failed = [], []
    for tenant in tenants:
        # Each tenant's run is isolated: a failure is recorded (the run row says `failed`
        # and why) and the other tenants still get their nightly sends.
        try:
            with telemetry.job_timer("run-campaigns"):
                summary = nightly.run_for_app(app, tenant, day, dry_run=dry_run, seed=seed)
            results.append(summary)
        except Exception as exc:
            if not isinstance(exc, run_lock.JobLocked):
                current_app.logger.exception("run-campaigns failed for tenant %s", tenant.appid)
            failed.append({"tenant": tenant.appid, "error": job.failure_reason(exc)})
    if as_json:
        out = results[0] if len(results) == 1 else {"tenants": results}
        if failed:
            out = {"tenants": results, "failed": failed}
        click.echo(json.dumps(out, ensure_ascii=False))
    for r in [] if as_json else results:
        click.echo(campaign_text(r))
    _fail_if_any("run-campaigns", failed, len(tenants))


@click.command("report")
@click.option("--policy", default=None, help="only this policy (default: all)")
@click.option("--from", "day_from", default=None, help="first decision day, YYYY-MM-DD")
@click.option("--to", "day_to", default=None, help="last decision day, YYYY-MM-DD")
@click.option("--tenant", "appid", default=None, help="only this appid (default: all)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@with_appcontext
def report(
    policy: str | None, day_from: str | None, day_to: str | None, appid: str | None, as_json: bool
) -> None:
    """Recall rate, retention, ROI and incremental effect against the holdout."""
    now = now_ms()
    start = day_or_none(day_from, now)
    end = day_or_none(day_to, now)
    if start is not None and end is not None and start > end:
        raise click.ClickException("--from is after --to")
    _, tenants = day_and_tenants(None, appid, now)
    results = []
    for tenant in tenants:
        r = reports.report(tenant.id, policy, start, end)
        r["tenant"] = tenant.appid
        results.append(r)
    if as_json:
        out = results[0] if len(results) == 1 else {"tenants": results}
        click.echo(json.dumps(out, ensure_ascii=False))
        return
    for r in results:
        click.echo(f"{r['tenant']}: " + render(r))


COMMANDS = (score, run_campaigns, report)
