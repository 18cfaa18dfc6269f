"""The app a task runs in: its configuration (channels, clock, retries) and its database.

The worker command binds the app it built (`bind`) before its processes fork; a task enters
it with `in_app`, which opens the task's own database connection and gives it back after. A
web app that runs tasks at once (`memory://`, tests) enters its own app for the call
(`serving`), so two apps in one process (a test's, the end-to-end campus's) each run their
tasks on their own database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from backend.store import db as store_db

_bound = None
_serving: ContextVar = ContextVar("huiliu_task_app", default=None)


def bind(app) -> None:
    """The app this process's tasks run in (the worker's)."""
    global _bound
    _bound = app


def current():
    """The app a task runs in now: the one serving this call, else the bound one."""
    app = _serving.get() or _bound
    if app is None:
        raise RuntimeError("no app for tasks: the worker command binds one (runtime.bind)")
    return app


@contextmanager
def serving(app) -> Iterator[None]:
    """Tasks run at once inside this block run in `app` (a web request's)."""
    token = _serving.set(app)
    try:
        yield
    finally:
        _serving.reset(token)


@contextmanager
def in_app() -> Iterator:
    """Enter the task's app with a database connection of the task's own (a task run at once
    inside a request uses the request's, and leaves it open for the request)."""
    app = current()
    with app.app_context():
        opened = store_db.database.connect(reuse_if_open=True)
        try:
            yield app
        finally:
            if opened and not store_db.database.is_closed():
                store_db.database.close()
