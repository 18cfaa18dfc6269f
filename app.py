"""Huiliu entry point: `create_app()` for WSGI servers and `python app.py COMMAND`."""

from flask.cli import FlaskGroup

from backend.app import create_app

__all__ = ["create_app"]

cli = FlaskGroup(create_app=create_app, add_default_commands=False)

if __name__ == "__main__":
    cli()
