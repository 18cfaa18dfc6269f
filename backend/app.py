"""The whole application: the web app (backend/web/app.py) with its commands
(backend/commands). This is the factory app.py, gunicorn and the tests build."""

from __future__ import annotations

from flask import Flask

from backend.commands import register
from backend.web.app import create_web_app


def create_app(overrides: dict | None = None) -> Flask:
    """The web app with every command on `app.cli`; `overrides` (tests, the simulator) win
    over the environment."""
    app = create_web_app(overrides)
    register(app)
    return app
