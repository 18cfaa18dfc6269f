"""The command line: `python app.py COMMAND` (docs/operations.md lists them)."""

from __future__ import annotations

from flask import Flask

from backend.commands import cli


def register(app: Flask) -> None:
    """Add every command to `app.cli`."""
    cli.register(app)
