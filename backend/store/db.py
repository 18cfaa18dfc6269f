"""Opening the database named by DATABASE_URL (SQLite file by default, PostgreSQL by URL),
and which database the models use right now.

Every model binds to one proxy, `database`. It resolves to the database of the app whose
context is active (`using`, entered by the web app for each of its app contexts), so two apps
in one process (the end-to-end campus beside the app that launched it, two test apps) each
read and write their own; outside any app context it falls back to the database bound last
(`bind`), which is all a one-database script needs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from pathlib import Path
from urllib.parse import urlparse

import peewee
from playhouse.db_url import parse as parse_url
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

_current: ContextVar[peewee.Database | None] = ContextVar("huiliu_database", default=None)


class AppDatabase(peewee.DatabaseProxy):
    """A proxy that resolves to the database in use in this context (`using`), else to the
    one bound last (`bind`). peewee reads `obj` for every call it passes through."""

    __slots__ = ("_bound",)

    @property
    def obj(self) -> peewee.Database | None:
        current = _current.get()
        return current if current is not None else self._bound

    @obj.setter
    def obj(self, value: peewee.Database | None) -> None:
        object.__setattr__(self, "_bound", value)

    def __setattr__(self, attr: str, value) -> None:
        if attr not in ("obj", "_bound", "_callbacks", "_Model"):
            raise AttributeError("Cannot set attribute on proxy.")
        object.__setattr__(self, attr, value)


# Every model binds to this proxy.
database = AppDatabase()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer
    "synchronous": "normal",  # durable at checkpoints; safe with WAL
    "foreign_keys": 1,
    "busy_timeout": 30000,  # wait for the write lock instead of failing under load
    "cache_size": -16000,
}


def open_database(url: str) -> peewee.Database:
    """Build (not connect) the database for a URL."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # IMMEDIATE: a write transaction takes the write lock at BEGIN, so two writers never
        # deadlock upgrading read locks; they queue on busy_timeout instead.
        # Pooled: pragmas run once per connection, not once per request.
        return PooledSqliteDatabase(
            path,
            pragmas=SQLITE_PRAGMAS,
            lock_type="IMMEDIATE",
            timeout=30,
            max_connections=32,
            stale_timeout=300,
            check_same_thread=False,
        )
    if scheme in ("postgres", "postgresql"):
        params = parse_url(url)
        name = params.pop("database")
        return PooledPostgresqlDatabase(
            name, max_connections=32, stale_timeout=300, timeout=30, **params
        )
    raise ValueError(f"unsupported DATABASE_URL scheme {scheme!r}: use sqlite:/// or postgresql://")


# SQLite has one writer at a time. Threads of one process queue on a lock of that database's
# own, in order, instead of in SQLite's busy handler, whose growing sleeps starve some writers
# (p99 latency).
_writer_locks_guard = threading.Lock()


def _writer_lock(db: peewee.Database) -> threading.Lock:
    """The database's own writer lock, made on first use (kept on the database object, so it
    lives and dies with it)."""
    with _writer_locks_guard:
        lock = getattr(db, "huiliu_writer_lock", None)
        if lock is None:
            lock = db.huiliu_writer_lock = threading.Lock()
        return lock


@contextmanager
def write_transaction() -> Iterator[None]:
    """A write transaction; on SQLite, this process's threads take turns for the write lock."""
    if is_sqlite():
        with _writer_lock(database.obj), database.atomic():
            yield
    else:
        with database.atomic():
            yield


def bind(db: peewee.Database) -> None:
    """Make `db` the fallback every model uses outside an app's context (scripts, benchmarks
    and tests with one database)."""
    database.initialize(db)


def using(db: peewee.Database) -> Token:
    """Make `db` the database of this context until `release(token)`: the web app enters it for
    each of its app contexts, so a request or command of one app never reaches another's."""
    return _current.set(db)


def release(token: Token) -> None:
    """End a `using`, restoring the database the context used before it."""
    _current.reset(token)


def is_sqlite() -> bool:
    """Whether the bound database is SQLite: its one writer and its SQL differ from
    PostgreSQL's, and a few statements must say so."""
    return isinstance(database.obj, peewee.SqliteDatabase)


def execute_many(sql: str, rows: list[tuple]) -> None:
    """One statement over many parameter rows, in the caller's transaction.

    peewee would build one query per row; the drivers' own batching is an order of
    magnitude faster for the nightly attribution of a large tenant. `sql` uses `?`
    placeholders (rewritten to `%s` for PostgreSQL).
    """
    if not rows:
        return
    if is_sqlite():
        database.connection().executemany(sql, rows)
        return
    from psycopg2.extras import execute_batch

    with database.connection().cursor() as cur:
        execute_batch(cur, sql.replace("?", "%s"), rows, page_size=1000)
