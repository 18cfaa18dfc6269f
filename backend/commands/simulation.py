"""Commands that run the simulated campus (docs/simulator.md): `simulate` one policy,
`compare` several, `calibrate` the campus to a tenant's own log, and `run-simulation`, a
queued dashboard trial run here rather than on the task queue (for operators).

The dashboard's trials run as tasks (backend/tasks/trials.py), which may not import the
simulator: this module, which may, hands them `simulator.trial` as a loader (`use_engine`).

The simulator's model and its fits (Mesa and pandas: about 1.2 s and 45 MB more at import, half
again the backend's own) are imported inside the commands that run them, so `init-db`, the
nightly `score`/`run-campaigns` and the server's master process (`serve`), which load every
command, do not pay for them. What needs numpy and the core alone (the parameter file, the
HTML report, the terminal tables, calibration's text and its "not enough history") is imported
here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from backend.commands.arguments import day_and_tenants, now_ms
from backend.core.paired import DEFAULT_MARGIN
from backend.services import simulations
from backend.tasks import trials as trial_tasks
from simulator.calibrate_organic import NotEnoughHistory
from simulator.calibrate_text import describe
from simulator.html import ranking_html, render
from simulator.params import SimParams
from simulator.terminal import compare_table, summary_table

log = logging.getLogger(__name__)

PARAMS_HELP = "campus parameters from `calibrate --out` (default: the built-in personas)"


def trial_engine():
    """The simulator's side of the dashboard's trial, loaded when a trial task first runs."""
    from simulator import trial  # lazy: Mesa (module docstring)

    return trial


trial_tasks.use_engine(trial_engine)


def _write(path: str, text: str, what: str) -> None:
    """Write an output file and say where it went."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    click.echo(f"{what} written to {path}")


def _load_params(path: str | None) -> SimParams | None:
    """A simulator parameter file (`calibrate --out`), or None for the defaults."""
    if path is None:
        return None
    try:
        return SimParams.load(path)
    except FileNotFoundError:
        raise click.ClickException(f"no parameter file {path}") from None
    except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
        raise click.ClickException(f"{path} is not a simulator parameter file: {exc}") from None


def _campus_size(command):
    """--users, --days, --seed and --warmup: the simulated campus's size, length and dice,
    the same options for `simulate` and `compare`."""
    options = [
        click.option("--users", default=2000, show_default=True, type=click.IntRange(10, 10**7)),
        click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650)),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--warmup", default=28, show_default=True, help="days of history first"),
    ]
    for option in reversed(options):  # as if stacked in this order above the command
        command = option(command)
    return command


@click.command("simulate")
@click.option("--policy", "policy_ref", required=True, help="preset name or policy file")
@_campus_size
@click.option("--json", "json_path", default=None, help="write the results to this file")
@click.option("--html", "html_path", default=None, help="write a self-contained HTML report")
@click.option("--params", "params_path", default=None, help=PARAMS_HELP)
@click.option(
    "--e2e",
    is_flag=True,
    help="end to end: users act through the API, the backend's own jobs decide (small N)",
)
@click.option("--e2e-dir", default=None, help="where --e2e keeps its database (instance/e2e)")
@with_appcontext
def simulate(
    policy_ref: str,
    users: int,
    days: int,
    seed: int,
    warmup: int,
    json_path: str | None,
    html_path: str | None,
    params_path: str | None,
    e2e: bool,
    e2e_dir: str | None,
) -> None:
    """One policy against its holdout on a simulated campus (docs/simulator.md)."""
    from simulator.e2e import run_end_to_end  # lazy: Mesa (module docstring)
    from simulator.run import load_policy, policy_path, run_simulation  # lazy: Mesa

    try:
        policy = load_policy(policy_ref)
    except ValueError as exc:  # PolicyError is a ValueError
        raise click.ClickException(str(exc)) from None
    params = _load_params(params_path)
    with click.progressbar(length=warmup + days, label="simulating") as bar:
        if e2e:
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
        _write(html_path, render([result]), "report")


@click.command("compare")
@click.option("--policy", "policy_refs", multiple=True, required=True, help="repeat: 2 or more")
@_campus_size
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
@with_appcontext
def compare_command(
    policy_refs: tuple[str, ...],
    users: int,
    days: int,
    seed: int,
    warmup: int,
    json_path: str | None,
    html_path: str | None,
    params_path: str | None,
    replicates: int,
    rank_by: str,
    margin: float | None,
) -> None:
    """Several policies on the same simulated population and dice, ranked by their paired
    effect against the untreated twin, every pair judged (docs/simulator.md)."""
    from simulator.run import compare, load_policy  # lazy: Mesa (module docstring)

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
        _write(html_path, render(out["results"], ranking=ranking_html(out)), "report")


@click.command("calibrate")
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
@with_appcontext
def calibrate(out_path: str | None, appid: str | None, on: str | None, seed: int) -> None:
    """Fit the simulator's parameters to this tenant's own event log (docs/simulator.md)."""
    from simulator.calibrate import calibrate_tenant  # lazy: Mesa (module docstring)

    day, tenants = day_and_tenants(on, appid, now_ms())
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


@click.command("run-simulation", hidden=True)
@click.argument("run_id", type=int)
@with_appcontext
def run_simulation_worker(run_id: int) -> None:
    """A queued dashboard trial, run in this process (its runs over this machine's cores)
    instead of on the task queue: compare on the tenant's twin, progress into the row. A
    trial cancelled meanwhile stops at its next progress report."""
    from simulator.trial import run_trial  # lazy: Mesa (module docstring)

    try:
        row = simulations.claim(run_id, now_ms())
    except Exception as exc:  # noqa: BLE001 - nothing to record it in but the log
        raise click.ClickException(str(exc)) from None
    try:
        result, page = run_trial(row, lambda frac, twin=None: _report(run_id, frac, twin), now_ms)
    except trial_tasks.Stopped as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any failure is the run's, shown on its page
        log.exception("simulation %s failed", run_id)
        simulations.fail(run_id, f"{type(exc).__name__}: {exc}", now_ms())
        raise click.ClickException(str(exc)) from None
    if not simulations.finish(run_id, result, page, now_ms()):
        raise click.ClickException(f"simulation {run_id} is no longer running")
    click.echo(f"simulation {run_id} done")


def _report(run_id: int, progress: float, twin: dict | None) -> None:
    """`run_trial`'s progress into the row; a run no longer running (cancelled) stops."""
    if not simulations.heartbeat(run_id, progress, now_ms(), twin):
        raise trial_tasks.Stopped(f"simulation {run_id} is no longer running")


COMMANDS = (simulate, compare_command, calibrate, run_simulation_worker)
