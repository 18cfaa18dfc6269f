"""The command line: `python app.py COMMAND` (docs/operations.md lists them).

Each command is a module-level `click` command (Flask's own pattern), grouped by purpose:
operations.py (schema, server, demo, dashboard password), jobs.py (the nightly jobs and the
report), simulation.py (the simulated campus and the dashboard's trial worker), worker.py (the task
queue's consumer).
"""

from __future__ import annotations

from flask import Flask

from backend.commands import jobs, operations, simulation, worker


def register(app: Flask) -> None:
    """Add every command to `app.cli`, so `python app.py`, `flask --app app` and the tests'
    `app.test_cli_runner()` find them by name."""
    for command in (
        *operations.COMMANDS,
        *jobs.COMMANDS,
        *simulation.COMMANDS,
        *worker.COMMANDS,
    ):
        app.cli.add_command(command)
