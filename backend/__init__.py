"""Huiliu: a re-engagement backend for WeChat mini-programs.

Rooms, lowest first (docs/architecture.md): `core` (decisions and measurements over numpy
columns), `store` (peewee models), `services` (the work, no Flask), `web` (the Flask app,
its routes and pages) and `commands` (the command line). Importing this package loads
nothing: `import backend.core.policy` must not pay for Flask or peewee.
"""
