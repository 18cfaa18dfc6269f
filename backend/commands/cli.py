"""Command line: `python app.py COMMAND` (the same as `flask --app app COMMAND`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from flask import Flask, current_app

from backend.store import db as store_db
from backend.store.migrations import SchemaTooNew, migrate


def _now_ms() -> int:
    return current_app.config["CLOCK"].now_ms()


def _campaign_text(r: dict) -> str:
    """The job's summary for a terminal: totals, then per policy who gets what."""
    head = "DRY RUN — nothing written or sent\n" if r["dry_run"] else ""
    lines = [
        f"{head}{r['tenant']} {r['date']}: new decisions {r['decided']} (queued {r['queued']}, "
        f"held out {r['held_out']}, skipped {r['skipped']}); delivered now: sent {r['sent']}, "
        f"waiting {r['deferred']}, failed {r['failed']}"
    ]
    if r.get("quiet_hours_now") and not r["dry_run"]:
        lines.append("  it is quiet hours in China (22:00–08:00): messages wait until 08:00")
    if r["skipped_by_reason"]:
        why = ", ".join(f"{k} {v}" for k, v in sorted(r["skipped_by_reason"].items()))
        lines.append(f"  skipped because: {why}")
    for bad in r.get("policies_unreadable", []):
        lines.append(
            f"  policy {bad['policy']} not run: its stored source cannot be read "
            f"({bad['error']}); fix it with PUT /admin/v1/policies/{bad['policy']}"
        )
    for name, p in r["policies"].items():
        lines.append(
            f"  policy {name} decides: {p['send']} send, {p['holdout']} holdout, "
            f"{p['skipped']} skipped (what is already written for today stays as it is)"
        )
        for tier, arms in p["by_tier_arm"].items():
            for arm, c in arms.items():
                lines.append(
                    f"    {tier:<14} {arm:<28} send {c['send']:>6}  holdout {c['holdout']:>5}"
                )
        for s in p.get("sample", []):
            who = "holdout" if s["holdout"] else s["channel"]
            lines.append(
                f"    e.g. {s['user']} ({s['tier']}): {s['arm']} step {s['step']} via {who} "
                f"at {s['send_at']}" + (f" with {s['coupon']}" if s["coupon"] else "")
            )
    return "\n".join(lines)


def _day_and_tenants(on: str | None, appid: str | None, now_ms: int):
    """The China day a command works on (today by default) and the tenants it covers."""
    from backend.core.calendar import china_day
    from backend.errors import ApiError
    from backend.services.scoring import parse_day
    from backend.store.models import Tenant

    try:
        day = parse_day(on, int(china_day(now_ms)))
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    tenants = Tenant.select().order_by(Tenant.id)
    if appid:
        tenants = tenants.where(Tenant.appid == appid)
        if not tenants.exists():
            raise click.ClickException(f"no tenant with appid {appid}")
    return day, list(tenants)


def _write(path: str, text: str, what: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    click.echo(f"{what} written to {path}")


def _day_or_none(text: str | None, now_ms: int) -> int | None:
    from backend.core.calendar import china_day
    from backend.errors import ApiError
    from backend.services.scoring import parse_day

    if text is None:
        return None
    try:
        return parse_day(text, int(china_day(now_ms)))
    except ApiError as exc:
        raise click.ClickException(exc.message) from None


def _load_params(path: str | None):
    """A simulator parameter file (`calibrate --out`), or None for the defaults."""
    if path is None:
        return None
    from simulator.params import SimParams

    try:
        return SimParams.load(path)
    except FileNotFoundError:
        raise click.ClickException(f"no parameter file {path}") from None
    except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
        raise click.ClickException(f"{path} is not a simulator parameter file: {exc}") from None


PARAMS_HELP = "campus parameters from `calibrate --out` (default: the built-in personas)"


def register(app: Flask) -> None:
    from backend.commands import dashboard_trials as cli_dashboard

    cli_dashboard.register(app)

    @app.cli.command("init-db")
    def init_db():
        """Create or migrate the schema at DATABASE_URL (safe to run again)."""
        try:
            before, after = migrate(store_db.database, _now_ms())
        except SchemaTooNew as exc:
            raise click.ClickException(str(exc)) from None
        if before == after:
            click.echo(f"schema already at version {after}")
        else:
            click.echo(f"schema migrated from version {before} to {after}")

    @app.cli.command("seed-demo")
    @click.option("--json", "as_json", is_flag=True, help="print {appid, api_key} as JSON")
    def seed_demo(as_json: bool):
        """Load the demo campus tenant from seeds/ and print its appid and a fresh API key."""
        from backend.services.seeding import load_demo_tenant

        migrate(store_db.database, _now_ms())
        appid, key = load_demo_tenant(_now_ms())
        if as_json:
            click.echo(json.dumps({"appid": appid, "api_key": key}))
        else:
            click.echo(f"appid:   {appid}\napi_key: {key}")

    @app.cli.command("score")
    @click.option("--date", "on", default=None, help="YYYY-MM-DD China date (default: today)")
    @click.option("--tenant", "appid", default=None, help="only this appid (default: all)")
    @click.option("--json", "as_json", is_flag=True, help="print the summaries as JSON")
    def score(on: str | None, appid: str | None, as_json: bool):
        """Compute and store every user's scores and tier for a day (idempotent per day)."""
        from backend.services.scoring import score_tenant

        day, tenants = _day_and_tenants(on, appid, _now_ms())
        results, failed = [], []
        for t in tenants:
            # One tenant's failure must not leave every later tenant unscored.
            try:
                results.append(score_tenant(t, day))
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
            model = r["model"]
            fit = (
                f"BG/NBD r={model['r']:.3g} alpha={model['alpha']:.3g} a={model['a']:.3g} "
                f"b={model['b']:.3g}"
                if model
                else "BG/NBD not fitted (too few buyers)"
            )
            click.echo(f"{r['tenant']} {r['date']}: {r['users']} users; {tiers}; {fit}")
        if failed:
            lines = [f"score failed for {len(failed)} of {len(tenants)} tenants:"]
            lines += [f"  {f['tenant']}: {f['error']}" for f in failed]
            click.echo("\n".join(lines), err=True)
            click.get_current_context().exit(1)

    @app.cli.command("run-campaigns")
    @click.option("--date", "on", default=None, help="YYYY-MM-DD China date (default: today)")
    @click.option("--tenant", "appid", default=None, help="only this appid (default: all)")
    @click.option("--dry-run", is_flag=True, help="decide and show, write and send nothing")
    @click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
    @click.option("--seed", default=0, show_default=True, help="seed of the bandit's draws")
    def run_campaigns(on, appid, dry_run, as_json, seed):
        """The daily recall job: score if needed, decide, queue, deliver. Safe to run twice."""
        from backend.services import delivery
        from backend.services.campaigns import job, run_lock
        from backend.services.channels import channels_for

        now = _now_ms()
        day, tenants = _day_and_tenants(on, appid, now)
        channels = channels_for(current_app)
        retry = delivery.retry_policy(current_app)
        clock = current_app.config["CLOCK"]

        def deliver(tenant, now_ms):
            return delivery.deliver_due(tenant, channels, retry, clock=clock)

        results, failed = [], []
        for tenant in tenants:
            # Each tenant's run is isolated: a failure is recorded (the run row says `failed`
            # and why) and the other tenants still get their nightly sends.
            try:
                results.append(
                    job.run(
                        tenant,
                        day,
                        clock.now_ms(),
                        dry_run=dry_run,
                        seed=seed,
                        deliver=deliver,
                        clock=clock,
                        after_decide=current_app.config.get("CAMPAIGN_AFTER_DECIDE"),
                    )
                )
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
            click.echo(_campaign_text(r))
        if failed:
            lines = [f"run-campaigns failed for {len(failed)} of {len(tenants)} tenants:"]
            lines += [f"  {f['tenant']}: {f['error']}" for f in failed]
            click.echo("\n".join(lines), err=True)
            click.get_current_context().exit(1)

    @app.cli.command("report")
    @click.option("--policy", default=None, help="only this policy (default: all)")
    @click.option("--from", "day_from", default=None, help="first decision day, YYYY-MM-DD")
    @click.option("--to", "day_to", default=None, help="last decision day, YYYY-MM-DD")
    @click.option("--tenant", "appid", default=None, help="only this appid (default: all)")
    @click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
    def report(policy, day_from, day_to, appid, as_json):
        """Recall rate, retention, ROI and incremental effect against the holdout."""
        from backend.commands.report_text import render
        from backend.services.reports import report as build

        now = _now_ms()
        start = _day_or_none(day_from, now)
        end = _day_or_none(day_to, now)
        if start is not None and end is not None and start > end:
            raise click.ClickException("--from is after --to")
        _, tenants = _day_and_tenants(None, appid, now)
        results = []
        for tenant in tenants:
            r = build(tenant.id, policy, start, end)
            r["tenant"] = tenant.appid
            results.append(r)
        if as_json:
            out = results[0] if len(results) == 1 else {"tenants": results}
            click.echo(json.dumps(out, ensure_ascii=False))
            return
        for r in results:
            click.echo(f"{r['tenant']}: " + render(r))

    @app.cli.command("simulate")
    @click.option("--policy", "policy_ref", required=True, help="preset name or policy file")
    @click.option("--users", default=2000, show_default=True, type=click.IntRange(10, 10**7))
    @click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650))
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option("--warmup", default=28, show_default=True, help="days of history first")
    @click.option("--json", "json_path", default=None, help="write the results to this file")
    @click.option("--html", "html_path", default=None, help="write a self-contained HTML report")
    @click.option("--params", "params_path", default=None, help=PARAMS_HELP)
    @click.option(
        "--e2e",
        is_flag=True,
        help="end to end: users act through the API, the backend's own jobs decide (small N)",
    )
    @click.option("--e2e-dir", default=None, help="where --e2e keeps its database (instance/e2e)")
    def simulate(
        policy_ref, users, days, seed, warmup, json_path, html_path, params_path, e2e, e2e_dir
    ):
        """One policy against its holdout on a simulated campus (docs/simulator.md)."""
        from simulator.run import load_policy, policy_path, run_simulation, summary_table

        try:
            policy = load_policy(policy_ref)
        except ValueError as exc:  # PolicyError is a ValueError
            raise click.ClickException(str(exc)) from None
        params = _load_params(params_path)
        with click.progressbar(length=warmup + days, label="simulating") as bar:
            if e2e:
                from simulator.e2e import run_end_to_end

                source = policy_path(policy_ref).read_text(encoding="utf-8")
                folder = Path(e2e_dir or Path(current_app.instance_path) / "e2e")
                try:
                    result = run_end_to_end(
                        policy, source, users, days, seed, warmup, folder, bar.update, params
                    )
                except ValueError as exc:
                    raise click.ClickException(str(exc)) from None
            else:
                result = run_simulation(
                    policy, users, days, seed, warmup, progress=bar.update, params=params
                )
        click.echo(summary_table(result))
        if e2e:
            click.echo(f"end-to-end database: {result['config']['database']}")
        if json_path:
            _write(json_path, json.dumps(result, ensure_ascii=False, indent=2), "results")
        if html_path:
            from simulator.html import render

            _write(html_path, render([result]), "report")

    @app.cli.command("compare")
    @click.option("--policy", "policy_refs", multiple=True, required=True, help="repeat: 2 or more")
    @click.option("--users", default=2000, show_default=True, type=click.IntRange(10, 10**7))
    @click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650))
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option("--warmup", default=28, show_default=True, help="days of history first")
    @click.option("--json", "json_path", default=None, help="write the comparison to this file")
    @click.option("--html", "html_path", default=None, help="write a self-contained HTML report")
    @click.option("--params", "params_path", default=None, help=PARAMS_HELP)
    @click.option(
        "--replicates",
        default=1,
        show_default=True,
        type=click.IntRange(1, 1000),
        help="seeds seed..seed+R-1, pooled: the interval then holds across seeds",
    )
    @click.option(
        "--rank-by",
        "rank_by",
        default="profit",
        show_default=True,
        type=click.Choice(["profit", "students", "revenue"]),
        help="the merchant's objective, measured against the untreated twin",
    )
    @click.option(
        "--margin",
        default=None,
        type=click.FloatRange(0.0, 1.0),
        help="the merchant's margin on extra revenue, for profit (default 0.20)",
    )
    def compare_command(
        policy_refs,
        users,
        days,
        seed,
        warmup,
        json_path,
        html_path,
        params_path,
        replicates,
        rank_by,
        margin,
    ):
        """Several policies on the same simulated population and dice, ranked by their paired
        effect against the untreated twin, every pair judged (docs/simulator.md)."""
        from backend.core.paired import DEFAULT_MARGIN
        from simulator.run import compare, compare_table, load_policy

        if len(policy_refs) < 2:
            raise click.ClickException("compare needs at least two --policy options")
        try:
            policies = [load_policy(ref) for ref in policy_refs]
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        params = _load_params(params_path)
        if len({p.name for p in policies}) != len(policies):
            raise click.ClickException("each policy once: two --policy options name the same")
        total = (warmup + days) * len(policies) * replicates
        with click.progressbar(length=total, label="simulating") as bar:
            out = compare(
                policies,
                users,
                days,
                seed,
                warmup,
                progress=bar.update,
                params=params,
                replicates=replicates,
                rank_by=rank_by,
                margin=DEFAULT_MARGIN if margin is None else margin,
            )
        click.echo(compare_table(out))
        if json_path:
            _write(json_path, json.dumps(out, ensure_ascii=False, indent=2), "comparison")
        if html_path:
            from simulator.html import ranking_html, render

            _write(html_path, render(out["results"], ranking=ranking_html(out)), "report")

    @app.cli.command("calibrate")
    @click.option(
        "--out",
        "out_path",
        default=None,
        help="parameter file to write (default: instance/calibrated_params.json)",
    )
    @click.option("--tenant", "appid", default=None, help="the tenant's appid (if several)")
    @click.option(
        "--on",
        "--date",
        "on",
        default=None,
        help="last day of the log, YYYY-MM-DD China date (default: yesterday, the last whole day)",
    )
    @click.option("--seed", default=0, show_default=True, help="seed of the fit's simulations")
    def calibrate(out_path, appid, on, seed):
        """Fit the simulator's parameters to this tenant's own event log (docs/simulator.md)."""
        from simulator.calibrate import calibrate_tenant
        from simulator.calibrate_organic import NotEnoughHistory
        from simulator.calibrate_text import describe

        now = _now_ms()
        day, tenants = _day_and_tenants(on, appid, now)
        if on is None:
            day -= 1
        if not tenants:
            raise click.ClickException("no tenants: nothing to calibrate")
        if len(tenants) > 1:
            names = ", ".join(t.appid for t in tenants)
            raise click.ClickException(f"{len(tenants)} tenants ({names}): name one with --tenant")
        (tenant,) = tenants
        try:
            params = calibrate_tenant(tenant, day, seed=seed)
        except NotEnoughHistory as exc:
            raise click.ClickException(f"{tenant.appid}: {exc}") from None
        path = out_path or os.path.join(current_app.instance_path, "calibrated_params.json")
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        click.echo(describe(params))
        _write(path, params.to_json(), "parameters")

    @app.cli.command("demo-session")
    def demo_session():
        """A scripted mini-program session against the demo tenant (what `make demo` shows)."""
        from backend.commands.demo import run_session

        run_session(current_app)

    @app.cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=int)
    @click.option("--workers", default=None, type=int, help="processes (default: 2 x CPUs, max 8)")
    def serve(host: str, port: int, workers: int | None):
        """Run the API with gunicorn (threaded workers)."""
        from backend.web.server import run

        count = workers or min(8, 2 * (os.cpu_count() or 1))
        run(host, port, count)
