"""Commands that set up and run the service: the schema, the server, the demo tenant and its
scripted session, a dashboard password."""

from __future__ import annotations

import json
import os

import click
from flask import current_app
from flask.cli import with_appcontext

from backend.commands.arguments import now_ms
from backend.commands.demo import run_session
from backend.errors import ApiError
from backend.services import seeding, telemetry, tenants
from backend.store import db as store_db
from backend.store.migrations import SchemaTooNew, migrate
from backend.web import logging_setup
from backend.web.server import run


@click.command("init-db")
@with_appcontext
def init_db() -> None:
    """Create or migrate the schema at DATABASE_URL (safe to run again)."""
    try:
        before, after = migrate(store_db.database, now_ms())
    except SchemaTooNew as exc:
        raise click.ClickException(str(exc)) from None
    if before == after:
        click.echo(f"schema already at version {after}")
    else:
        click.echo(f"schema migrated from version {before} to {after}")


@click.command("seed-demo")
@click.option("--json", "as_json", is_flag=True, help="print {appid, api_key} as JSON")
@with_appcontext
def seed_demo(as_json: bool) -> None:
    """Load the demo campus tenant from seeds/ and print its appid and a fresh API key."""
    migrate(store_db.database, now_ms())
    appid, key = seeding.load_demo_tenant(now_ms())
    if as_json:
        click.echo(json.dumps({"appid": appid, "api_key": key}))
    else:
        click.echo(f"appid:   {appid}\napi_key: {key}")


@click.command("set-dashboard-password")
@click.option("--tenant", "appid", required=True, help="the tenant's appid")
@click.password_option(help="the new password (asked for when not given)")
@with_appcontext
def set_dashboard_password(appid: str, password: str) -> None:
    """Set the password that opens this tenant's dashboard at /admin (with its appid)."""
    tenant = tenants.by_appid(appid)
    if tenant is None:
        raise click.ClickException(f"no tenant with appid {appid}")
    try:
        tenants.set_dashboard_password(tenant, password)
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"dashboard password set for {appid}; sessions made with the old one end")


@click.command("demo-session")
@with_appcontext
def demo_session() -> None:
    """A scripted mini-program session against the demo tenant (what `make demo` shows)."""
    run_session(current_app)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=None, type=int, help="processes (default: 2 x CPUs, max 8)")
@with_appcontext
def serve(host: str, port: int, workers: int | None) -> None:
    """Run the API with gunicorn (threaded workers)."""
    count = workers or min(8, 2 * (os.cpu_count() or 1))
    logging_setup.default_to_json()
    # Before gunicorn forks: every worker counts into this directory, /metrics sums them.
    telemetry.use_directory(telemetry.metrics_dir(current_app.instance_path), clear_dead=True)
    run(host, port, count)


COMMANDS = (init_db, seed_demo, set_dashboard_password, demo_session, serve)
