"""Command line: `python app.py COMMAND` (the same as `flask --app app COMMAND`)."""

from __future__ import annotations

import json
import os

import click
from flask import Flask, current_app

from backend.store import db as store_db
from backend.store.migrations import SchemaTooNew, migrate


def _now_ms() -> int:
    return current_app.config["CLOCK"].now_ms()


def register(app: Flask) -> None:
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
        from backend.seeding import load_demo_tenant

        migrate(store_db.database, _now_ms())
        appid, key = load_demo_tenant(_now_ms())
        if as_json:
            click.echo(json.dumps({"appid": appid, "api_key": key}))
        else:
            click.echo(f"appid:   {appid}\napi_key: {key}")

    @app.cli.command("demo-session")
    def demo_session():
        """A scripted mini-program session against the demo tenant (what `make demo` shows)."""
        from backend.demo import run_session

        run_session(current_app)

    @app.cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=int)
    @click.option("--workers", default=None, type=int, help="processes (default: 2 x CPUs, max 8)")
    def serve(host: str, port: int, workers: int | None):
        """Run the API with gunicorn (threaded workers)."""
        from backend.server import run

        count = workers or min(8, 2 * (os.cpu_count() or 1))
        run(host, port, count)
