"""`worker`: the task queue's consumer and its scheduler (backend/tasks, docs/deploy.md).

Its processes run the tasks the web app and the scheduler queue: each tenant's night at its
own China time, deliveries, dashboard trials. Several workers (on one machine or many, with
`HUILIU_QUEUE_URL=redis://…`) share the queue; each may run the scheduler, whose ticks are
safe to run twice (the database decides what is due and who queued it).
"""

from __future__ import annotations

import logging

import click
from flask import current_app
from flask.cli import with_appcontext
from prometheus_client import start_http_server

from backend.services import telemetry
from backend.store import db as store_db
from backend.tasks import catalog, queue, runtime  # noqa: F401 - catalog registers tasks
from backend.tasks import telemetry as task_telemetry
from backend.web import logging_setup

log = logging.getLogger(__name__)


@click.command("worker")
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1, 64),
    help="processes (default: 2, or 1 on a SQLite database, whose single writer makes a "
    "second process slower: bench/nightly.py)",
)
@click.option(
    "--scheduler/--no-scheduler",
    default=True,
    show_default=True,
    help="also queue the periodic work (one scheduler is enough; more are safe)",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(1, 65535),
    help="serve this machine's /metrics here too (a worker machine with no `serve` beside it)",
)
@with_appcontext
def worker(workers: int | None, scheduler: bool, metrics_port: int | None) -> None:
    """Run the task queue's worker processes (and its scheduler) until stopped (Ctrl-C)."""
    if queue.is_immediate():
        raise click.ClickException(
            f"HUILIU_QUEUE_URL={queue.IMMEDIATE_URL} runs tasks in the caller; a worker needs "
            "a sqlite:/// or redis:// queue"
        )
    app = current_app._get_current_object()
    if workers is None:
        workers = 1 if app.config["DATABASE_URL"].startswith("sqlite") else 2
    logging_setup.default_to_json()
    # The task processes count into the directory `serve`'s /metrics sums (on this machine).
    telemetry.use_directory(telemetry.metrics_dir(app.instance_path))
    runtime.bind(app)
    # The worker processes are forked from this one: no database connection may cross.
    database = app.extensions["database"]
    if hasattr(database, "close_all"):
        database.close_all()
    elif not database.is_closed():
        database.close()
    if not store_db.database.is_closed():
        store_db.database.close()
    if metrics_port is not None:
        registry = telemetry.scrape_registry(task_telemetry.QueueCollector())
        start_http_server(metrics_port, registry=registry)
    # (Huey's consumer lists the tasks it knows itself when it starts.)
    log.info("worker: %d processes, scheduler %s", workers, scheduler)
    consumer = queue.huey.create_consumer(
        workers=workers,
        worker_type="process",
        periodic=scheduler,
        check_worker_health=True,
        health_check_interval=5,
    )
    consumer.run()


COMMANDS = (worker,)
